"""Health checks of a whole set of Services, on one wheel.

One `HealthChecker` per Service that has a ``health_check``, kept across updates by the
Service's name (its endpoints' states survive), all sharing one timer and one bound on
checks in flight.  The forwarder runs one; a node agent runs one and re-renders from
`inhibit_unhealthy` when ``on_change`` says health moved.
"""

from __future__ import annotations

import functools
import random
import time
from typing import Any, Callable, Iterable

from ..models import Endpoint, Service
from .checker import HealthChecker
from .state import EndpointHealth
from .wheel import DEFAULT_CONCURRENCY, CheckWheel

__all__ = ["HealthMonitor"]


class HealthMonitor:
    """The checks of every Service given to `update` that has a ``health_check``.

    ``on_change(service_name, endpoint, state)`` hears every transition (and each
    endpoint that starts unhealthy).  ``concurrency`` bounds the checks in flight across
    all Services; ``clock`` and ``timer`` are the wheel's (`CheckWheel`), ``rng`` the
    checkers'.

    >>> from lbcore import Endpoint, HealthCheck, Service
    >>> monitor = HealthMonitor()
    >>> closed = monitor.update([Service("web", "10.96.0.10", 80, health_check=HealthCheck(),
    ...                                  endpoints=[Endpoint("10.1.0.5", 8080)]),
    ...                          Service("dns", "10.96.0.53", 53, protocol="udp")])
    >>> list(monitor.checkers)
    ['web']
    """

    def __init__(
        self,
        *,
        on_change: Callable[[str, Endpoint, EndpointHealth], None] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[float, Callable[[], None]], Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.wheel = CheckWheel(concurrency=concurrency, clock=clock, timer=timer)
        self.on_change = on_change
        self._rng = rng or random.Random()
        #: service name -> its checker, for the Services that have a health check
        self.checkers: dict[str, HealthChecker] = {}

    def update(self, services: Iterable[Service]) -> dict[str, HealthChecker]:
        """Check ``services`` from now on; return the checkers this update closed, by name.

        A Service that keeps its name keeps its checker (and its endpoints' states),
        even when its check changes; one that leaves or drops its ``health_check`` has
        its checker closed.  O(services + endpoints).
        """
        checkers: dict[str, HealthChecker] = {}
        for service in services:
            check = service.health_check
            if check is None:
                continue
            checker = self.checkers.get(service.name)
            if checker is None:
                checker = HealthChecker(
                    check, service.endpoints, wheel=self.wheel, rng=self._rng,
                    on_change=functools.partial(self._changed, service.name),
                )
            else:
                checker.update(service.endpoints, check)
            checkers[service.name] = checker
        closed = {name: c for name, c in self.checkers.items() if checkers.get(name) is not c}
        for checker in closed.values():
            checker.close()
        self.checkers = checkers
        return closed

    def _changed(self, name: str, endpoint: Endpoint, state: EndpointHealth) -> None:
        if self.on_change is not None:
            self.on_change(name, endpoint, state)

    def start(self) -> None:
        """Run the checks as they fall due, on the running event loop."""
        self.wheel.start()

    async def stop(self) -> None:
        """Stop every check; the states stay readable."""
        for checker in self.checkers.values():
            checker.close()
        await self.wheel.stop()

    async def run_due(self) -> int:
        """Run the checks due by the clock now and wait for them (see `CheckWheel.run_due`)."""
        return await self.wheel.run_due()
