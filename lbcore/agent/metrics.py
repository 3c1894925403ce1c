"""The agent's Prometheus metrics: kube-proxy's names (``pkg/proxy/metrics``) under an
``lbcore_`` prefix where the meaning matches.

=====================================================  ===========================================
lbcore                                                 kube-proxy
=====================================================  ===========================================
``sync_proxy_rules_duration_seconds``                  the same: every sync
``sync_full_proxy_rules_duration_seconds``             the same: full syncs
``sync_partial_proxy_rules_duration_seconds``          the same: partial syncs
``network_programming_duration_seconds``               the same: from the change seen by the
                                                       source to the rules in the kernel
``sync_proxy_rules_last_queued_timestamp_seconds``     the same (wall clock)
``sync_proxy_rules_last_timestamp_seconds``            the same: last successful sync
``sync_proxy_rules_{service,endpoint}_changes_pending`` the same: changes not yet synced
``sync_proxy_rules_{service,endpoint}_changes_total``  the same
``sync_proxy_rules_failures_total{sync}``              one counter for every mode, where kube-proxy
                                                       has ``…iptables_restore_failures_total``,
                                                       ``…iptables_partial_restore_failures_total``
                                                       and ``…nftables_sync_failures_total``
``proxy_healthz_total{code}``, ``proxy_livez_total``   the same
``services``, ``service_problems``, ``source_connected{source}``   lbcore's own
=====================================================  ===========================================

An endpoint change is a Service whose endpoints alone changed (see `lbcore.agent.tracker`).
The sync histograms keep kube-proxy's buckets (1 ms doubling to 16 s);
``network_programming_duration_seconds`` has finer ones below a second than kube-proxy's
(which start at 250 ms), so the 100 ms and 300 ms marks of issue 17 can be read off it.

Each agent has its own registry, so several agents (the tests' fleet) can live in one
process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AgentMetrics", "SYNC_BUCKETS", "PROGRAMMING_BUCKETS"]

SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))
PROGRAMMING_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
    1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)

_P = "lbcore_"


class AgentMetrics:
    """The metric objects of one agent, in ``registry``."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)

        def histogram(name: str, text: str, buckets: tuple = SYNC_BUCKETS, **kw: object) -> Histogram:
            return Histogram(_P + name, text, buckets=buckets, registry=registry, **kw)

        self.sync_duration = histogram("sync_proxy_rules_duration_seconds", "Sync duration, every sync")
        self.full_sync_duration = histogram(
            "sync_full_proxy_rules_duration_seconds", "Sync duration, full syncs")
        self.partial_sync_duration = histogram(
            "sync_partial_proxy_rules_duration_seconds", "Sync duration, partial syncs")
        self.network_programming = histogram(
            "network_programming_duration_seconds",
            "From a change seen by its source to the rules in the kernel, per Service",
            PROGRAMMING_BUCKETS)
        self.last_queued = Gauge(
            _P + "sync_proxy_rules_last_queued_timestamp_seconds",
            "When a change was last queued for a sync (Unix time)", registry=registry)
        self.last_synced = Gauge(
            _P + "sync_proxy_rules_last_timestamp_seconds",
            "When the last successful sync ended (Unix time)", registry=registry)
        self.pending = {
            kind: Gauge(_P + f"sync_proxy_rules_{kind}_changes_pending",
                        f"{kind.capitalize()} changes not yet synced", registry=registry)
            for kind in ("service", "endpoint")
        }
        self.total = {
            kind: Counter(_P + f"sync_proxy_rules_{kind}_changes",
                          f"{kind.capitalize()} changes seen", registry=registry)
            for kind in ("service", "endpoint")
        }
        self.failures = Counter(
            _P + "sync_proxy_rules_failures", "Syncs that failed to apply", ["sync"], registry=registry)
        self.healthz = Counter(_P + "proxy_healthz", "/healthz answers", ["code"], registry=registry)
        self.livez = Counter(_P + "proxy_livez", "/livez answers", ["code"], registry=registry)
        self.services = Gauge(_P + "services", "Services in the current set", registry=registry)
        self.problems = Gauge(
            _P + "service_problems", "Problem lines: bad entries left out of the set", registry=registry)
        self.connected = Gauge(
            _P + "source_connected", "1 while the source is in contact", ["source"], registry=registry)
