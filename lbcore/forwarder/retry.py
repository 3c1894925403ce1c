"""What on failure: retry the next pick, and take a failed endpoint out for a cool-down.

kube-proxy's userspace proxier retried a connection on another endpoint with growing
timeouts (250 ms to 2 s, 4 tries) and bypassed affinity after a failure (reference
kube-proxy.md §3.2).  Here a failed endpoint is marked failed on the balancer, which also
drops its sticky sessions, so the retry's pick goes elsewhere; it is marked healthy again
after the cool-down.  A connection never retries an endpoint that failed it, even one
back from a cool-down shorter than the connection's tries (the relay's ``_connect``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import NoEndpointsError
from ..models import Endpoint
from .clock import Clock
from .stats import EndpointStats

__all__ = ["PassiveHealth", "failed"]

log = logging.getLogger("lbcore.forwarder")


class PassiveHealth:
    """The endpoints of one service that failed recently, each with its cool-down timer."""

    __slots__ = ("clock", "cooldown", "cooling")

    def __init__(self, clock: Clock, cooldown: float) -> None:
        self.clock = clock
        self.cooldown = cooldown
        # endpoint address -> (its cool-down timer, balancer, endpoint, stats)
        self.cooling: dict[tuple[str, int], tuple[Any, Any, Endpoint, EndpointStats]] = {}

    def failed(self, balancer: Any, endpoint: Endpoint, stats: EndpointStats) -> None:
        """Skip ``endpoint`` for new connections for a cool-down."""
        balancer.mark_failed(endpoint)
        stats.failed = True
        key = (endpoint.ip, endpoint.port)
        previous = self.cooling.pop(key, None)
        if previous is not None:
            previous[0].cancel()
        timer = self.clock.call_later(self.cooldown, self._recover, key)
        self.cooling[key] = (timer, balancer, endpoint, stats)

    def _recover(self, key: tuple[str, int]) -> None:
        _, balancer, endpoint, stats = self.cooling.pop(key)
        stats.failed = False
        if stats.health is None or stats.health.healthy:  # else its checks keep it out
            balancer.mark_healthy(endpoint)

    def pick(self, balancer: Any, key: Any, first_try: bool) -> Endpoint:
        """``balancer.pick(key)``; on a first try that finds every endpoint cooling, forgive them.

        Envoy's panic threshold, at its limit: when passive health has taken out every
        endpoint, routing to them anyway beats refusing all traffic for a whole cool-down
        (a rolling restart can fail each endpoint once).  Retries do not forgive, so one
        connection never loops over endpoints it just saw fail.
        """
        try:
            return balancer.pick(key)
        except NoEndpointsError:
            if not (first_try and self.cooling):
                raise
            self.forgive()
            return balancer.pick(key)

    def forgive(self) -> None:
        """Mark every cooling endpoint healthy now (also used when the balancer is replaced)."""
        for key in list(self.cooling):
            self.cooling[key][0].cancel()
            self._recover(key)


def failed(
    runtime: Any, balancer: Any, endpoint: Endpoint, stats: EndpointStats, why: object
) -> None:
    """An endpoint did not take or did not answer a connection: count it, cool it down."""
    runtime.stats.connect_failed(stats)
    runtime.health.failed(balancer, endpoint, stats)
    if runtime.checker is not None:  # counts toward its checks' fall (forwarder/health.py)
        runtime.checker.passive_failure(endpoint, str(why))
    log.warning("%s: %s failed (%s); cooling it down", runtime.name, endpoint.address, why)
