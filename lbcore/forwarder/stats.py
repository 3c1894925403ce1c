"""Counters per service and per endpoint, and their plain-data snapshot.

The hot path touches only the connection's own byte counters; a snapshot adds the
bytes of live connections to what finished connections left behind, so the figures
are exact at any moment without a shared counter update per read.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..models import Endpoint

__all__ = ["EndpointStats", "ServiceStats", "format_stats"]

_COUNTERS = ("total", "failures", "bytes_in", "bytes_out")


class EndpointStats:
    """One endpoint of one service.

    ``live`` holds the connections (or UDP flows) established to it; ``failures`` counts
    connect failures; ``failed`` says passive health has it in a cool-down; ``removed``
    says an update took it out of the service while connections still drain; ``health``
    is its `lbcore.health.EndpointHealth` when its service has a health check.
    """

    __slots__ = (
        "key", "address", "live", "total", "failures", "bytes_in", "bytes_out", "failed", "removed",
        "health",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.key = (endpoint.ip, endpoint.port)
        self.address = endpoint.address
        self.live: set[Any] = set()
        self.total = self.failures = self.bytes_in = self.bytes_out = 0
        self.failed = self.removed = False
        self.health: Any = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "active": len(self.live),
            "total": self.total,
            "failures": self.failures,
            "bytes_in": self.bytes_in + sum(c.bytes_in for c in self.live),
            "bytes_out": self.bytes_out + sum(c.bytes_out for c in self.live),
            "failed": self.failed,
            "removed": self.removed,
            "health": None if self.health is None else self.health.snapshot(),
        }


class ServiceStats:
    """One service: its live connections, counters, and one `EndpointStats` per endpoint.

    ``total`` counts client connections (UDP: flows) taken, ``refused`` those turned
    away at the limit, ``unavailable`` those no endpoint could take (none usable, or
    every try failed).  ``bytes_in`` flows from clients to endpoints, ``bytes_out``
    back.  Service totals include endpoints removed since.
    """

    __slots__ = (
        "name", "protocol", "listen", "live", "endpoints", "total", "refused", "unavailable",
        "failures", "bytes_in", "bytes_out", "removed",
    )

    def __init__(self, name: str, protocol: str) -> None:
        self.name = name
        self.protocol = protocol
        self.listen = ""
        self.live: set[Any] = set()
        self.endpoints: dict[tuple[str, int], EndpointStats] = {}
        self.total = self.refused = self.unavailable = self.failures = 0
        self.bytes_in = self.bytes_out = 0
        self.removed = False

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        """Track a new endpoint set; removed endpoints stay while connections drain."""
        current = {(e.ip, e.port): e for e in endpoints}
        for key, stats in list(self.endpoints.items()):
            stats.removed = key not in current
            if stats.removed and not stats.live:
                del self.endpoints[key]
        for key, endpoint in current.items():
            if key not in self.endpoints:
                self.endpoints[key] = EndpointStats(endpoint)

    def endpoint(self, endpoint: Endpoint) -> EndpointStats:
        """The stats of ``endpoint`` (created if an update raced with the pick)."""
        key = (endpoint.ip, endpoint.port)
        stats = self.endpoints.get(key)
        if stats is None:
            stats = self.endpoints[key] = EndpointStats(endpoint)
            stats.removed = True
        return stats

    def admitted(self, conn: Any) -> None:
        """A client connection (a UDP flow) was taken under the limit."""
        self.live.add(conn)
        self.total += 1

    def opened(self, conn: Any, endpoint_stats: EndpointStats) -> None:
        """``conn`` is established to an endpoint (a retried connection may be, twice)."""
        endpoint_stats.live.add(conn)
        endpoint_stats.total += 1

    def closed(self, conn: Any, endpoint_stats: EndpointStats | None) -> None:
        """``conn`` has ended; its bytes join the totals."""
        self.live.discard(conn)
        self.bytes_in += conn.bytes_in
        self.bytes_out += conn.bytes_out
        if endpoint_stats is not None:
            endpoint_stats.live.discard(conn)
            endpoint_stats.bytes_in += conn.bytes_in
            endpoint_stats.bytes_out += conn.bytes_out
            if endpoint_stats.removed and not endpoint_stats.live:
                if self.endpoints.get(endpoint_stats.key) is endpoint_stats:
                    del self.endpoints[endpoint_stats.key]

    def connect_failed(self, endpoint_stats: EndpointStats) -> None:
        endpoint_stats.failures += 1
        self.failures += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain data: numbers, booleans, strings, dicts; O(connections)."""
        return {
            "protocol": self.protocol,
            "listen": self.listen,
            "active": len(self.live),
            "total": self.total,
            "refused": self.refused,
            "unavailable": self.unavailable,
            "failures": self.failures,
            "bytes_in": self.bytes_in + sum(c.bytes_in for c in self.live),
            "bytes_out": self.bytes_out + sum(c.bytes_out for c in self.live),
            "removed": self.removed,
            "endpoints": {s.address: s.snapshot() for s in self.endpoints.values()},
        }


def _health_text(health: dict[str, Any] | None) -> str:
    """`` healthy (last check passed in 0.4ms)``: an endpoint's active health, if checked."""
    if health is None:
        return ""
    text = " healthy" if health["healthy"] else " unhealthy"
    if health["last"] is not None:
        took = "" if health["latency"] is None else f" in {health['latency'] * 1000:.1f}ms"
        why = f": {health['why']}" if health["why"] else ""
        text += f" (last check {health['last']}{took}{why})"
    return text


def format_stats(stats: dict[str, dict[str, Any]]) -> str:
    """`Forwarder.stats()` as text, one line per service and per endpoint.

    >>> print(format_stats({"web": {"protocol": "tcp", "listen": "127.0.0.1:80",
    ...     "active": 1, "total": 2, "refused": 0, "unavailable": 0, "failures": 1,
    ...     "bytes_in": 10, "bytes_out": 20, "removed": False, "endpoints": {"10.0.0.1:80": {
    ...     "active": 1, "total": 2, "failures": 1, "bytes_in": 10, "bytes_out": 20,
    ...     "failed": True, "removed": False, "health": {"healthy": False, "last": "failed",
    ...     "why": "status 500", "latency": 0.0012}}}}}))  # doctest: +NORMALIZE_WHITESPACE
    web tcp 127.0.0.1:80 active=1 total=2 refused=0 unavailable=0 failures=1
        bytes_in=10 bytes_out=20
      10.0.0.1:80 active=1 total=2 failures=1 bytes_in=10 bytes_out=20 failed
        unhealthy (last check failed in 1.2ms: status 500)
    """
    lines = []
    for name, s in stats.items():
        counters = " ".join(
            f"{k}={s[k]}" for k in ("active", "total", "refused", "unavailable") + _COUNTERS[1:]
        )
        removed = " removed" if s["removed"] else ""
        lines.append(f"{name} {s['protocol']} {s['listen']} {counters}{removed}")
        for address, e in s["endpoints"].items():
            counters = " ".join(f"{k}={e[k]}" for k in ("active",) + _COUNTERS)
            flags = "".join(f" {flag}" for flag in ("failed", "removed") if e[flag])
            lines.append(f"  {address} {counters}{flags}{_health_text(e.get('health'))}")
    return "\n".join(lines)
