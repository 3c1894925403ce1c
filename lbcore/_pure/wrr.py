"""Smooth weighted round robin (``wrr``), pure-Python twin (compiled: lbcore/_fast/wrr.pyx).

nginx's smooth weighted round robin (ngx_http_upstream_round_robin.c, commit 52327e06):
on each pick every endpoint's current weight grows by its weight, the largest (the
first on a tie) is picked and loses the sum of the weights.  Every window of
sum(weights) consecutive picks holds each endpoint exactly weight times, spread out:
weights {a: 5, b: 1, c: 1} give ``a a b a c a a`` where IPVS's wrr gives ``a a a a a b c``.

nginx scans every endpoint per pick.  The sequence repeats with a period of L, the sum
of the weights divided by their gcd, so here one period (the *cycle*) is computed when
the endpoints change and a pick is a cursor step: O(1).  Computing it costs O(D * L)
for D distinct weights (see `swrr_cycle`).  Where the cycle would be longer than
`MAX_CYCLE` picks or cost more than `MAX_CYCLE_WORK` steps, the picker is an
earliest-deadline-first schedule instead: the k-th pick (k = 0, 1, ...) of an endpoint
of weight w is due at (k + 1/2) / w, ties to the first endpoint, and a heap yields the
next one in O(log n).  Each period [p, p + 1) holds exactly w deadlines of every
endpoint, so the window property holds there too; the interleaving differs from
nginx's ({5, 1, 1} gives ``a a a b c a a``) and is smoother than deadlines at
(k + 1) / w, which give IPVS's bursty ``a a a a a b c``.  Over 300 random sets of 2-6
weights in 1..12, the furthest any endpoint ran ahead of or behind its fair share
(t * w / L after t picks) was 0.92 picks in nginx's order, 1.2 with deadlines at
(k + 1/2) / w and 2.0 at (k + 1) / w.

The cursor (the position in the period) starts at a random offset, from an injectable
``rng``, so that the processes of a fleet do not all send their first connections to
the same endpoint (the herd effect of nginx PR #837).  It survives `update`, reduced
modulo the new period.

Slow start (lbcore/_shared/slow_start.py): while an endpoint ramps up, the cycle is
built over the ramped integer weights (every weight times 1024, a ramping one times its
factor too) and rebuilt at most every 1 % of the window, so a window of the new period
holds each endpoint exactly its ramped weight.
"""

from __future__ import annotations

import heapq
import math
import random
from fractions import Fraction
from typing import Any, Iterable

from .._shared.endpoint_state import pickable_indices
from .._shared.slow_start import DEFAULT_AGGRESSION, DEFAULT_MIN_WEIGHT, make_slow_start
from ..models import Endpoint
from .balancer import Balancer
from .rr import Cycle  # the same picker: one period, as endpoints and indices

__all__ = ["WeightedRoundRobin", "swrr_cycle", "reduced_weights", "MAX_CYCLE", "MAX_CYCLE_WORK"]

#: The longest cycle computed ahead: 65,536 picks (1 MiB: two tuples of that length).
MAX_CYCLE = 1 << 16
#: The most group steps (distinct weights * cycle length) spent computing one: about
#: 4 ms compiled, 0.15 s in pure Python (measured here).
MAX_CYCLE_WORK = 1 << 20


def reduced_weights(weights: list[int]) -> list[int]:
    """The weights divided by their gcd: the same smooth sequence, a shorter period."""
    divisor = math.gcd(*weights)
    return [w // divisor for w in weights]


def _fits_cycle(weights: list[int]) -> bool:
    """Whether the period of ``weights`` is computed ahead (else: the deadline schedule)."""
    period = sum(weights)
    return period <= MAX_CYCLE and len(set(weights)) * period <= MAX_CYCLE_WORK


def swrr_cycle(weights: list[int]) -> list[int]:
    """One period of nginx's smooth weighted round robin, as positions in ``weights``.

    ``weights`` are positive and have gcd 1; the period is ``sum(weights)`` picks long.
    Before the t-th pick (t = 1, 2, ...) nginx's current weight of endpoint i is
    ``t * w_i - total * picks_i``.  Endpoints of equal weight differ only in their
    picks, so among them the least picked, then the first, is ahead: each group of
    equal weight takes its turns in rotation, and a pick compares one candidate per
    distinct weight.  O(D * total) for D distinct weights, not nginx's O(n * total).

    >>> swrr_cycle([5, 1, 1])
    [0, 0, 1, 0, 2, 0, 0]
    """
    total = sum(weights)
    members: dict[int, list[int]] = {}
    for position, weight in enumerate(weights):
        members.setdefault(weight, []).append(position)
    group_weights = list(members)
    group_members = [members[w] for w in group_weights]
    turn = [0] * len(group_weights)  # the member whose turn it is
    rounds = [0] * len(group_weights)  # how many times every member was picked
    cycle = []
    for t in range(1, total + 1):
        best = -1
        best_current = best_position = 0
        for g, weight in enumerate(group_weights):
            current = t * weight - total * rounds[g]
            position = group_members[g][turn[g]]
            if best < 0 or current > best_current or (current == best_current and position < best_position):
                best, best_current, best_position = g, current, position
        cycle.append(best_position)
        turn[best] += 1
        if turn[best] == len(group_members[best]):
            turn[best] = 0
            rounds[best] += 1
    return cycle


class _Deadlines:
    """The long-cycle picker: earliest deadline first over the pickable endpoints.

    ``heap`` holds ``(deadline, leaf, k)`` per endpoint: its next pick is its k-th, due
    at (2k + 1) / (2w).  Fractions keep the deadlines exact.
    """

    __slots__ = ("endpoints", "indices", "weights", "heap")

    def __init__(
        self, endpoints: tuple[Endpoint, ...], indices: tuple[int, ...], weights: list[int], position: int
    ) -> None:
        self.endpoints = endpoints
        self.indices = indices
        self.weights = weights
        # Start exactly ``position`` picks into the period.  Before any time t an
        # endpoint has fewer than t * w + 1/2 deadlines, so fewer than ``position`` fall
        # before (position - n/2) / period: take those at once (k of each endpoint: its
        # deadlines (2k' + 1) / (2w) before that time), then pop the rest in order.
        period = sum(weights)
        ahead = max(0, 2 * position - len(weights))
        self.heap = []
        for leaf, weight in enumerate(weights):
            k = (ahead * weight + period - 1) // (2 * period)
            self.heap.append((Fraction(2 * k + 1, 2 * weight), leaf, k))
        heapq.heapify(self.heap)
        for _ in range(position - sum(k for _, _, k in self.heap)):
            self.pop()

    def pop(self) -> int:
        """The leaf (pickable endpoint) due first; it moves to its next deadline."""
        _, leaf, k = self.heap[0]
        heapq.heapreplace(self.heap, (Fraction(2 * k + 3, 2 * self.weights[leaf]), leaf, k + 1))
        return leaf

    def position(self) -> int:
        """How far into the current period the schedule is."""
        return sum(k for _, _, k in self.heap) % sum(self.weights)


class WeightedRoundRobin(Balancer):
    """Smooth weighted round robin over endpoints with weight > 0 (ipvsadm ``wrr``).

    Every ``sum(weights)`` consecutive picks hold each pickable endpoint exactly
    ``weight`` times, interleaved as nginx does.  `pick` is O(1) (O(log n) for the
    rare weight sets whose cycle is too long to compute ahead).

    ``slow_start`` (seconds; None or 0: off) ramps an endpoint added by `update` or
    healthy again after `mark_failed` up over that window by Envoy's rule: weight times
    ``max((t / window) ** (1 / slow_start_aggression), slow_start_min_weight / 100)``;
    the endpoints given at construction do not ramp (all alike: no share would change).
    The weights are refreshed on a pick at most every 1 % of the window (``clock``:
    monotonic seconds).  ``panic_threshold`` (percent; None: off): while fewer endpoints
    than that are healthy, picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> endpoints = [Endpoint(f"10.0.0.{i}", 80, weight=w) for i, w in ((1, 5), (2, 1), (3, 1))]
    >>> wrr = WeightedRoundRobin(endpoints, rng=random.Random(0))
    >>> sorted(wrr.pick().ip for _ in range(7))
    ['10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.1', '10.0.0.2', '10.0.0.3']
    """

    scheduler = "wrr"
    __slots__ = ("_cycle", "_deadlines", "_cursor", "_weights")

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        rng: Any = None,
        slow_start: float | None = None,
        slow_start_aggression: float = DEFAULT_AGGRESSION,
        slow_start_min_weight: float = DEFAULT_MIN_WEIGHT,
        clock: Any = None,
        panic_threshold: float | None = None,
    ) -> None:
        ramp = make_slow_start(slow_start, slow_start_aggression, slow_start_min_weight, clock)
        self._cycle = Cycle((), ())
        self._deadlines: _Deadlines | None = None
        self._weights: list[int] = []  # the reduced weights of the picker, ramped or not
        # A free-running position; reduced modulo the period on each rebuild.
        self._cursor = (rng if rng is not None else random.Random()).getrandbits(32)
        super().__init__(endpoints, panic_threshold=panic_threshold, ramp=ramp)

    def _position(self) -> int:
        return self._deadlines.position() if self._deadlines is not None else self._cursor

    def _rebuild(self, endpoints: tuple[Endpoint, ...], pickable: list[int]) -> None:
        position = self._position()
        cycle, deadlines, weights = Cycle((), ()), None, []
        own = [endpoints[i].weight for i in pickable]
        ramped = self._ramped(endpoints, pickable, own)
        if pickable:
            weights = reduced_weights(own if ramped is None else ramped)
            position %= sum(weights)
            if _fits_cycle(weights):
                order = [pickable[p] for p in swrr_cycle(weights)]
                cycle = Cycle(tuple(endpoints[i] for i in order), tuple(order))
            else:
                chosen = tuple(endpoints[i] for i in pickable)
                deadlines = _Deadlines(chosen, tuple(pickable), weights, position)
        self._cycle, self._deadlines, self._cursor, self._weights = cycle, deadlines, position, weights

    def _advance(self, n: int) -> int:
        i = self._cursor
        self._cursor = i + 1 if i + 1 < n else 0
        return i

    def pick(self, key: Any = None) -> Endpoint:
        """The next endpoint of the smooth weighted cycle; O(1).  ``key`` is ignored.

        >>> from lbcore import Endpoint
        >>> b = WeightedRoundRobin([Endpoint("10.0.0.1", 80, weight=2), Endpoint("10.0.0.2", 80)])
        >>> sorted(b.pick().ip for _ in range(3))
        ['10.0.0.1', '10.0.0.1', '10.0.0.2']
        """
        if self._note_picks:
            self._note_pick()
        cycle = self._cycle
        if cycle.endpoints:
            return cycle.endpoints[self._advance(len(cycle.endpoints))]
        if self._deadlines is not None:
            return self._deadlines.endpoints[self._deadlines.pop()]
        raise self._no_endpoints()

    def _pick_index(self, key_hash: int) -> int:
        if self._note_picks:
            self._note_pick()
        cycle = self._cycle
        if cycle.indices:
            return cycle.indices[self._advance(len(cycle.indices))]
        if self._deadlines is not None:
            return self._deadlines.indices[self._deadlines.pop()]
        return -1

    def _check(self) -> None:
        super()._check()
        pickable = pickable_indices(self._endpoints, self._skipped)
        cycle, deadlines = self._cycle, self._deadlines
        if not pickable:
            assert not cycle.indices and deadlines is None
            return
        weights = self._weights
        assert len(weights) == len(pickable)
        if not self._ramping:
            assert weights == reduced_weights([self._endpoints[i].weight for i in pickable])
        if deadlines is None:
            assert _fits_cycle(weights)
            assert cycle.indices == tuple(pickable[p] for p in swrr_cycle(weights))
            assert cycle.endpoints == tuple(self._endpoints[i] for i in cycle.indices)
            assert 0 <= self._cursor < len(cycle.indices)
            return
        assert not cycle.indices
        assert not _fits_cycle(weights)
        assert deadlines.indices == tuple(pickable) and deadlines.weights == weights
        assert deadlines.endpoints == tuple(self._endpoints[i] for i in pickable)
        heap = deadlines.heap
        assert sorted(leaf for _, leaf, _ in heap) == list(range(len(pickable)))
        assert all(d == Fraction(2 * k + 1, 2 * weights[leaf]) for d, leaf, k in heap)
        assert all(not heap[2 * i + j] < heap[i] for i in range(len(heap)) for j in (1, 2) if 2 * i + j < len(heap))
        # The picks taken so far are exactly the earliest deadlines: none taken is due
        # after one still pending.
        taken = [(Fraction(2 * k - 1, 2 * weights[leaf]), leaf) for _, leaf, k in heap if k > 0]
        assert not taken or max(taken) < heap[0][:2]
