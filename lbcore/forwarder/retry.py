"""What on failure: retry the next pick, and take a failed endpoint out for a cool-down.

kube-proxy's userspace proxier retried a connection on another endpoint with growing
timeouts (250 ms to 2 s, 4 tries) and bypassed affinity after a failure (reference
kube-proxy.md §3.2).  Here a failed endpoint is marked failed on the balancer, which also
drops its sticky sessions, so the retry's pick goes elsewhere; it is marked healthy again
after the cool-down.  A connection never retries an endpoint that failed it, even one
back from a cool-down shorter than the connection's tries (`place`).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from ..errors import NoEndpointsError
from ..models import Endpoint
from .clock import Clock
from .stats import EndpointStats
from .stream import Stream, dial

__all__ = ["PassiveHealth", "failed", "place"]

log = logging.getLogger("lbcore.forwarder")

#: socket() errors that say this process is short of something: no endpoint is to blame.
_NO_SOCKET = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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


def place(
    runtime: Any, key: Any, protocol: Any, first_try: int, tried: list[Endpoint],
) -> tuple[Any, Endpoint, EndpointStats, Stream, int]:
    """Pick and start connecting, on the next pick while a connect fails at once.

    ``first_try`` counts tries the connection already used; ``tried`` holds the
    endpoints that failed it (added to here).  ``protocol`` hears the connect that gets
    under way (a connect that fails at once never calls it, so one serves every try).
    Returns (balancer, endpoint, endpoint stats, transport, try number): the connect is
    under way, its deadline set; the caller owns one `release` of the endpoint on that
    balancer.  Raises NoEndpointsError when no endpoint is usable, every try is used, or
    the process has no socket to connect with (that marks no endpoint failed).  Every
    pick that does not end in a returned connection is released here.
    """
    options = runtime.options
    health = runtime.health
    for attempt in range(first_try, options.tries):
        balancer = runtime.balancer
        endpoint = health.pick(balancer, key, attempt == 0)
        while endpoint in tried:
            # Back from a cool-down shorter than this connection's tries: it failed this
            # connection moments ago, so cool it down again and pick past it.  Each turn
            # takes one tried endpoint out, so the loop ends (NoEndpointsError at worst).
            balancer.release(endpoint)
            health.failed(balancer, endpoint, runtime.stats.endpoint(endpoint))
            endpoint = health.pick(balancer, key, False)
        endpoint_stats = runtime.stats.endpoint(endpoint)
        try:
            transport = dial(runtime.loop, runtime.poller, endpoint, protocol)
        except OSError as exc:
            balancer.release(endpoint)
            if exc.errno in _NO_SOCKET:  # our shortage, not the endpoint's fault
                raise NoEndpointsError(f"{runtime.name}: no socket to connect with: {exc}")
            failed(runtime, balancer, endpoint, endpoint_stats, exc)  # unreachable, say
            tried.append(endpoint)
            continue
        except BaseException:
            balancer.release(endpoint)
            raise
        transport.deadline = runtime.deadlines.add(transport, options.try_timeout(attempt))
        return balancer, endpoint, endpoint_stats, transport, attempt
    raise NoEndpointsError(f"{runtime.name}: {options.tries} tries failed")
