"""Least request by the power of two choices (``p2c``), pure-Python twin (compiled:
lbcore/_fast/least_request.pyx).

Envoy's ``least_request`` (source/extensions/load_balancing_policies/least_request/
least_request_lb.cc), the rule Mitzenmacher's thesis proved: two random choices, the
less loaded wins, take the maximum load from ln n / ln ln n down to ln ln n / ln 2.

- Equal weights: draw ``choice_count`` (default 2) *distinct* pickable endpoints
  uniformly at random and take the one with the fewest active connections; on a tie the
  one drawn first, which is itself a uniform choice among the tied.  (Envoy draws with
  replacement, so two of its choices can be the same endpoint.)  When ``choice_count``
  reaches the number of pickable endpoints, every one is compared (Envoy's
  ``FULL_SCAN``), ties broken at random by reservoir sampling as Envoy does.
- Unequal weights: Envoy's earliest-deadline-first schedule (``EdfScheduler``): each
  pickable endpoint has a deadline; a pick takes the earliest (ties: the earliest
  added) and sets its next deadline ``(active + 1) ** active_request_bias / weight``
  later, for its active count before this pick (Envoy computes it before the request
  is counted): Envoy's ``1 / weight'`` with ``weight' = weight / (active + 1) ** bias``,
  computed as a product with ``1 / weight`` (taken once per update), which spares a
  division per pick.  ``active_request_bias``
  is 1.0 by default; 0 turns the schedule into plain weighted round robin.  As in Envoy,
  an endpoint's weight' is only recomputed when it is picked (or the schedule rebuilt),
  and the schedule is rebuilt, from every endpoint's current count, by ``update()`` and
  the health marks.  A rebuilt schedule first makes a random number of picks (below
  the number of endpoints) that count nothing, so the processes of a fleet do not all
  start on the heaviest endpoint (Envoy's ``createWithPicks``, a shorter random start).

Random draws come from a small generator of lbcore's own, SplitMix64 (Steele, Lea,
Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014), and a draw below
n is ``(r * n) >> 64`` (Lemire's reduction: a bias below n / 2**64).  The compiled twin
runs the same generator in C, so given the same seed both twins pick the same sequence;
``rng`` seeds it (a ``random.Random`` gives 64 bits of it, an int is the seed itself;
default: a fresh ``random.Random()``), and the state survives ``update()``.

Active connections are counted as lc counts them (lbcore._pure.loads).

Slow start (lbcore/_shared/slow_start.py): while an endpoint ramps up, the pick is the
deadline schedule whatever the weights, over the ramped weights (Envoy switches its
least request to the EDF schedule when hosts are in slow start), rebuilt at most every
1 % of the window.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import insort
from typing import Any, Iterable

from .._shared.endpoint_state import pickable_indices
from .._shared.slow_start import DEFAULT_AGGRESSION, DEFAULT_MIN_WEIGHT, make_slow_start
from ..errors import ConfigError
from ..models import Endpoint, check_int
from .balancer import Balancer
from .loads import Loads

__all__ = ["LeastRequest", "splitmix64", "MAX_CHOICE_COUNT", "MAX_ACTIVE_REQUEST_BIAS"]

_MASK64 = 2**64 - 1
#: choice_count is a uint32 in Envoy's API; lbcore takes up to 2**31 - 1.
MAX_CHOICE_COUNT = 2**31 - 1
#: (active + 1) ** bias must stay a finite float for any count below 2**31 in both twins.
MAX_ACTIVE_REQUEST_BIAS = 10.0


def splitmix64(state: int) -> tuple[int, int]:
    """(next state, 64-bit output) of SplitMix64.

    >>> splitmix64(0)[1] == 0xE220A8397B1DCDAF  # the reference implementation's first output
    True
    """
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def _seed(rng: Any) -> int:
    if rng is None:
        return random.Random().getrandbits(64)
    if type(rng) is int:
        if not 0 <= rng <= _MASK64:
            raise ConfigError("rng", rng, "is out of range; an int seed is 0..2**64-1")
        return rng
    if isinstance(rng, random.Random):
        return rng.getrandbits(64)
    raise ConfigError("rng", rng, "must be None, a random.Random or an int seed")


def _check_bias(value: object) -> float:
    if type(value) not in (int, float) or not 0 <= value <= MAX_ACTIVE_REQUEST_BIAS:
        raise ConfigError(
            "active_request_bias", value,
            f"must be a number from 0 to {MAX_ACTIVE_REQUEST_BIAS:g} (Envoy's default: 1.0)",
        )
    return float(value)


class _Picker:
    """What ``update()`` builds: the pickable endpoints, and the deadline schedule when
    their weights differ (``heap`` of ``(deadline, order, index)``; None otherwise), with
    ``inverse[index]``, 1 / weight, for its steps."""

    __slots__ = ("pickable", "heap", "inverse", "now", "order")

    def __init__(self, pickable: tuple[int, ...], heap: list | None, inverse: dict[int, float]) -> None:
        self.pickable = pickable
        self.heap = heap
        self.inverse = inverse
        self.now = 0.0      # the deadline of the last pick (Envoy's current_time_)
        self.order = 0      # the next entry's place in the FIFO tie-break (order_offset_)


class LeastRequest(Balancer):
    """Least request by the power of two choices (Envoy ``least_request``), ``p2c``.

    Equal weights: ``choice_count`` (default 2) distinct endpoints drawn at random, the
    one with the fewest active connections wins; a full scan once ``choice_count``
    reaches the number of endpoints.  Unequal weights: Envoy's earliest-deadline-first
    schedule on ``weight / (active + 1) ** active_request_bias`` (default bias 1.0).
    `pick` and `release` are O(1) (O(choice_count²) draws, O(n) for a full scan,
    O(log n) for the schedule); counts survive `update` as lc's do.  ``rng`` (a
    ``random.Random`` or an int seed) makes the draws repeatable.

    ``slow_start`` (seconds; None or 0: off) ramps an endpoint added by `update` or
    healthy again after `mark_failed` up over that window by Envoy's rule: weight times
    ``max((t / window) ** (1 / slow_start_aggression), slow_start_min_weight / 100)``,
    picked by the deadline schedule meanwhile; the endpoints given at construction do
    not ramp (all alike: no share would change).  The weights are refreshed on a pick at
    most every 1 % of the window (``clock``: monotonic seconds).  ``panic_threshold``
    (percent; None: off): while fewer endpoints than that are healthy, picks ignore the
    failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> a, b = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    >>> p2c = LeastRequest([a, b], rng=42)
    >>> held = [p2c.pick() for _ in range(4)]   # the fewer active requests wins
    >>> sorted(e.ip for e in held)
    ['10.0.0.1', '10.0.0.1', '10.0.0.2', '10.0.0.2']
    >>> p2c.release(a)
    >>> p2c.pick() == a
    True
    """

    scheduler = "p2c"
    __slots__ = ("_choice_count", "_bias", "_state", "_loads", "_picker")

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        choice_count: int = 2,
        active_request_bias: float = 1.0,
        rng: Any = None,
        slow_start: float | None = None,
        slow_start_aggression: float = DEFAULT_AGGRESSION,
        slow_start_min_weight: float = DEFAULT_MIN_WEIGHT,
        clock: Any = None,
        panic_threshold: float | None = None,
    ) -> None:
        self._choice_count = check_int("choice_count", choice_count, 2, MAX_CHOICE_COUNT)
        self._bias = _check_bias(active_request_bias)
        ramp = make_slow_start(slow_start, slow_start_aggression, slow_start_min_weight, clock)
        self._state = _seed(rng)
        self._loads = Loads("p2c", (), (), None)
        self._picker = _Picker((), None, {})
        super().__init__(endpoints, panic_threshold=panic_threshold, ramp=ramp)

    @property
    def choice_count(self) -> int:
        """How many distinct endpoints a pick compares (equal weights)."""
        return self._choice_count

    @property
    def active_request_bias(self) -> float:
        """The exponent of ``active + 1`` in the schedule's weights (unequal weights)."""
        return self._bias

    def _below(self, n: int) -> int:
        """A random int in [0, n)."""
        self._state, r = splitmix64(self._state)
        return (r * n) >> 64

    def _step(self, picker: _Picker, loads: Loads, index: int) -> float:
        # 1 / hostWeight of Envoy's LeastRequestLoadBalancer, with the count before this pick.
        if self._bias == 1.0:
            return (loads.active[index] + 1) * picker.inverse[index]
        if self._bias == 0.0:
            return picker.inverse[index]
        return math.pow(loads.active[index] + 1, self._bias) * picker.inverse[index]

    def _rebuild(self, endpoints: tuple[Endpoint, ...], pickable: list[int]) -> None:
        loads = Loads("p2c", endpoints, pickable, self._loads)
        picker = _Picker(tuple(pickable), None, {})
        own = [endpoints[i].weight for i in pickable]
        ramped = self._ramped(endpoints, pickable, own)
        if len(set(own)) > 1 or (ramped is not None and pickable):
            # EdfScheduler::add for each endpoint in list order, at time 0.
            picker.inverse = {i: 1.0 / w for i, w in zip(pickable, own if ramped is None else ramped)}
            picker.heap = [(self._step(picker, loads, i), order, i) for order, i in enumerate(pickable)]
            heapq.heapify(picker.heap)
        heap = picker.heap
        if heap is not None:
            picker.order = len(heap)
            for _ in range(self._below(len(heap))):
                self._next_deadline(picker, loads)
        self._loads, self._picker = loads, picker

    def _next_deadline(self, picker: _Picker, loads: Loads) -> int:
        # EdfScheduler::pickAndAdd: the earliest deadline goes, and comes back 1/weight' later.
        deadline, _, index = picker.heap[0]
        picker.now = deadline
        heapq.heapreplace(picker.heap, (deadline + self._step(picker, loads, index), picker.order, index))
        picker.order += 1
        return index

    def pick(self, key: Any = None) -> Endpoint:
        """The endpoint for a new connection, now counted one more.  ``key`` is ignored.

        Raises NoEndpointsError when no endpoint can take a connection.
        """
        index = self._pick_index(0)
        if index < 0:
            raise self._no_endpoints()
        return self._endpoints[index]

    def _pick_index(self, key_hash: int) -> int:
        if self._note_picks:
            self._note_pick()
        picker, loads = self._picker, self._loads
        pickable = picker.pickable
        n = len(pickable)
        if n == 0:
            return -1
        if picker.heap is not None:
            index = self._next_deadline(picker, loads)
        elif self._choice_count >= n:
            index = self._full_scan(pickable, loads.active)
        else:
            index = self._choices(pickable, loads.active)
        loads.add(index)
        return index

    def _choices(self, pickable: tuple[int, ...], active: list[int]) -> int:
        # The t-th draw is uniform over the n - t positions not drawn yet: a draw r
        # counts past the positions already taken (in increasing order).
        n = len(pickable)
        taken: list[int] = []
        best = -1
        for t in range(self._choice_count):
            r = self._below(n - t)
            for position in taken:
                if r < position:
                    break
                r += 1
            insort(taken, r)
            index = pickable[r]
            if best < 0 or active[index] < active[best]:
                best = index
        return best

    def _full_scan(self, pickable: tuple[int, ...], active: list[int]) -> int:
        # Envoy unweightedHostPickFullScan: the least loaded, ties by reservoir sampling.
        best = pickable[0]
        tied = 1
        for index in pickable[1:]:
            if active[index] < active[best]:
                best, tied = index, 1
            elif active[index] == active[best]:
                tied += 1
                if self._below(tied) == 0:
                    best = index
        return best

    def release(self, endpoint: Endpoint) -> None:
        """A connection to ``endpoint`` has ended: one active connection less; O(1).

        An endpoint no longer in the set, or with no active connection, is ignored.
        """
        self._loads.release(endpoint)

    def _count(self, index: int) -> None:
        self._loads.add_checked(index)

    def _active_counts(self) -> dict[tuple[str, int], int]:
        """Active connections by endpoint address (for tests and stats)."""
        return self._loads.counts()

    def _check(self) -> None:
        super()._check()
        pickable = pickable_indices(self._endpoints, self._skipped)
        self._loads.check(self._endpoints, pickable)
        picker = self._picker
        assert picker.pickable == tuple(pickable)
        weighted = len({self._endpoints[i].weight for i in pickable}) > 1
        assert (picker.heap is not None) == (weighted or (self._ramping and bool(pickable)))
        if picker.heap is not None:
            heap = picker.heap
            assert set(picker.inverse) == set(pickable)
            if not self._ramping:
                assert picker.inverse == {i: 1.0 / self._endpoints[i].weight for i in pickable}
            assert sorted(i for _, _, i in heap) == pickable
            assert all(not heap[2 * p + c] < heap[p] for p in range(len(heap)) for c in (1, 2)
                       if 2 * p + c < len(heap))
            assert all(deadline >= picker.now for deadline, _, _ in heap)
            assert all(order < picker.order for _, order, _ in heap)
