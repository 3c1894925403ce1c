"""Active health checks of a set of endpoints, driving a balancer and a callback.

A `HealthChecker` holds one `EndpointHealth` per endpoint and checks each every
``interval`` (± ``jitter``) on a `CheckWheel`.  The endpoints of one update are spread
evenly over one interval from a random start, so their checks never come in one burst
(HAProxy delays each server's first check by its rank times ``inter / servers``), and
the jitter keeps a fleet of checkers from falling into step.  Each transition calls
``balancer.mark_failed`` / ``mark_healthy`` and ``on_change``.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any, Callable, Iterable

from ..models import Endpoint, HealthCheck, check_endpoints
from .probes import probe
from .state import EndpointHealth
from .wheel import CheckWheel

__all__ = ["HealthChecker"]

Key = tuple[str, int]


def _key(endpoint: Endpoint) -> Key:
    # An endpoint's identity across updates is its address, as for the balancers' marks.
    return (endpoint.ip, endpoint.port)


class HealthChecker:
    """Checks ``endpoints`` as ``check`` says; holds each one's `EndpointHealth`.

    On every transition (and for an endpoint that starts unhealthy) it calls
    ``balancer.mark_failed(endpoint)`` or ``mark_healthy(endpoint)``, if a balancer is
    given, then ``on_change(endpoint, state)``.  Update the balancer's endpoints before
    the checker's, so that a mark lands on an endpoint the balancer has.

    ``wheel`` is shared by checkers that should share one timer and one concurrency
    bound (a forwarder's services); without one the checker makes its own from
    ``concurrency`` and ``clock``.  ``rng`` draws the start offsets and the jitter.

    >>> import asyncio
    >>> from lbcore import Endpoint, HealthCheck, make_balancer
    >>> async def main():
    ...     dead = Endpoint("127.0.0.1", 9)           # the discard port: nothing listens
    ...     balancer = make_balancer("rr", [dead, Endpoint("127.0.0.2", 9)])
    ...     now = [0.0]
    ...     checker = HealthChecker(HealthCheck(interval=2, fall=2), [dead], balancer=balancer,
    ...                             clock=lambda: now[0])
    ...     for _ in range(2):                        # two intervals, two refused checks
    ...         now[0] += 2
    ...         await checker.run_due()
    ...     return checker.state(dead).healthy, checker.state(dead).why, balancer.pick().ip
    >>> asyncio.run(main())
    (False, 'Connection refused', '127.0.0.2')
    """

    def __init__(
        self,
        check: HealthCheck,
        endpoints: Iterable[Endpoint] = (),
        *,
        balancer: Any = None,
        on_change: Callable[[Endpoint, EndpointHealth], None] | None = None,
        wheel: CheckWheel | None = None,
        concurrency: int | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(check, HealthCheck):
            raise TypeError(f"check must be a HealthCheck, not {type(check).__name__}")
        if wheel is None:
            options: dict[str, Any] = {"clock": clock or time.monotonic}
            if concurrency is not None:
                options["concurrency"] = concurrency
            wheel = CheckWheel(**options)
        elif clock is not None or concurrency is not None:
            raise TypeError("clock and concurrency belong to the shared wheel; give them to it")
        self.check = check
        self.balancer = balancer
        self.on_change = on_change
        self.wheel = wheel
        self._rng = rng or random.Random()
        self._states: dict[Key, EndpointHealth] = {}
        self._down: set[Key] = set()  # the unhealthy ones, so that asking costs nothing
        self._closed = False
        self.update(endpoints)

    # -- the endpoint set ------------------------------------------------------------------

    def update(self, endpoints: Iterable[Endpoint], check: HealthCheck | None = None) -> None:
        """Check ``endpoints`` from now on (and ``check``, if given, instead of the old one).

        Endpoints that stay (same ip:port) keep their state, and their schedule unless
        the interval changed; new ones start as ``check.initial`` says, their first
        checks spread over one interval; removed ones are forgotten (a check of one in
        flight finishes unheard).  O(n + new · log n).
        """
        endpoints = check_endpoints(endpoints)
        old_check = self.check
        if check is not None:
            if not isinstance(check, HealthCheck):
                raise TypeError(f"check must be a HealthCheck, not {type(check).__name__}")
            self.check = check
        now = self.wheel.clock()
        states: dict[Key, EndpointHealth] = {}
        new: list[EndpointHealth] = []
        for endpoint in endpoints:
            state = self._states.get(_key(endpoint))
            if state is None:
                state = EndpointHealth(endpoint, healthy=self.check.initial == "healthy", now=now)
                new.append(state)
            state.endpoint = endpoint
            states[_key(endpoint)] = state
        for key, state in self._states.items():
            if key not in states:
                state.due = None  # its queued check is dropped when it falls due
        self._states = states
        self._down &= states.keys()
        if self._closed:
            return
        interval = self.check.interval
        # A new interval respreads everything; otherwise only the new endpoints are placed.
        spread = list(states.values()) if interval != old_check.interval else new
        if spread:
            offset = self._rng.uniform(0, interval)
            step = interval / len(spread)
            for rank, state in enumerate(spread):
                state.due = self.wheel.schedule(now + (offset + rank * step) % interval, self, _key(state.endpoint))
        for state in new:
            if not state.healthy and state.checks == 0:
                self._changed(state)

    def close(self) -> None:
        """Check nothing more; the states stay readable.  Checks in flight finish unheard."""
        self._closed = True
        for state in self._states.values():
            state.due = None

    # -- reading it --------------------------------------------------------------------

    def state(self, endpoint: Endpoint) -> EndpointHealth | None:
        """The health of ``endpoint`` (matched by ip:port), or None if it is not checked."""
        return self._states.get(_key(endpoint))

    @property
    def states(self) -> dict[str, EndpointHealth]:
        """Every endpoint's health by its address (``ip:port``), in endpoint order."""
        return {state.endpoint.address: state for state in self._states.values()}

    @property
    def unhealthy(self) -> tuple[Endpoint, ...]:
        """The endpoints health keeps out, in endpoint order.  O(1) while none is, else O(n)."""
        if not self._down:
            return ()
        return tuple(s.endpoint for key, s in self._states.items() if key in self._down)

    def is_healthy(self, endpoint: Endpoint) -> bool:
        """Whether ``endpoint`` may take new connections as far as health goes.

        An endpoint that is not checked counts as healthy: health never removes what it
        does not watch.
        """
        state = self._states.get(_key(endpoint))
        return state is None or state.healthy

    # -- results -------------------------------------------------------------------------

    def passive_failure(self, endpoint: Endpoint, why: str) -> None:
        """A real connection to ``endpoint`` failed: count it as a failed check.

        HAProxy ``observe layer4``: errors on live traffic count toward ``fall``, so a
        dead endpoint can go out before its checks notice.  Unknown endpoints, and any
        after `close`, are ignored.  O(1).
        """
        state = self._states.get(_key(endpoint))
        if state is None or self._closed:
            return
        state.passive += 1
        self._record(state, False, f"passive: {why}", None)

    async def run_due(self) -> int:
        """Run the checks due by the clock now (of every checker on this wheel) and wait
        for them; return how many ran.  See `CheckWheel.run_due`."""
        return await self.wheel.run_due()

    def start(self) -> None:
        """Run the checks as they fall due, on the running event loop, until `stop`."""
        self.wheel.start()

    async def stop(self) -> None:
        """Stop the checks; the states stay readable."""
        self.close()
        await self.wheel.stop()

    # -- for the wheel -----------------------------------------------------------------

    def _is_due(self, key: Key, token: object) -> bool:
        state = self._states.get(key)
        return state is not None and state.due is token

    async def _check(self, key: Key, due: float) -> None:
        state = self._states.get(key)
        if state is None:
            return  # removed between its start and its first step
        check = self.check
        started = time.perf_counter()
        why = await probe(check, state.endpoint)
        latency = time.perf_counter() - started
        if self._states.get(key) is not state or self._closed:
            return  # removed while it was being checked
        self._record(state, why is None, why, latency)
        if state.due is None:
            return
        # The next check keeps this one's place in the interval.  One that ran so late
        # (no free slot, a stalled loop) that its next is already due skips the intervals
        # it missed instead: run at once, late checks would all bunch at the same moment.
        due += check.interval * (1 + check.jitter * self._rng.uniform(-1, 1))
        now = self.wheel.clock()
        if due <= now:
            due += check.interval * (math.floor((now - due) / check.interval) + 1)
        state.due = self.wheel.schedule(due, self, key)

    def _record(self, state: EndpointHealth, passed: bool, why: str | None, latency: float | None) -> None:
        check = self.check
        if state.record(passed, why, now=self.wheel.clock(), rise=check.rise, fall=check.fall, latency=latency):
            self._changed(state)

    def _changed(self, state: EndpointHealth) -> None:
        key = _key(state.endpoint)
        if state.healthy:
            self._down.discard(key)
        else:
            self._down.add(key)
        if self.balancer is not None:
            if state.healthy:
                self.balancer.mark_healthy(state.endpoint)
            else:
                self.balancer.mark_failed(state.endpoint)
        if self.on_change is not None:
            self.on_change(state.endpoint, state)
