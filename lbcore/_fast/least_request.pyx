# Least request by the power of two choices (p2c).  Mirrors lbcore/_pure/least_request.py
# `LeastRequest`, pick for pick; read that file for the rules and their sources (Envoy's
# least_request_lb.cc and EdfScheduler).
#
# A pick makes no Python call: the draws come from SplitMix64 in C (the pure twin runs
# the same generator, so both pick the same sequence from one seed) and the counts are
# Loads' C array (loads.pxd).  The deadline schedule for unequal weights holds the same
# doubles as the pure twin's heapq, computed by the same operations in the same order
# (pow() is libm's in both), in a winner tree (tournament.pxd) instead of a heap: an
# entry's key is one 128-bit integer,
#
#     key = bits(deadline) << 64 | order
#
# (a non-negative double orders as its IEEE bit pattern read as an integer), so the
# earliest (deadline, order) is the tree's minimum, and a pick replays one leaf's path
# with one integer compare per level where a heap's sift-down branches on two.  Keys
# are unique (order is), so both structures give up the same entry.  Each node also
# keeps the leaf its key came from (the endpoint's place among the pickable ones).

cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.math cimport pow
from libc.stdint cimport int32_t, uint64_t
from libc.string cimport memcpy

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.loads cimport Loads, loads_add, loads_add_checked, loads_release, u128
from lbcore._fast.tournament cimport EMPTY_KEY, key_t, key_to_int, tree_size

import random

from lbcore._shared.endpoint_state import pickable_indices
from lbcore._shared.slow_start import DEFAULT_AGGRESSION, DEFAULT_MIN_WEIGHT, make_slow_start
from lbcore.errors import ConfigError
from lbcore.models import check_int

__all__ = ["LeastRequest", "splitmix64", "MAX_CHOICE_COUNT", "MAX_ACTIVE_REQUEST_BIAS"]

# The same bounds as lbcore._pure.least_request (a test holds them equal).
MAX_CHOICE_COUNT = 2**31 - 1
MAX_ACTIVE_REQUEST_BIAS = 10.0
cdef object _MASK64 = 2**64 - 1


cdef inline uint64_t _next(uint64_t* state) noexcept nogil:
    # SplitMix64 (Steele, Lea, Flood 2014): lbcore._pure.least_request.splitmix64.
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _below(uint64_t* state, uint64_t n) noexcept nogil:
    # A random int in [0, n): Lemire's multiply-shift, (r * n) >> 64.
    return <uint64_t>((<u128>_next(state) * n) >> 64)


def splitmix64(state):
    """(next state, 64-bit output) of SplitMix64."""
    cdef uint64_t s = state
    cdef uint64_t out = _next(&s)
    return s, out


cdef uint64_t _seed(object rng) except? 0:
    if rng is None:
        return random.Random().getrandbits(64)
    if type(rng) is int:
        if not 0 <= rng <= _MASK64:
            raise ConfigError("rng", rng, "is out of range; an int seed is 0..2**64-1")
        return rng
    if isinstance(rng, random.Random):
        return rng.getrandbits(64)
    raise ConfigError("rng", rng, "must be None, a random.Random or an int seed")


cdef double _check_bias(object value) except -1:
    if type(value) not in (int, float) or not 0 <= value <= MAX_ACTIVE_REQUEST_BIAS:
        raise ConfigError(
            "active_request_bias", value,
            f"must be a number from 0 to {MAX_ACTIVE_REQUEST_BIAS:g} (Envoy's default: 1.0)",
        )
    return float(value)


cdef inline key_t _key(double deadline, uint64_t order) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &deadline, 8)
    return (<key_t>bits) << 64 | order


cdef inline double _deadline(key_t key) noexcept nogil:
    cdef uint64_t bits = <uint64_t>(key >> 64)
    cdef double deadline
    memcpy(&deadline, &bits, 8)
    return deadline


cdef inline void _replay(key_t* node, int32_t* leaf_of, Py_ssize_t p) noexcept nogil:
    # tournament.pxd tree_replay, carrying each node's leaf along with its key; the
    # whole path changes (the root's entry moved), so no early stop.
    cdef key_t winner = node[p]
    cdef int32_t leaf = leaf_of[p]
    while p > 1:
        if node[p ^ 1] < winner:
            winner = node[p ^ 1]
            leaf = leaf_of[p ^ 1]
        p >>= 1
        node[p] = winner
        leaf_of[p] = leaf


@cython.final
cdef class _Picker:
    """What update() builds: the pickable endpoints, and the deadline schedule when
    their weights differ; lbcore._pure.least_request._Picker."""

    cdef int32_t* pickable       # n endpoint indices, in list order
    cdef Py_ssize_t n
    cdef Py_ssize_t size         # leaf places of the schedule's tree; 0 when weights are equal
    cdef key_t* node             # 2 * size keys: leaves at size + j, node[1] the earliest
    cdef int32_t* leaf_of        # 2 * size: the leaf (pickable position) of each node's key
    cdef double* inverse         # per endpoint index: 1 / weight (schedule only)
    cdef double now              # the deadline of the last pick
    cdef uint64_t order          # the next entry's place in the FIFO tie-break
    cdef Py_ssize_t* taken       # scratch for the draws: positions drawn so far, sorted

    def __dealloc__(self):
        PyMem_Free(self.pickable)
        PyMem_Free(self.node)
        PyMem_Free(self.leaf_of)
        PyMem_Free(self.inverse)
        PyMem_Free(self.taken)


@cython.final
cdef class LeastRequest(Balancer):
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
    cdef Py_ssize_t _choice_count
    cdef double _bias
    cdef uint64_t _state
    cdef Loads _loads
    cdef _Picker _picker

    def __init__(
        self, endpoints=(), *, choice_count=2, active_request_bias=1.0, rng=None,
        slow_start=None, slow_start_aggression=DEFAULT_AGGRESSION,
        slow_start_min_weight=DEFAULT_MIN_WEIGHT, clock=None, panic_threshold=None,
    ):
        self._choice_count = check_int("choice_count", choice_count, 2, MAX_CHOICE_COUNT)
        self._bias = _check_bias(active_request_bias)
        ramp = make_slow_start(slow_start, slow_start_aggression, slow_start_min_weight, clock)
        self._state = _seed(rng)
        self._loads = Loads("p2c", (), (), None)
        self._picker = _Picker()
        Balancer.__init__(self, endpoints, panic_threshold=panic_threshold, ramp=ramp)

    @property
    def choice_count(self):
        """How many distinct endpoints a pick compares (equal weights)."""
        return self._choice_count

    @property
    def active_request_bias(self):
        """The exponent of active + 1 in the schedule's weights (unequal weights)."""
        return self._bias

    cdef inline double _step(self, _Picker picker, Loads loads, int32_t index) noexcept:
        # 1 / hostWeight of Envoy's LeastRequestLoadBalancer, with the count before this pick.
        if self._bias == 1.0:
            return <double>(loads.active[index] + 1) * picker.inverse[index]
        if self._bias == 0.0:
            return picker.inverse[index]
        return pow(<double>(loads.active[index] + 1), self._bias) * picker.inverse[index]

    cdef int _rebuild(self, tuple endpoints, list pickable) except -1:
        cdef Loads loads = Loads("p2c", endpoints, pickable, self._loads)
        cdef _Picker picker = _Picker()
        cdef Py_ssize_t j, n = len(pickable), pre_picks
        picker.n = n
        picker.pickable = <int32_t*>PyMem_Malloc((n + 1) * sizeof(int32_t))
        picker.taken = <Py_ssize_t*>PyMem_Malloc((min(self._choice_count, n) + 1) * sizeof(Py_ssize_t))
        if picker.pickable == NULL or picker.taken == NULL:
            raise MemoryError()
        for j in range(n):
            picker.pickable[j] = pickable[j]
        own = [endpoints[i].weight for i in pickable]
        ramped = self._ramped(endpoints, pickable, own)
        if len(set(own)) > 1 or (ramped is not None and pickable):
            weights = own if ramped is None else ramped
            picker.size = tree_size(n)
            picker.node = <key_t*>PyMem_Malloc(2 * picker.size * sizeof(key_t))
            picker.leaf_of = <int32_t*>PyMem_Malloc(2 * picker.size * sizeof(int32_t))
            picker.inverse = <double*>PyMem_Malloc((len(endpoints) + 1) * sizeof(double))
            if picker.node == NULL or picker.leaf_of == NULL or picker.inverse == NULL:
                raise MemoryError()
            for j in range(n):
                picker.inverse[pickable[j]] = 1.0 / <double>weights[j]
            # EdfScheduler::add for each endpoint in list order, at time 0.
            for j in range(picker.size):
                picker.node[picker.size + j] = EMPTY_KEY
                picker.leaf_of[picker.size + j] = -1
            for j in range(n):
                picker.node[picker.size + j] = _key(self._step(picker, loads, picker.pickable[j]), j)
                picker.leaf_of[picker.size + j] = <int32_t>j
            for j in range(picker.size - 1, 0, -1):
                if picker.node[2 * j + 1] < picker.node[2 * j]:
                    picker.node[j], picker.leaf_of[j] = picker.node[2 * j + 1], picker.leaf_of[2 * j + 1]
                else:
                    picker.node[j], picker.leaf_of[j] = picker.node[2 * j], picker.leaf_of[2 * j]
            picker.order = n
            pre_picks = _below(&self._state, n)
            for j in range(pre_picks):
                self._next_deadline(picker, loads)
        self._loads, self._picker = loads, picker
        return 0

    cdef inline int32_t _next_deadline(self, _Picker picker, Loads loads) noexcept:
        # EdfScheduler::pickAndAdd: the earliest deadline goes, and comes back a step later.
        cdef int32_t leaf = picker.leaf_of[1]
        cdef int32_t index = picker.pickable[leaf]
        picker.now = _deadline(picker.node[1])
        picker.node[picker.size + leaf] = _key(picker.now + self._step(picker, loads, index), picker.order)
        picker.order += 1
        _replay(picker.node, picker.leaf_of, picker.size + leaf)
        return index

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick(self, key=None):
        """The endpoint for a new connection, now counted one more.  key is ignored."""
        cdef Py_ssize_t index = self._pick_index(0)
        if index < 0:
            raise self._no_endpoints()
        return self._endpoints[index]

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        if self._note_picks:
            self._note_pick()
        cdef _Picker picker = self._picker
        cdef Loads loads = self._loads
        cdef int32_t index
        cdef Py_ssize_t n = picker.n
        if n == 0:
            return -1
        if picker.size:
            index = self._next_deadline(picker, loads)
        elif self._choice_count >= n:
            index = self._full_scan(picker, loads)
        else:
            index = self._choices(picker, loads)
        loads_add(loads, index)
        return index

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef inline int32_t _choices(self, _Picker picker, Loads loads) noexcept:
        # The t-th draw is uniform over the n - t positions not drawn yet: a draw r
        # counts past the positions already taken (kept sorted in picker.taken).
        cdef Py_ssize_t t, j, k, r
        cdef int32_t index, best = -1
        cdef Py_ssize_t* taken = picker.taken
        for t in range(self._choice_count):
            r = _below(&self._state, picker.n - t)
            j = 0
            while j < t and r >= taken[j]:
                r += 1
                j += 1
            k = t
            while k > j:
                taken[k] = taken[k - 1]
                k -= 1
            taken[j] = r
            index = picker.pickable[r]
            if best < 0 or loads.active[index] < loads.active[best]:
                best = index
        return best

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef inline int32_t _full_scan(self, _Picker picker, Loads loads) noexcept:
        # Envoy unweightedHostPickFullScan: the least loaded, ties by reservoir sampling.
        cdef int32_t index, best = picker.pickable[0]
        cdef uint64_t tied = 1
        cdef Py_ssize_t j
        for j in range(1, picker.n):
            index = picker.pickable[j]
            if loads.active[index] < loads.active[best]:
                best = index
                tied = 1
            elif loads.active[index] == loads.active[best]:
                tied += 1
                if _below(&self._state, tied) == 0:
                    best = index
        return best

    def release(self, endpoint):
        """A connection to endpoint has ended: one active connection less; O(1)."""
        loads_release(self._loads, endpoint)

    cdef int _count(self, Py_ssize_t index) except -1:
        return loads_add_checked(self._loads, index)

    def _active_counts(self):
        """Active connections by endpoint address (for tests and stats)."""
        return self._loads.counts()

    def _check(self):
        Balancer._check(self)
        cdef _Picker picker = self._picker
        cdef Py_ssize_t j, p
        pickable = pickable_indices(self._endpoints, self._skipped)
        self._loads.check(self._endpoints, pickable)
        assert [picker.pickable[j] for j in range(picker.n)] == pickable
        weighted = len({self._endpoints[i].weight for i in pickable}) > 1
        schedule = weighted or (len(pickable) > 0 and self._ramping == 1)
        assert (picker.size != 0) == schedule
        if picker.size:
            size = picker.size
            for j in range(picker.n):
                if not self._ramping:
                    assert picker.inverse[pickable[j]] == 1.0 / self._endpoints[pickable[j]].weight
                assert picker.leaf_of[size + j] == j
                assert _deadline(picker.node[size + j]) >= picker.now
                assert <uint64_t>picker.node[size + j] < picker.order
            for j in range(picker.n, size):
                assert picker.node[size + j] == EMPTY_KEY
            for p in range(1, size):
                child = 2 * p if picker.node[2 * p] <= picker.node[2 * p + 1] else 2 * p + 1
                assert key_to_int(picker.node[p]) == key_to_int(picker.node[child])
                assert picker.leaf_of[p] == picker.leaf_of[child]
