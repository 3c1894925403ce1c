"""An optional Prometheus endpoint, served on the forwarder's own event loop.

``prometheus-client`` (extra ``lbcore[prometheus]``) renders the exposition text from
`Forwarder.stats()` on each scrape; serving it from the event loop, not from the
client library's thread, means a scrape never reads the stats while they change.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from ..errors import ConfigError
from .health import health_metrics

__all__ = ["parse_listen", "serve_metrics"]

_MAX_REQUEST = 8192


def parse_listen(value: object) -> tuple[str, int]:
    """``"ip:port"`` (IPv6 as ``"[ip]:port"``) as (ip, port); ConfigError names metrics_listen."""
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
            if sep and port.isdigit() and 0 <= int(port) <= 65535:
                return host, int(port)
        except ValueError:
            pass
    raise ConfigError("metrics_listen", value, "must be 'ip:port', e.g. '127.0.0.1:9100'")


# (stats key, metric name, help) of the counters per endpoint, and per service
_ENDPOINT_COUNTERS = (
    ("total", "connections", "Connections (UDP: flows) placed"),
    ("failures", "connect_failures", "Failed or unanswered connects (UDP: ICMP refusals)"),
    ("bytes_in", "bytes_in", "Bytes from clients to endpoints"),
    ("bytes_out", "bytes_out", "Bytes from endpoints to clients"),
)
_SERVICE_COUNTERS = (
    ("refused", "Connections refused at max_connections"),
    ("unavailable", "Connections no endpoint could take"),
)


def _collector(forwarder: Any) -> Any:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class ForwarderCollector:
        def collect(self) -> Any:
            labels = ["service", "endpoint"]
            active = GaugeMetricFamily(
                "lbcore_forwarder_active", "Open connections (UDP: flows)", labels=labels
            )
            failed = GaugeMetricFamily(
                "lbcore_forwarder_endpoint_failed",
                "1 while passive health cools the endpoint down", labels=labels,
            )
            counters = {
                key: CounterMetricFamily(f"lbcore_forwarder_{name}", text, labels=labels)
                for key, name, text in _ENDPOINT_COUNTERS
            }
            per_service = {
                key: CounterMetricFamily(f"lbcore_forwarder_{key}", text, labels=["service"])
                for key, text in _SERVICE_COUNTERS
            }
            stats = forwarder.stats()
            for name, service in stats.items():
                for key, family in per_service.items():
                    family.add_metric([name], service[key])
                for address, endpoint in service["endpoints"].items():
                    active.add_metric([name, address], endpoint["active"])
                    failed.add_metric([name, address], int(endpoint["failed"]))
                    for key, family in counters.items():
                        family.add_metric([name, address], endpoint[key])
            yield active
            yield failed
            yield from counters.values()
            yield from per_service.values()
            yield from health_metrics(stats)

    return ForwarderCollector()


class _Scrape(asyncio.Protocol):
    """Answers one HTTP request with the exposition text, then closes."""

    def __init__(self, render: Any) -> None:
        self.render = render
        self.request = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.request += data
        if b"\r\n\r\n" not in self.request and len(self.request) < _MAX_REQUEST:
            return
        body = self.render()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        self.transport.close()


async def serve_metrics(forwarder: Any, listen: tuple[str, int]) -> asyncio.AbstractServer:
    """Serve the forwarder's stats in Prometheus text format at ``listen``.

    ConfigError if prometheus-client is missing or the address cannot be bound.
    """
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        raise ConfigError(
            "metrics_listen", f"{listen[0]}:{listen[1]}",
            "needs prometheus-client: pip install 'lbcore[prometheus]'",
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector(forwarder))
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(
            lambda: _Scrape(lambda: generate_latest(registry)), *listen
        )
    except OSError as exc:
        raise ConfigError(
            "metrics_listen", f"{listen[0]}:{listen[1]}", f"cannot be bound: {exc.strerror or exc}"
        ) from None
