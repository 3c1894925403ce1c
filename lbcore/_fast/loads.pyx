# Active connections per endpoint and the bound of bounded loads.  Mirrors
# lbcore/_pure/loads.py `Loads`, count for count; the per-pick parts (add, remove,
# has_room, probe) are inline in loads.pxd.
#
# find() is release()'s lookup, as in lc.pyx: a map from the Endpoint object's address
# (pick returns the objects of the endpoint tuple, so release usually gets one of them
# back), so a release hashes nothing in Python.  Another object for the same ip:port
# (one from before an update, or built by the caller) falls back to a dict by (ip, port).

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.ref cimport PyObject
from libc.stdint cimport uint64_t, uintptr_t

from lbcore._shared.endpoint_state import endpoint_key
from lbcore.models import Endpoint

__all__ = ["Loads"]

# Fibonacci hashing of object addresses: the top bits of address * 2**64/phi.
cdef uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL


@cython.final
cdef class Loads:
    """Active connections by endpoint, the release lookup, and the bound's totals;
    lbcore._pure.loads.Loads."""

    def __cinit__(self, str scheduler, tuple endpoints, pickable, Loads before):
        cdef Py_ssize_t i, j, capacity = 8
        cdef uint64_t h
        self.scheduler = scheduler
        self.endpoints = endpoints
        self.n = len(endpoints)
        self.index_of = {endpoint_key(e): i for i, e in enumerate(endpoints)}
        self.slot_shift = 61
        while capacity < 2 * self.n:
            capacity <<= 1
            self.slot_shift -= 1
        self.slot_mask = capacity - 1
        self.active = <uint32_t*>PyMem_Calloc(self.n + 1, sizeof(uint32_t))
        self.share = <uint64_t*>PyMem_Calloc(self.n + 1, sizeof(uint64_t))
        self.slots = <Slot*>PyMem_Calloc(capacity, sizeof(Slot))
        if self.active == NULL or self.share == NULL or self.slots == NULL:
            raise MemoryError()
        for i in range(self.n):
            # Counts follow the address; an endpoint new to the set starts at 0.
            if before is not None:
                j = before.index_of.get(endpoint_key(endpoints[i]), -1)
                if j >= 0:
                    self.active[i] = before.active[j]
            h = (<uint64_t><uintptr_t><PyObject*>endpoints[i] * GOLDEN) >> self.slot_shift
            while self.slots[h].endpoint != NULL:
                h = (h + 1) & self.slot_mask
            self.slots[h].endpoint = <PyObject*>endpoints[i]
            self.slots[h].index = i
        for i in pickable:
            self.share[i] = endpoints[i].weight
            self.weight_sum += self.share[i]
            self.total += self.active[i]
        self.hundred_weight_sum = 100 * self.weight_sum

    def __dealloc__(self):
        PyMem_Free(self.active)
        PyMem_Free(self.share)
        PyMem_Free(self.slots)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t find(self, object endpoint) except -2:
        cdef PyObject* address = <PyObject*>endpoint
        cdef uint64_t h = (<uint64_t><uintptr_t>address * GOLDEN) >> self.slot_shift
        while self.slots[h].endpoint != NULL:
            if self.slots[h].endpoint == address:
                return self.slots[h].index
            h = (h + 1) & self.slot_mask
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"release() takes an Endpoint, not {type(endpoint).__name__}")
        return self.index_of.get(endpoint_key(endpoint), -1)

    cdef int overflow(self, Py_ssize_t index) except -1:
        raise OverflowError(
            f"{self.scheduler}: {self.endpoints[index].address} has {LOADS_MAX_ACTIVE} active"
            " connections; release() the ones that ended"
        )

    def count_of(self, key):
        """The active connections of the endpoint at address key (0 if unknown)."""
        cdef Py_ssize_t i = self.index_of.get(key, -1)
        return 0 if i < 0 else self.active[i]

    def has_room(self, Py_ssize_t index, uint64_t percent):
        """Whether endpoints[index] is below its bound for a factor of percent / 100."""
        if not 0 <= index < self.n:
            raise IndexError(f"endpoint index {index} out of range")
        return has_room(self, index, percent)

    def counts(self):
        """Active connections by endpoint address (for tests and stats)."""
        return {endpoint_key(e): self.active[i] for i, e in enumerate(self.endpoints)}

    def check(self, tuple endpoints, pickable):
        """Assert the invariants: built from these endpoints, totals that add up."""
        cdef Py_ssize_t i
        assert self.endpoints is endpoints
        assert self.index_of == {endpoint_key(e): i for i, e in enumerate(endpoints)}
        usable = set(pickable)
        for i in range(self.n):
            assert self.active[i] <= LOADS_MAX_ACTIVE
            assert self.find(endpoints[i]) == i
            assert self.share[i] == (endpoints[i].weight if i in usable else 0)
        assert self.total == sum(self.active[i] for i in pickable)
        assert self.weight_sum == sum(self.share[i] for i in range(self.n))
