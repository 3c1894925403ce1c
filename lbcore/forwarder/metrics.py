"""An optional Prometheus endpoint, served on the forwarder's own event loop.

``prometheus-client`` (extra ``lbcore[prometheus]``) renders the exposition text from
`Forwarder.stats()` on each scrape; `lbcore.http_server` serves it from the event loop,
not from the client library's thread, so a scrape never reads the stats while they
change.
"""

from __future__ import annotations

from typing import Any

from .. import http_server
from ..http_server import HttpServer, prometheus_route, serve
from .health import health_metrics

__all__ = ["parse_listen", "serve_metrics"]


def parse_listen(value: object) -> tuple[str, int]:
    """``"ip:port"`` (IPv6 as ``"[ip]:port"``) as (ip, port); ConfigError names metrics_listen."""
    return http_server.parse_listen(value, "metrics_listen")


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
            panic = GaugeMetricFamily(
                "lbcore_forwarder_panic",
                "1 while the service's balancer ignores failure marks (below its panic threshold)",
                labels=["service"],
            )
            per_service["panic_picks"] = CounterMetricFamily(
                "lbcore_forwarder_panic_picks", "Picks made in panic", labels=["service"])
            stats = forwarder.stats()
            for name, service in stats.items():
                panic.add_metric([name], int(service["panic"]))
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
            yield panic
            yield from health_metrics(stats)

    return ForwarderCollector()


async def serve_metrics(forwarder: Any, listen: tuple[str, int]) -> HttpServer:
    """Serve the forwarder's stats in Prometheus text format at ``listen``/metrics.

    ConfigError if prometheus-client is missing or the address cannot be bound.
    """
    route = prometheus_route(_registry(forwarder), "metrics_listen", listen)
    return await serve({"/metrics": route}, listen, field="metrics_listen")


def _registry(forwarder: Any) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector(forwarder))
    return registry
