"""``lbcore run``: the agent as a daemon, until SIGTERM or SIGINT.

- ``/healthz`` and ``/livez`` on ``healthz_bind_address`` (kube-proxy's 10256),
  ``/metrics`` on ``metrics_bind_address`` (kube-proxy's 10249); one server when both
  are the same address.
- SIGTERM/SIGINT stop watching and syncing and leave the kernel's rules in place, so
  connections keep flowing while the agent is away (a restarted agent reconciles them
  at its first full sync); with ``cleanup_on_exit`` everything lbcore owns is removed
  first.  The forward sink's listeners belong to the process: they drain and close.
- ``cleanup=True`` removes everything lbcore owns in the mode's data plane and returns,
  without reading a source (kube-proxy ``--cleanup``).

Bad options or sources return 2 with one line per problem on stderr; a kernel that
refuses an apply is not bad input: the agent keeps running, retries, and says so in
its log, its metrics and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from typing import Any, Callable, Sequence

from ..errors import ConfigError, LbcoreError
from ..forwarder import new_event_loop
from ..http_server import HttpServer, Reply, parse_listen, prometheus_route, serve
from .agent import DEFAULT_MIN_SYNC_PERIOD, DEFAULT_SYNC_PERIOD, Agent
from .sinks import Sink, make_sink

__all__ = ["run", "DEFAULT_HEALTHZ_BIND_ADDRESS", "DEFAULT_METRICS_BIND_ADDRESS"]

log = logging.getLogger("lbcore.agent")

DEFAULT_HEALTHZ_BIND_ADDRESS = "127.0.0.1:10256"
DEFAULT_METRICS_BIND_ADDRESS = "127.0.0.1:10249"
EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _period(name: str, value: object, minimum: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value < minimum:
        raise ConfigError(name, value, f"must be a number of seconds >= {minimum:g}")
    return float(value)


def run(
    sources: Sequence[str],
    mode: str,
    *,
    min_sync_period: float = DEFAULT_MIN_SYNC_PERIOD,
    sync_period: float = DEFAULT_SYNC_PERIOD,
    healthz_bind_address: str = DEFAULT_HEALTHZ_BIND_ADDRESS,
    metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS,
    cleanup: bool = False,
    cleanup_on_exit: bool = False,
    source_options: dict[str, Any] | None = None,
    sink_options: dict[str, Any] | None = None,
    open_source: Callable[..., Any] | None = None,
) -> int:
    """Run the agent; return the exit status (0 after a clean stop, 2 on bad input).

    ``source_options`` go to each ``open_source(spec, **options)`` (``kubeconfig``);
    ``sink_options`` to the mode's sink (``fallback`` for iptables, ipvs and nft,
    ``interface`` for ipvs, the forwarder's options for forward).  ``open_source`` defaults to
    `lbcore.sources.live.open_source`.
    """
    try:
        sink = make_sink(mode, **(sink_options or {}))
        if cleanup:
            return _run_loop(sink.cleanup())
        min_period = _period("min_sync_period", min_sync_period, 0)
        period = _period("sync_period", sync_period, max(min_period, 0.001))
        healthz = parse_listen(healthz_bind_address, "healthz_bind_address")
        metrics = parse_listen(metrics_bind_address, "metrics_bind_address")
        if not sources:
            raise ConfigError("source", [], "needs at least one source")
        if open_source is None:
            from ..sources.live import open_source
        live = [open_source(spec, **(source_options or {})) for spec in sources]
    except LbcoreError as exc:
        for line in str(exc).splitlines():
            log.error("%s", line)
        return EXIT_BAD_INPUT
    return _run_loop(_serve(live, sink, min_period, period, healthz, metrics, cleanup_on_exit))


def _run_loop(coroutine: Any) -> int:
    loop = new_event_loop()
    try:
        result = loop.run_until_complete(coroutine)
    except LbcoreError as exc:  # a cleanup the kernel refused, a port in use
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    finally:
        loop.close()
    return EXIT_OK if result is None else result


async def _serve(
    live: list[Any],
    sink: Sink,
    min_sync_period: float,
    sync_period: float,
    healthz: tuple[str, int],
    metrics: tuple[str, int],
    cleanup_on_exit: bool,
) -> int:
    loop = asyncio.get_running_loop()
    agent = Agent(live, sink, min_sync_period=min_sync_period, sync_period=sync_period)
    stop = asyncio.Event()
    # Handlers first: a signal that came before them would kill the process.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers: list[HttpServer] = []
    try:
        for routes, address, field in _endpoints(agent, healthz, metrics):
            servers.append(await serve(routes, address, field=field))
            log.info("serving %s on http://%s", ", ".join(routes), _shown(servers[-1].address))
        running = asyncio.create_task(agent.run())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        running.cancel()
        stopping.cancel()
        try:
            await running  # an agent that ended on its own raises what ended it here
        except asyncio.CancelledError:
            pass
        if cleanup_on_exit:
            await sink.cleanup()
            log.info("stopped; removed everything lbcore owned in %s mode", sink.mode)
        elif sink.mode == "forward":
            log.info("stopping; the forwarder drains its connections")  # they are this process's
        else:
            log.info("stopped; the %s rules stay in place", sink.mode)
        await sink.close()
    finally:
        for server in servers:
            await server.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return EXIT_OK


def _endpoints(agent: Agent, healthz: tuple[str, int], metrics: tuple[str, int]
               ) -> list[tuple[dict[str, Callable[[], Reply]], tuple[str, int], str]]:
    health_routes = {"/healthz": agent.healthz, "/livez": agent.livez}
    metrics_routes = {"/metrics": prometheus_route(agent.metrics.registry, "metrics_bind_address", metrics)}
    if healthz == metrics:
        return [({**health_routes, **metrics_routes}, healthz, "healthz_bind_address")]
    return [(health_routes, healthz, "healthz_bind_address"),
            (metrics_routes, metrics, "metrics_bind_address")]


def _shown(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
