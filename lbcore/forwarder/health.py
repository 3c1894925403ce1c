"""Active health checks in the forwarder: each Service's ``health_check`` run on one wheel.

An endpoint is out of new connections while either kind of health holds it out, as
Envoy keeps one flag per reason (``FAILED_ACTIVE_HC``, ``FAILED_OUTLIER_CHECK``) and
uses a host only when none is set:

- active: its checks failed ``fall`` times in a row (`lbcore.health`), until ``rise``
  pass.  The failures the connect path sees count as failed checks too (`passive_failure`,
  from `retry.failed`), as HAProxy's ``observe layer4`` counts them;
- passive: a connect just failed, and its cool-down (`retry.PassiveHealth`) runs.  The
  cool-down's end brings it back only if its checks agree (`EndpointStats.health`).

Established connections are never touched: marks only steer new picks.  Each
endpoint's `EndpointHealth` hangs on its `EndpointStats`, so `Forwarder.stats()` and
the Prometheus endpoint show it.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from ..health import EndpointHealth, HealthMonitor
from ..models import Endpoint
from .clock import Clock
from .service import ServiceRuntime

__all__ = ["ForwarderHealth", "health_metrics"]

log = logging.getLogger("lbcore.forwarder")


class ForwarderHealth:
    """The health checks of a forwarder's services, kept in step with its updates."""

    def __init__(self, clock: Clock | None = None) -> None:
        # A clock given to the forwarder times the checks too, so one advance moves both.
        timing = {} if clock is None else {"clock": clock.now, "timer": clock.call_later}
        self.monitor = HealthMonitor(on_change=self._changed, **timing)
        self._runtimes: dict[str, ServiceRuntime] = {}

    def update(self, runtimes: dict[str, ServiceRuntime]) -> None:
        """Check the services of ``runtimes`` (the forwarder's, just applied).

        Runs after the balancers were updated, so every mark lands: a balancer built
        anew for a changed service gets the marks of the endpoints still held out.
        O(services + endpoints).
        """
        closed = self.monitor.update(rt.service for rt in runtimes.values())
        for name, runtime in self._runtimes.items():
            if runtimes.get(name) is not runtime:
                runtime.checker = None  # removed, draining: its failures count for nothing now
        for name, checker in closed.items():
            runtime = runtimes.get(name)
            if runtime is not None:  # the service stays, unchecked: health lets go of it
                for endpoint in checker.unhealthy:
                    self._let_in(runtime, endpoint)
        for name, runtime in runtimes.items():
            checker = self.monitor.checkers.get(name)
            runtime.checker = checker
            for stats in runtime.stats.endpoints.values():
                stats.health = None if checker is None else checker.state(Endpoint(*stats.key))
            if checker is not None:
                for endpoint in checker.unhealthy:
                    runtime.balancer.mark_failed(endpoint)
        self._runtimes = runtimes

    def start(self) -> None:
        """Start checking, on the running event loop."""
        self.monitor.start()

    async def stop(self) -> None:
        """Stop every check; its sockets close."""
        await self.monitor.stop()

    def _changed(self, name: str, endpoint: Endpoint, state: EndpointHealth) -> None:
        runtime = self._runtimes.get(name)
        if runtime is None:
            return  # a service being added: `update` marks it next
        if state.healthy:
            log.info("%s: %s is healthy again (%d checks passed)", name, endpoint.address, state.passes)
            self._let_in(runtime, endpoint)
        else:
            log.warning("%s: %s is unhealthy: %s", name, endpoint.address, state.why)
            runtime.balancer.mark_failed(endpoint)

    @staticmethod
    def _let_in(runtime: ServiceRuntime, endpoint: Endpoint) -> None:
        # A cool-down running on it keeps it out until its own end.
        if (endpoint.ip, endpoint.port) not in runtime.health.cooling:
            runtime.balancer.mark_healthy(endpoint)


def health_metrics(stats: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """The Prometheus families of each checked endpoint's health, from `Forwarder.stats()`."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    labels = ["service", "endpoint"]
    healthy = GaugeMetricFamily(
        "lbcore_forwarder_endpoint_healthy", "1 while the endpoint's health checks pass (checked endpoints only)",
        labels=labels)
    passed = GaugeMetricFamily(
        "lbcore_forwarder_endpoint_last_check_passed", "1 if the last health check result passed", labels=labels)
    latency = GaugeMetricFamily(
        "lbcore_forwarder_endpoint_check_latency_seconds", "How long the last health check took", labels=labels)
    checks = CounterMetricFamily(
        "lbcore_forwarder_endpoint_health_checks", "Health check results, passive failures included",
        labels=labels + ["result"])
    transitions = CounterMetricFamily(
        "lbcore_forwarder_endpoint_health_transitions", "Times the endpoint went down or came back",
        labels=labels + ["to"])
    for name, service in stats.items():
        for address, endpoint in service["endpoints"].items():
            health = endpoint.get("health")
            if health is None:
                continue
            key = [name, address]
            healthy.add_metric(key, int(health["healthy"]))
            if health["last"] is not None:
                passed.add_metric(key, int(health["last"] == "passed"))
            if health["latency"] is not None:
                latency.add_metric(key, health["latency"])
            checks.add_metric(key + ["passed"], health["checks"] - health["checks_failed"])
            checks.add_metric(key + ["failed"], health["checks_failed"])
            transitions.add_metric(key + ["down"], health["went_down"])
            transitions.add_metric(key + ["up"], health["came_back"])
    yield from (healthy, passed, latency, checks, transitions)
