"""A few small plain-text HTTP endpoints (health, Prometheus metrics) on the running
event loop, served by aiohttp.web: the forwarder's ``--metrics-listen`` and the node
agent's ``/healthz``, ``/livez`` and ``/metrics`` all come from here.

Serving from the event loop, not from a thread, means an answer never reads state while
the loop changes it.  Each route is a plain function called once per request; it
returns a `Reply`.

Slow and idle clients.  A connection gets ``idle_timeout`` seconds to send a complete
request, counted from its start and again from each answer; past that it is closed.
aiohttp's keep-alive timer does this: it is armed when the connection is made and is
not moved by the bytes that arrive, so a client that trickles its header one line at a
time is closed too (tests/test_agent_http_server.py proves both).  Answers are a few
kilobytes: they fit in the socket's send buffer, so a client that does not read its
answer holds nothing but its own connection until the timeout.

Only the bottom layers are imported here (errors), so the forwarder and the agent can
both use it; aiohttp and prometheus-client are imported when a server starts, so that
importing this module costs nothing.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Mapping, NamedTuple

from .errors import ConfigError

__all__ = ["Reply", "HttpServer", "parse_listen", "serve", "prometheus_route", "IDLE_TIMEOUT"]

#: Seconds a connection may take to send a complete request (module docstring).
IDLE_TIMEOUT = 10.0


class Reply(NamedTuple):
    """One answer: HTTP status, body text and its content type."""

    status: int
    text: str
    content_type: str = "text/plain; charset=utf-8"


def parse_listen(value: object, field: str) -> tuple[str, int]:
    """``"ip:port"`` (IPv6 as ``"[ip]:port"``, port 0 = any free one) as (ip, port).

    A bad value raises `ConfigError` naming ``field``.

    >>> parse_listen("127.0.0.1:10256", "healthz_bind_address")
    ('127.0.0.1', 10256)
    >>> parse_listen("[::1]:0", "metrics_bind_address")
    ('::1', 0)
    >>> parse_listen("10256", "healthz_bind_address")
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: healthz_bind_address: '10256' must be 'ip:port', e.g. '127.0.0.1:9100'
    """
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
            if sep and port.isdigit() and 0 <= int(port) <= 65535:
                return host, int(port)
        except ValueError:
            pass
    raise ConfigError(field, value, "must be 'ip:port', e.g. '127.0.0.1:9100'")


def _shown(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class HttpServer:
    """A running server: ``address`` is where it listens (port 0 resolved)."""

    def __init__(self, runner: Any, address: tuple[str, int]) -> None:
        self._runner = runner
        self.address = address

    async def close(self) -> None:
        """Stop listening and close every connection."""
        await self._runner.cleanup()


async def serve(
    routes: Mapping[str, Callable[[], Reply]],
    listen: tuple[str, int],
    *,
    field: str,
    idle_timeout: float = IDLE_TIMEOUT,
) -> HttpServer:
    """Serve each ``path -> route`` for GET (and HEAD) at ``listen``; 404 elsewhere.

    ``field`` names the option the address came from in errors: `ConfigError` if
    aiohttp is missing or the address cannot be bound.
    """
    shown = _shown(listen)
    try:
        from aiohttp import web
    except ImportError:
        raise ConfigError(field, shown, "needs aiohttp: pip install 'lbcore[agent]' (or 'lbcore[prometheus]')") from None

    def handler(route: Callable[[], Reply]) -> Callable[[Any], Any]:
        async def handle(request: Any) -> Any:
            reply = route()
            return web.Response(
                status=reply.status, body=reply.text.encode(),
                headers={"Content-Type": reply.content_type},
            )

        return handle

    app = web.Application()
    for path, route in routes.items():
        app.router.add_get(path, handler(route))
    runner = web.AppRunner(
        app, keepalive_timeout=idle_timeout, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen[0], listen[1])
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(field, shown, f"cannot be bound: {exc.strerror or exc}") from None
    host, port = runner.addresses[0][:2]
    return HttpServer(runner, (host, port))


def prometheus_route(registry: Any, field: str, listen: tuple[str, int]) -> Callable[[], Reply]:
    """A route answering with ``registry``'s metrics in Prometheus text format.

    `ConfigError` naming ``field`` if prometheus-client is missing.
    """
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    except ImportError:
        raise ConfigError(
            field, _shown(listen), "needs prometheus-client: pip install 'lbcore[prometheus]'"
        ) from None

    def metrics() -> Reply:
        return Reply(200, generate_latest(registry).decode(), CONTENT_TYPE_LATEST)

    return metrics
