# Smooth weighted round robin (wrr).  Mirrors lbcore/_pure/wrr.py `WeightedRoundRobin`,
# pick for pick.
#
# One period of nginx's smooth WRR is computed in C when the endpoints change
# (swrr_cycle below mirrors the pure function of that name), and a pick is a cursor
# step over it, as in rr.  Where that cycle would be too long (MAX_CYCLE, MAX_CYCLE_WORK)
# the earliest-deadline-first schedule of the pure twin runs on a winner tree
# (_tournament.pxd) of 128-bit keys instead of a heap of Fractions:
#
#     key = next_period << 96 | floor((2j + 1) * 2**63 / w) << 32 | leaf
#
# for an endpoint of weight w whose next pick is its j-th (0 <= j < w) of the period.
# The middle field is its deadline (2j + 1) / (2w) scaled by 2**64: two different
# deadlines with weights below 2**31 differ by more than 2**-64, so the scaled floors
# order them exactly, and equal deadlines tie to the first leaf (list order), as in the
# pure twin's heap.  The next deadline adds floor(2**64 / w) plus a carry from the
# remainder: no division per pick.  An endpoint done with its w picks moves to the
# next period (bit 96).  When the earliest key has that bit every key has it, and one
# pass clears it everywhere, which keeps the order: O(n) once per period of L >= n
# picks.
#
# Slow start: while an endpoint ramps up, the picker is built over the ramped integer
# weights of lbcore._shared.slow_start, as in the pure twin.

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport int64_t, uint32_t, uint64_t

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.rr cimport Cycle
from lbcore._fast.tournament cimport (
    EMPTY_KEY,
    key_t,
    key_to_int,
    tree_build,
    tree_replay,
    tree_size,
)

import math
import random

from lbcore._shared.endpoint_state import pickable_indices
from lbcore._shared.slow_start import DEFAULT_AGGRESSION, DEFAULT_MIN_WEIGHT, make_slow_start

__all__ = ["WeightedRoundRobin", "swrr_cycle", "reduced_weights", "MAX_CYCLE", "MAX_CYCLE_WORK"]

# The same bounds as lbcore._pure.wrr (a test holds them equal).
MAX_CYCLE = 1 << 16
MAX_CYCLE_WORK = 1 << 20

cdef key_t NEXT_PERIOD = (<key_t>1) << 96
cdef object TWO_64 = 1 << 64
cdef object TWO_63 = 1 << 63


def swrr_cycle(list weights):
    """One period of nginx's smooth weighted round robin; see lbcore._pure.wrr.swrr_cycle.

    Equal weights form groups that take their turns in rotation; each pick compares
    one candidate per group.  O(D * total) in C.
    """
    cdef Py_ssize_t n = len(weights), groups, g, best, t, k
    cdef int64_t total = sum(weights), current, best_current
    cdef Py_ssize_t position, best_position
    members = {}
    for position, weight in enumerate(weights):
        members.setdefault(weight, []).append(position)
    groups = len(members)
    cdef int64_t* group_weight = <int64_t*>PyMem_Calloc(groups + 1, sizeof(int64_t))
    cdef int64_t* rounds = <int64_t*>PyMem_Calloc(groups + 1, sizeof(int64_t))
    cdef Py_ssize_t* start = <Py_ssize_t*>PyMem_Calloc(groups + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t* size = <Py_ssize_t*>PyMem_Calloc(groups + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t* turn = <Py_ssize_t*>PyMem_Calloc(groups + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t* member = <Py_ssize_t*>PyMem_Calloc(n + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t* cycle = <Py_ssize_t*>PyMem_Calloc(total + 1, sizeof(Py_ssize_t))
    try:
        if not (group_weight and rounds and start and size and turn and member and cycle):
            raise MemoryError()
        k = 0
        for g, (weight, positions) in enumerate(members.items()):
            group_weight[g] = weight
            start[g] = k
            size[g] = len(positions)
            for position in positions:
                member[k] = position
                k += 1
        for t in range(1, total + 1):
            best = -1
            best_current = best_position = 0
            for g in range(groups):
                current = t * group_weight[g] - total * rounds[g]
                position = member[start[g] + turn[g]]
                if best < 0 or current > best_current or (
                    current == best_current and position < best_position
                ):
                    best, best_current, best_position = g, current, position
            cycle[t - 1] = best_position
            turn[best] += 1
            if turn[best] == size[best]:
                turn[best] = 0
                rounds[best] += 1
        return [cycle[t] for t in range(total)]
    finally:
        PyMem_Free(group_weight)
        PyMem_Free(rounds)
        PyMem_Free(start)
        PyMem_Free(size)
        PyMem_Free(turn)
        PyMem_Free(member)
        PyMem_Free(cycle)


cdef bint _fits_cycle(list weights) except -1:
    # lbcore._pure.wrr._fits_cycle: the period is computed ahead, else the deadline schedule.
    period = sum(weights)
    return period <= MAX_CYCLE and len(set(weights)) * period <= MAX_CYCLE_WORK


cdef Cycle _NO_CYCLE = Cycle((), ())


cdef struct Turn:
    uint64_t weight
    uint64_t picks       # j: picks taken in the current period (0 <= j < weight)
    uint64_t step        # 2**64 // weight: from one scaled deadline to the next
    uint64_t step_rem    # 2**64 % weight
    uint64_t first       # 2**63 // weight: the scaled first deadline of a period
    uint64_t first_rem   # 2**63 % weight
    uint64_t rem         # (2j + 1) * 2**63 % weight: the carry pending


@cython.final
cdef class _Deadlines:
    """The long-cycle picker: earliest deadline first over the pickable endpoints."""
    cdef readonly tuple endpoints
    cdef readonly tuple indices
    cdef object period           # sum of the (reduced) weights
    cdef Py_ssize_t n            # leaves: pickable endpoints, in list order
    cdef Py_ssize_t size         # leaf places in the tree
    cdef Turn* turn
    cdef key_t* node

    def __dealloc__(self):
        PyMem_Free(self.turn)
        PyMem_Free(self.node)

    cdef int build(self, tuple endpoints, tuple indices, list weights, object position) except -1:
        # Mirrors _Deadlines.__init__ of the pure twin: start exactly `position` picks
        # into the period (take the picks due before (position - n/2) / period, then pop).
        cdef Py_ssize_t leaf
        cdef Turn* t
        self.endpoints = endpoints
        self.indices = indices
        self.period = sum(weights)
        self.n = len(weights)
        self.size = tree_size(self.n)
        self.turn = <Turn*>PyMem_Calloc(self.n, sizeof(Turn))
        self.node = <key_t*>PyMem_Calloc(2 * self.size, sizeof(key_t))
        if self.turn == NULL or self.node == NULL:
            raise MemoryError()
        for leaf in range(self.size):
            self.node[self.size + leaf] = EMPTY_KEY
        ahead = max(0, 2 * position - self.n)
        taken = 0
        for leaf, weight in enumerate(weights):
            t = &self.turn[leaf]
            t.weight = weight
            # Weight 1 never steps (each pick starts a period): its 2**64 is kept as 0.
            t.step = (TWO_64 // weight) & (TWO_64 - 1)
            t.step_rem = TWO_64 % weight
            t.first = TWO_63 // weight
            t.first_rem = TWO_63 % weight
            k = (ahead * weight + self.period - 1) // (2 * self.period)
            taken += k
            # k == weight: done with this period (never all of them: taken <= position).
            t.picks = k if k < weight else 0
            scaled = (2 * t.picks + 1) * TWO_63
            t.rem = scaled % weight
            self.node[self.size + leaf] = (
                (NEXT_PERIOD if k == weight else 0)
                | (<key_t><uint64_t>(scaled // weight)) << 32
                | <key_t>leaf
            )
        tree_build(self.node, self.size)
        for _ in range(position - taken):
            self.pop()
        return 0

    cdef void next_period(self) noexcept:
        cdef Py_ssize_t p
        for p in range(1, 2 * self.size):
            self.node[p] &= ~NEXT_PERIOD

    cdef inline Py_ssize_t pop(self) noexcept:
        """The leaf due first; it moves to its next deadline."""
        cdef Py_ssize_t leaf = <Py_ssize_t><uint32_t>self.node[1]
        cdef Py_ssize_t p = self.size + leaf
        cdef Turn* t = &self.turn[leaf]
        cdef uint64_t step = t.step
        t.picks += 1
        if t.picks == t.weight:
            t.picks = 0
            t.rem = t.first_rem
            self.node[p] = NEXT_PERIOD | (<key_t>t.first) << 32 | <key_t>leaf
        else:
            t.rem += t.step_rem
            if t.rem >= t.weight:
                t.rem -= t.weight
                step += 1
            self.node[p] += <key_t>step << 32
        tree_replay(self.node, p)
        if self.node[1] & NEXT_PERIOD:
            self.next_period()
        return leaf

    cdef object position(self):
        """How far into the current period the schedule is."""
        cdef Py_ssize_t leaf
        total = 0
        for leaf in range(self.n):
            total += self.turn[leaf].picks
            if self.node[self.size + leaf] & NEXT_PERIOD:
                total += self.turn[leaf].weight
        return total % self.period

    def _check(self, list weights):
        from fractions import Fraction  # here, not at the top: `import lbcore` stays lean

        cdef Py_ssize_t leaf, p
        cdef Turn* t
        assert [self.turn[leaf].weight for leaf in range(self.n)] == weights
        assert not self.node[1] & NEXT_PERIOD
        taken, pending = [], []
        for leaf, weight in enumerate(weights):
            t = &self.turn[leaf]
            assert t.picks < weight
            assert t.step == (TWO_64 // weight) & (TWO_64 - 1) and t.step_rem == TWO_64 % weight
            assert t.first == TWO_63 // weight and t.first_rem == TWO_63 % weight
            scaled = (2 * t.picks + 1) * TWO_63
            next_period = key_to_int(self.node[self.size + leaf]) >> 96
            assert next_period in (0, 1)
            assert t.rem == scaled % weight
            assert key_to_int(self.node[self.size + leaf]) == (
                next_period << 96 | (scaled // weight) << 32 | leaf
            )
            # k: the picks of this endpoint taken since the period began
            k = t.picks + next_period * weight
            pending.append((Fraction(2 * k + 1, 2 * weight), leaf))
            if k:
                taken.append((Fraction(2 * k - 1, 2 * weight), leaf))
        # The picks taken so far are exactly the earliest deadlines.
        assert not taken or max(taken) < min(pending)
        assert key_to_int(self.node[1]) & 0xFFFFFFFF == min(pending)[1]
        for leaf in range(self.n, self.size):
            assert key_to_int(self.node[self.size + leaf]) >> 97
        for p in range(1, self.size):
            assert key_to_int(self.node[p]) == min(
                key_to_int(self.node[2 * p]), key_to_int(self.node[2 * p + 1])
            )


@cython.final
cdef class WeightedRoundRobin(Balancer):
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
    cdef Cycle _cycle
    cdef _Deadlines _deadlines
    cdef Py_ssize_t _cursor
    cdef list _weights   # the reduced weights of the picker, ramped or not

    def __init__(
        self, endpoints=(), *, rng=None, slow_start=None,
        slow_start_aggression=DEFAULT_AGGRESSION, slow_start_min_weight=DEFAULT_MIN_WEIGHT,
        clock=None, panic_threshold=None,
    ):
        ramp = make_slow_start(slow_start, slow_start_aggression, slow_start_min_weight, clock)
        self._cycle = _NO_CYCLE
        self._deadlines = None
        self._weights = []
        # A free-running position; reduced modulo the period on each rebuild.
        self._cursor = (rng if rng is not None else random.Random()).getrandbits(32)
        Balancer.__init__(self, endpoints, panic_threshold=panic_threshold, ramp=ramp)

    cdef object _position(self):
        return self._deadlines.position() if self._deadlines is not None else self._cursor

    cdef int _rebuild(self, tuple endpoints, list pickable) except -1:
        position = self._position()
        cdef Cycle cycle = _NO_CYCLE
        cdef _Deadlines deadlines = None
        weights = []
        own = [endpoints[i].weight for i in pickable]
        ramped = self._ramped(endpoints, pickable, own)
        if pickable:
            weights = reduced_weights(own if ramped is None else ramped)
            position %= sum(weights)
            if _fits_cycle(weights):
                order = [pickable[p] for p in swrr_cycle(weights)]
                cycle = Cycle(tuple([endpoints[i] for i in order]), tuple(order))
            else:
                deadlines = _Deadlines.__new__(_Deadlines)
                deadlines.build(
                    tuple([endpoints[i] for i in pickable]), tuple(pickable), weights, position
                )
        self._deadlines = deadlines
        self._cycle = cycle
        self._cursor = position
        self._weights = weights
        return 0

    cdef inline Py_ssize_t _advance(self, Py_ssize_t n) noexcept:
        cdef Py_ssize_t i = self._cursor
        self._cursor = i + 1 if i + 1 < n else 0
        return i

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick(self, key=None):
        """The next endpoint of the smooth weighted cycle; O(1).  key is ignored."""
        if self._note_picks:
            self._note_pick()
        cdef Cycle cycle = self._cycle
        if cycle.n:
            return cycle.endpoints[self._advance(cycle.n)]
        if self._deadlines is not None:
            return self._deadlines.endpoints[self._deadlines.pop()]
        raise self._no_endpoints()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        if self._note_picks:
            self._note_pick()
        cdef Cycle cycle = self._cycle
        if cycle.n:
            return <Py_ssize_t>cycle.indices[self._advance(cycle.n)]
        if self._deadlines is not None:
            return <Py_ssize_t>self._deadlines.indices[self._deadlines.pop()]
        return -1

    def _check(self):
        Balancer._check(self)
        pickable = pickable_indices(self._endpoints, self._skipped)
        if not pickable:
            assert self._cycle.n == 0 and self._deadlines is None
            return
        weights = self._weights
        assert len(weights) == len(pickable)
        if not self._ramping:
            assert weights == reduced_weights([self._endpoints[i].weight for i in pickable])
        if self._deadlines is None:
            assert _fits_cycle(weights)
            assert self._cycle.indices == tuple([pickable[p] for p in swrr_cycle(weights)])
            assert self._cycle.endpoints == tuple([self._endpoints[i] for i in self._cycle.indices])
            assert 0 <= self._cursor < self._cycle.n
            return
        assert self._cycle.n == 0
        assert not _fits_cycle(weights)
        assert self._deadlines.indices == tuple(pickable)
        assert self._deadlines.endpoints == tuple([self._endpoints[i] for i in pickable])
        self._deadlines._check(weights)


def reduced_weights(list weights):
    # Mirrors lbcore._pure.wrr.reduced_weights: the same smooth sequence, a shorter period.
    divisor = math.gcd(*weights)
    return [w // divisor for w in weights]
