# Round robin (rr).  Mirrors lbcore/_pure/rr.py `RoundRobin`, pick for pick.
#
# IPVS rr walks the destination list from a cursor to the next one with weight > 0
# (ip_vs_rr.c).  The walk is precomputed at update time: the picker is the cycle of
# pickable endpoints, so a pick is one tuple read and a cursor step, with no division
# on the hot path.

cimport cython

from lbcore._fast.balancer cimport Balancer
from libc.stdint cimport uint64_t

import random

from lbcore._shared.endpoint_state import pickable_indices

__all__ = ["RoundRobin", "Cycle"]


@cython.final
cdef class Cycle:
    """The immutable rr picker: pickable endpoints and their indices, in list order."""

    def __cinit__(self, tuple endpoints, tuple indices):
        self.endpoints = endpoints
        self.indices = indices
        self.n = len(endpoints)


@cython.final
cdef class RoundRobin(Balancer):
    """Round robin over endpoints with weight > 0 (ipvsadm ``rr``).

    Over any ``k * n`` consecutive picks each of the ``n`` pickable endpoints gets
    exactly ``k``.  `pick` is O(1).

    ``panic_threshold`` (percent; None: off): while fewer endpoints than that are healthy,
    picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> b = RoundRobin([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)], rng=random.Random(1))
    >>> sorted(b.pick().ip for _ in range(2))
    ['10.0.0.1', '10.0.0.2']
    """

    scheduler = "rr"
    cdef Cycle _cycle
    cdef Py_ssize_t _cursor

    def __init__(self, endpoints=(), *, rng=None, panic_threshold=None):
        self._cycle = Cycle((), ())
        # A free-running position; reduced modulo the cycle length on each rebuild.
        self._cursor = (rng if rng is not None else random.Random()).getrandbits(32)
        Balancer.__init__(self, endpoints, panic_threshold=panic_threshold)

    cdef int _rebuild(self, tuple endpoints, list pickable) except -1:
        cdef Cycle cycle = Cycle(tuple([endpoints[i] for i in pickable]), tuple(pickable))
        if cycle.n:
            self._cursor %= cycle.n
        self._cycle = cycle
        return 0

    cdef inline Py_ssize_t _advance(self, Py_ssize_t n) noexcept:
        cdef Py_ssize_t i = self._cursor  # below n: _rebuild reduced it
        self._cursor = i + 1 if i + 1 < n else 0
        return i

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick(self, key=None):
        """The next endpoint in the cycle; O(1).  key is ignored."""
        if self._note_picks:
            self._note_pick()
        cdef Cycle cycle = self._cycle
        if cycle.n == 0:
            raise self._no_endpoints()
        return cycle.endpoints[self._advance(cycle.n)]

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        if self._note_picks:
            self._note_pick()
        cdef Cycle cycle = self._cycle
        if cycle.n == 0:
            return -1
        return <Py_ssize_t>cycle.indices[self._advance(cycle.n)]

    def _check(self):
        Balancer._check(self)
        assert list(self._cycle.indices) == pickable_indices(self._endpoints, self._skipped)
        assert self._cycle.endpoints == tuple([self._endpoints[i] for i in self._cycle.indices])
        assert not self._cycle.n or 0 <= self._cursor < self._cycle.n
