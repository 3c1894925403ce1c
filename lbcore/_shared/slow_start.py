"""Slow start: which endpoints ramp up, and their weights meanwhile.  Both twins of
wrr, lc/wlc and p2c share it; the pick never calls in here while nothing ramps.

Envoy's rule (slow start mode, load_balancer_impl.cc; algorithms.md §3): an endpoint
that is new, or healthy again after a failure, takes for ``window`` seconds the weight

    w * max(time_factor ** (1 / aggression), min_weight_percent / 100)
    time_factor = max(0.001, t) / window

at ``t`` seconds into its ramp, and its full weight from ``t >= window`` on.  Aggression
1 ramps linearly, 2 faster at first (a square root); the floor (Envoy's default 10 %)
keeps a ramping endpoint in the schedule from the first moment.

Endpoints given at construction do not ramp.  Envoy ramps every host of a new cluster
alike, which changes no share ("when all the endpoints are relatively new ... all end up
getting same amount of requests", Envoy's slow start docs), so skipping the ramp gives
the same shares without reading the clock.  An endpoint that stays across ``update()``
keeps its ramp; one that leaves forgets it.

Weights here are integers: every weight is multiplied by `RAMP_SCALE` (less for weights
so large that the product would pass ``MAX_WEIGHT``) and a ramping one by its factor,
rounded, at least 1.  So wrr keeps its exact integer cycle, lc/wlc their exact
cross-multiplied order, and both twins compute the same numbers.  The weights are
recomputed when the picker is rebuilt: by ``update()`` and the marks, and on a pick
once ``window / REFRESH_STEPS`` seconds (1 % of the window) have passed since the last
time; between two refreshes the weights stand still.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable

from ..errors import ConfigError
from ..models import MAX_WEIGHT, Endpoint, check_slow_start
from .affinity_options import check_clock
from .endpoint_state import endpoint_key

__all__ = [
    "SlowStart",
    "make_slow_start",
    "ramp_factor",
    "RAMP_SCALE",
    "REFRESH_STEPS",
    "DEFAULT_AGGRESSION",
    "DEFAULT_MIN_WEIGHT",
]

#: What every weight is multiplied by while something ramps: 1/1024 steps of the factor.
RAMP_SCALE = 1024
#: Refreshes per window while something ramps: every 1 % of the window at most.
REFRESH_STEPS = 100
#: Envoy's defaults: ``aggression`` 1.0, ``min_weight_percent`` 10.
DEFAULT_AGGRESSION = 1.0
DEFAULT_MIN_WEIGHT = 10


def ramp_factor(t: float, window: float, aggression: float, min_weight: float) -> float:
    """The share of its weight an endpoint takes ``t`` seconds into its ramp (Envoy's rule).

    >>> ramp_factor(5, 10, 1.0, 10), ramp_factor(0.5, 10, 1.0, 10), ramp_factor(2.5, 10, 2.0, 10)
    (0.5, 0.1, 0.5)
    """
    if t >= window:
        return 1.0
    return max((max(0.001, t) / window) ** (1.0 / aggression), min_weight / 100)


def _check_aggression(value: object) -> float:
    if type(value) not in (int, float) or not 0 < value < math.inf:
        raise ConfigError(
            "slow_start_aggression", value,
            "must be a number above 0 (1.0: linear, Envoy's default; 2: faster at first)",
        )
    return float(value)


def _check_min_weight(value: object) -> float | int:
    if type(value) not in (int, float) or not 0 <= value <= 100:
        raise ConfigError(
            "slow_start_min_weight", value,
            "must be a number from 0 to 100 (percent of the weight; Envoy's default: 10)",
        )
    return value


class SlowStart:
    """The ramps of one balancer: when each ramping endpoint started, by address.

    ``refresh_at`` is when a pick should rebuild the picker with new weights (infinite
    while nothing ramps).
    """

    __slots__ = ("window", "aggression", "min_weight", "clock", "known", "started", "refresh_at")

    def __init__(self, window: float, aggression: float, min_weight: float, clock: Callable[[], float]) -> None:
        self.window = window
        self.aggression = aggression
        self.min_weight = min_weight
        self.clock = clock
        self.known: set | None = None  # None until the construction's endpoints are seen
        self.started: dict[tuple[str, int], float] = {}
        self.refresh_at = math.inf

    def track(self, endpoints: Iterable[Endpoint]) -> None:
        """A new endpoint set: the endpoints new to it start their ramp now (not those
        of the first set, the construction's); those that left forget theirs."""
        keys = {endpoint_key(e) for e in endpoints}
        if self.known is not None:
            new = keys - self.known
            if new:
                now = self.clock()
                for key in new:
                    self.started[key] = now
        for key in [key for key in self.started if key not in keys]:
            del self.started[key]
        self.known = keys

    def restart(self, key: tuple[str, int]) -> None:
        """The endpoint at ``key`` is healthy again after a failure: it ramps from now."""
        self.started[key] = self.clock()

    def weights(self, endpoints: tuple[Endpoint, ...], pickable: list[int], weights: list[int]) -> list[int] | None:
        """The ramped weights of ``pickable`` (whose own weights are ``weights``), or
        None when nothing ramps any more; O(n).  Sets `refresh_at`."""
        if not self.started:  # the common case: no clock read
            self.refresh_at = math.inf
            return None
        now = self.clock()
        for key in [key for key, start in self.started.items() if now - start >= self.window]:
            del self.started[key]
        if not self.started:
            self.refresh_at = math.inf
            return None
        self.refresh_at = now + self.window / REFRESH_STEPS
        if not weights:
            return []
        scale = max(1, min(RAMP_SCALE, MAX_WEIGHT // max(weights)))
        ramped = []
        for i, weight in zip(pickable, weights):
            start = self.started.get(endpoint_key(endpoints[i]))
            if start is None:
                ramped.append(weight * scale)
            else:
                factor = ramp_factor(now - start, self.window, self.aggression, self.min_weight)
                ramped.append(max(1, round(weight * scale * factor)))
        return ramped

    def ramping(self) -> dict[tuple[str, int], float]:
        """The ramp factor of each ramping endpoint now, by address (for tests and stats)."""
        if not self.started:
            return {}
        now = self.clock()
        return {
            key: ramp_factor(now - start, self.window, self.aggression, self.min_weight)
            for key, start in self.started.items()
            if now - start < self.window
        }


def make_slow_start(
    slow_start: object, aggression: object, min_weight: object, clock: Any
) -> SlowStart | None:
    """Check the slow start options; the ramps to keep, or None when slow start is off."""
    window = check_slow_start(slow_start)
    aggression = _check_aggression(aggression)
    min_weight = _check_min_weight(min_weight)
    clock = check_clock(clock)
    if not window:
        return None
    return SlowStart(window, aggression, min_weight, clock if clock is not None else time.monotonic)
