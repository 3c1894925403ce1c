# Least connection (lc, wlc).  Mirrors lbcore/_pure/lc.py `LeastConnection`, pick for pick.
#
# IPVS picks the destination with the fewest active connections (ip_vs_lc.c), or the
# least active/weight compared by cross-multiplication (ip_vs_wlc.c); ties go to the
# first in list order.  The pure twin orders (active/weight, index) in a SortedList.
# Here every pickable endpoint's load is one exact 128-bit integer in a winner tree
# (_tournament.pxd), so the least loaded endpoint is the tree's minimum:
#
#     key = floor(active * 2**62 / weight) << 32 | index
#
# The scaled load orders the fractions active/weight exactly: two different fractions
# with weights below 2**31 differ by at least 1/(w1*w2) > 2**-62, so their scaled
# floors differ, and equal fractions scale to equal floors, where the index breaks the
# tie as IPVS does.  With active < 2**31 the scaled load fits in 93 bits.  One more or
# one less connection moves it by floor(2**62 / weight) plus a carry from the remainder,
# so a pick or a release divides nothing.  lc is the same with every weight taken as 1.
#
# release() finds the endpoint's index through a map from the Endpoint object's address
# (pick returns the objects of the endpoint tuple, so release usually gets one of them
# back): no Python hashing on the hot path.  Another object for the same ip:port (one
# from before an update, or built by the caller) falls back to a dict by (ip, port).
#
# Slow start: while an endpoint ramps up, every pickable endpoint's load is divided by
# its ramped weight (lbcore._shared.slow_start; lc takes every weight as 1 first), so
# the same tree orders active/ramped weight exactly; the weights stay below 2**31.

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.ref cimport PyObject
from libc.stdint cimport uint32_t, uint64_t, uintptr_t

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.tournament cimport (
    EMPTY_KEY,
    key_t,
    key_to_int,
    tree_build,
    tree_replay,
    tree_size,
)

from lbcore._shared.endpoint_state import endpoint_key, pickable_indices
from lbcore._shared.slow_start import DEFAULT_AGGRESSION, DEFAULT_MIN_WEIGHT, make_slow_start
from lbcore.errors import ConfigError
from lbcore.models import Endpoint

__all__ = ["LeastConnection", "WeightedLeastConnection", "MAX_ACTIVE"]

# IPVS keeps activeconns in an atomic_t; so does lbcore (lbcore._pure.lc.MAX_ACTIVE).
MAX_ACTIVE = 2**31 - 1
cdef uint32_t _MAX_ACTIVE = MAX_ACTIVE
# 2**62: the scale of the load in a key (see above).
cdef key_t SCALE = (<key_t>1) << 62
# Fibonacci hashing of object addresses: the top bits of address * 2**64/phi.
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL


cdef struct Load:
    uint32_t active      # picked or counted, minus released
    Py_ssize_t leaf      # the node of this endpoint's leaf; 0 if it takes no new connection
    uint64_t weight      # the weight its load is divided by (1 for lc)
    uint64_t step        # SCALE // weight: what one connection adds to the scaled load
    uint64_t step_rem    # SCALE % weight
    uint64_t rem         # active * SCALE % weight: the carry pending in the scaled load


cdef struct Slot:
    PyObject* endpoint   # NULL: an empty slot
    Py_ssize_t index


@cython.final
cdef class _Loads:
    """The lc/wlc picker and the counts it orders by, swapped in whole by _rebuild."""

    cdef str scheduler
    cdef tuple endpoints
    cdef dict index_of           # (ip, port) -> index
    cdef Py_ssize_t n            # len(endpoints)
    cdef Py_ssize_t size         # leaf places in the tree
    cdef Load* load              # n entries, in endpoint order
    cdef key_t* node             # 2 * size entries; node[1] is the least loaded
    cdef Slot* slots             # the identity map: open addressing, linear probing
    cdef uint64_t slot_mask
    cdef int slot_shift

    def __dealloc__(self):
        PyMem_Free(self.load)
        PyMem_Free(self.node)
        PyMem_Free(self.slots)

    cdef int build(self, tuple endpoints, list pickable, list weights, str scheduler, _Loads before) except -1:
        # Mirrors LeastConnection._rebuild of the pure twin.
        cdef Py_ssize_t i, j, capacity = 8
        cdef Load* load
        cdef key_t scaled
        cdef uint64_t h
        self.scheduler = scheduler
        self.endpoints = endpoints
        self.n = len(endpoints)
        self.index_of = {endpoint_key(e): i for i, e in enumerate(endpoints)}
        self.size = tree_size(len(pickable))
        self.slot_shift = 61
        while capacity < 2 * self.n:
            capacity <<= 1
            self.slot_shift -= 1
        self.slot_mask = capacity - 1
        self.load = <Load*>PyMem_Calloc(self.n + 1, sizeof(Load))
        self.node = <key_t*>PyMem_Calloc(2 * self.size, sizeof(key_t))
        self.slots = <Slot*>PyMem_Calloc(capacity, sizeof(Slot))
        if self.load == NULL or self.node == NULL or self.slots == NULL:
            raise MemoryError()
        for i in range(self.n):
            # Counts follow the address; an endpoint new to the set starts at 0.
            j = before.index_of.get(endpoint_key(endpoints[i]), -1)
            if j >= 0:
                self.load[i].active = before.load[j].active
            h = (<uint64_t><uintptr_t><PyObject*>endpoints[i] * GOLDEN) >> self.slot_shift
            while self.slots[h].endpoint != NULL:
                h = (h + 1) & self.slot_mask
            self.slots[h].endpoint = <PyObject*>endpoints[i]
            self.slots[h].index = i
        for j in range(self.size):
            self.node[self.size + j] = EMPTY_KEY
        for j, i in enumerate(pickable):
            load = &self.load[i]
            load.leaf = self.size + j
            load.weight = weights[j]
            load.step = <uint64_t>(SCALE // load.weight)
            load.step_rem = <uint64_t>(SCALE % load.weight)
            scaled = <key_t>load.active * SCALE
            load.rem = <uint64_t>(scaled % load.weight)
            self.node[load.leaf] = (scaled // load.weight) << 32 | <key_t>i
        tree_build(self.node, self.size)
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t find(self, object endpoint) except -2:
        """The index of endpoint, or -1 if it is not in the set."""
        cdef PyObject* address = <PyObject*>endpoint
        cdef uint64_t h = (<uint64_t><uintptr_t>address * GOLDEN) >> self.slot_shift
        while self.slots[h].endpoint != NULL:
            if self.slots[h].endpoint == address:
                return self.slots[h].index
            h = (h + 1) & self.slot_mask
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"release() takes an Endpoint, not {type(endpoint).__name__}")
        return self.index_of.get(endpoint_key(endpoint), -1)

    cdef inline Py_ssize_t pick(self) except -2:
        cdef key_t least = self.node[1]
        cdef Py_ssize_t index
        if least == EMPTY_KEY:
            return -1
        index = <Py_ssize_t><uint32_t>least
        self.add(index)
        return index

    cdef inline int add(self, Py_ssize_t index) except -1:
        cdef Load* load = &self.load[index]
        cdef uint64_t step = load.step
        if load.active == _MAX_ACTIVE:
            raise OverflowError(
                f"{self.scheduler}: {self.endpoints[index].address} has {MAX_ACTIVE} active"
                " connections; release() the ones that ended"
            )
        load.active += 1
        if load.leaf:
            load.rem += load.step_rem
            if load.rem >= load.weight:
                load.rem -= load.weight
                step += 1
            self.node[load.leaf] += <key_t>step << 32
            tree_replay(self.node, load.leaf)
        return 0

    cdef inline void remove(self, Py_ssize_t index) noexcept:
        cdef Load* load = &self.load[index]
        cdef uint64_t step = load.step
        if load.active == 0:
            return
        load.active -= 1
        if load.leaf:
            if load.rem < load.step_rem:
                load.rem += load.weight
                step += 1
            load.rem -= load.step_rem
            self.node[load.leaf] -= <key_t>step << 32
            tree_replay(self.node, load.leaf)


cdef _Loads _NO_LOADS = _Loads.__new__(_Loads)
_NO_LOADS.build((), [], [], "lc", _NO_LOADS)


# Not final: WeightedLeastConnection is this class with weighted=True.
cdef class LeastConnection(Balancer):
    """Fewest active connections first (ipvsadm ``lc``); ``weighted=True`` gives ``wlc``.

    Ties go to the first endpoint in list order, as in IPVS.  `pick` and `release` are
    O(log n).

    ``slow_start`` (seconds; None or 0: off) ramps an endpoint added by `update` or
    healthy again after `mark_failed` up over that window by Envoy's rule: its weight (lc:
    1) times ``max((t / window) ** (1 / slow_start_aggression), slow_start_min_weight /
    100)``; the endpoints given at construction do not ramp (all alike: no share would
    change).  The weights are refreshed on a pick at most every 1 % of the window
    (``clock``: monotonic seconds).  ``panic_threshold`` (percent; None: off): while
    fewer endpoints than that are healthy, picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> a, b = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    >>> lc = LeastConnection([a, b])
    >>> [lc.pick().ip for _ in range(3)]
    ['10.0.0.1', '10.0.0.2', '10.0.0.1']
    >>> lc.release(a); lc.release(a)
    >>> lc.pick().ip
    '10.0.0.1'
    """

    cdef bint _weighted
    cdef _Loads _loads

    def __init__(
        self, endpoints=(), *, weighted=False, slow_start=None,
        slow_start_aggression=DEFAULT_AGGRESSION, slow_start_min_weight=DEFAULT_MIN_WEIGHT,
        clock=None, panic_threshold=None,
    ):
        if type(weighted) is not bool:
            raise ConfigError("weighted", weighted, "must be true or false")
        ramp = make_slow_start(slow_start, slow_start_aggression, slow_start_min_weight, clock)
        self._weighted = weighted
        self._loads = _NO_LOADS
        Balancer.__init__(self, endpoints, panic_threshold=panic_threshold, ramp=ramp)

    @property
    def scheduler(self):
        """"wlc" when weighted, else "lc"."""
        return "wlc" if self._weighted else "lc"

    cdef int _rebuild(self, tuple endpoints, list pickable) except -1:
        cdef _Loads loads = _Loads.__new__(_Loads)
        own = [endpoints[i].weight if self._weighted else 1 for i in pickable]
        ramped = self._ramped(endpoints, pickable, own)
        loads.build(endpoints, pickable, own if ramped is None else ramped, self.scheduler, self._loads)
        self._loads = loads
        return 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick(self, key=None):
        """The least loaded endpoint, now counted one connection more; O(log n)."""
        if self._note_picks:
            self._note_pick()
        cdef _Loads loads = self._loads
        cdef Py_ssize_t index = loads.pick()
        if index < 0:
            raise self._no_endpoints()
        return loads.endpoints[index]

    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        if self._note_picks:
            self._note_pick()
        return self._loads.pick()

    def release(self, endpoint):
        """A connection to endpoint has ended: one active connection less; O(log n)."""
        cdef _Loads loads = self._loads
        cdef Py_ssize_t index = loads.find(endpoint)
        if index >= 0:
            loads.remove(index)

    cdef int _count(self, Py_ssize_t index) except -1:
        cdef _Loads loads = self._loads
        if not 0 <= index < loads.n:
            raise IndexError(f"endpoint index {index} out of range")
        return loads.add(index)

    def _active_counts(self):
        """Active connections by endpoint address (for tests and stats)."""
        cdef _Loads loads = self._loads
        return {endpoint_key(e): loads.load[i].active for i, e in enumerate(loads.endpoints)}

    def _check(self):
        Balancer._check(self)
        cdef _Loads loads = self._loads
        cdef Py_ssize_t i, j, p
        cdef Load* load
        assert loads.endpoints is self._endpoints
        assert loads.index_of == {endpoint_key(e): i for i, e in enumerate(self._endpoints)}
        pickable = pickable_indices(self._endpoints, self._skipped)
        leaves = {}
        for i in range(loads.n):
            load = &loads.load[i]
            assert load.active <= _MAX_ACTIVE
            assert loads.find(self._endpoints[i]) == i
            if load.leaf:
                leaves[i] = load.leaf
                weight = load.weight
                if not self._ramping:
                    assert weight == (self._endpoints[i].weight if self._weighted else 1)
                scaled = (<object>load.active) << 62
                assert key_to_int(loads.node[load.leaf]) == (scaled // weight) << 32 | i
                assert load.rem == scaled % weight
        assert leaves == {i: loads.size + j for j, i in enumerate(pickable)}
        for j in range(len(pickable), loads.size):
            assert loads.node[loads.size + j] == EMPTY_KEY
        for p in range(1, loads.size):
            assert key_to_int(loads.node[p]) == min(
                key_to_int(loads.node[2 * p]), key_to_int(loads.node[2 * p + 1])
            )


@cython.final
cdef class WeightedLeastConnection(LeastConnection):
    """Least active/weight first (ipvsadm ``wlc``): ``LeastConnection(weighted=True)``.

    Loads are compared by cross-multiplication, ties go to the first endpoint in list
    order (IPVS ``wlc``).  `pick` and `release` are O(log n).

    >>> from lbcore import Endpoint
    >>> WeightedLeastConnection([Endpoint("10.0.0.1", 80)]).scheduler
    'wlc'
    """

    def __init__(self, endpoints=(), **options):
        LeastConnection.__init__(self, endpoints, weighted=True, **options)
