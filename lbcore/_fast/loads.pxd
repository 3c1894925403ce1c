# Active connections per endpoint and the bound of bounded loads, cimported by the
# compiled p2c (least_request.pyx), ring (ring.pyx) and the hash balancers
# (hash_balancer.pyx, for mh with balance_factor).  Mirrors lbcore/_pure/loads.py `Loads`;
# read that file for the rule and its sources.
#
# The per-pick functions are inline here, so a pick never makes a Python call or an
# indirect one: has_room is two 128-bit products and a compare, probe a walk over the
# picker's resolved positions.

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef extern from *:
    """
    typedef unsigned __int128 lbcore_u128;
    """
    # Products of counts and weights (has_room).
    ctypedef unsigned long long u128 "lbcore_u128"

# IPVS keeps activeconns in an atomic_t; lbcore refuses to count past the same bound
# (lbcore._pure.lc.MAX_ACTIVE).
cdef enum:
    LOADS_MAX_ACTIVE = 2147483647


cdef struct Slot:
    PyObject* endpoint   # NULL: an empty slot
    Py_ssize_t index


@cython.final
cdef class Loads:
    cdef readonly str scheduler
    cdef readonly tuple endpoints
    cdef dict index_of           # (ip, port) -> index
    cdef Py_ssize_t n
    cdef uint32_t* active        # n counts, in endpoint order
    cdef uint64_t* share         # n weights: the endpoint's if pickable, else 0
    cdef readonly uint64_t total       # active connections of the pickable endpoints
    cdef readonly uint64_t weight_sum  # weight of the pickable endpoints
    cdef uint64_t hundred_weight_sum   # 100 * weight_sum, the left side's constant
    cdef Slot* slots             # Endpoint object -> index: open addressing, linear probing
    cdef uint64_t slot_mask
    cdef int slot_shift

    # The index of endpoint (by object, else by address), or -1; TypeError if no Endpoint.
    cdef Py_ssize_t find(self, object endpoint) except -2
    cdef int overflow(self, Py_ssize_t index) except -1


cdef inline int loads_add(Loads loads, Py_ssize_t index) except -1:
    """One connection more on endpoints[index]."""
    if loads.active[index] == LOADS_MAX_ACTIVE:
        return loads.overflow(index)
    loads.active[index] += 1
    if loads.share[index]:
        loads.total += 1
    return 0


cdef inline void loads_remove(Loads loads, Py_ssize_t index) noexcept:
    """One connection less on endpoints[index], never below zero."""
    if loads.active[index]:
        loads.active[index] -= 1
        if loads.share[index]:
            loads.total -= 1


cdef inline int loads_release(Loads loads, object endpoint) except -1:
    """A balancer's release(endpoint): one connection less on it; ignored if not in the set."""
    cdef Py_ssize_t index = loads.find(endpoint)
    if index >= 0:
        loads_remove(loads, index)
    return 0


cdef inline int loads_add_checked(Loads loads, Py_ssize_t index) except -1:
    """loads_add for an index from outside (Affinity's sessions): IndexError if out of range."""
    if not 0 <= index < loads.n:
        raise IndexError(f"endpoint index {index} out of range")
    return loads_add(loads, index)


cdef inline bint has_room(Loads loads, Py_ssize_t index, uint64_t percent) noexcept:
    """a == 0 or a * 100 * W < p * (A + 1) * w: endpoints[index] is below its bound."""
    # Two 64 x 64 -> 128-bit products: weights below 2**31, fewer than 2**20 percent.
    cdef uint32_t active = loads.active[index]
    return active == 0 or (
        <u128>active * loads.hundred_weight_sum
        < <u128>(loads.total + 1) * (percent * loads.share[index])
    )


cdef inline Py_ssize_t probe(Loads loads, const int32_t* resolved, uint64_t size,
                             uint64_t position, uint64_t percent) except -2:
    """The first endpoint with room from position on, cyclically, in resolved."""
    cdef int32_t index, last = -1
    cdef uint64_t step
    for step in range(size):
        index = resolved[position]
        if index != last:
            if has_room(loads, index, percent):
                return index
            last = index
        position += 1
        if position == size:
            position = 0
    raise AssertionError("bounded loads: no endpoint below its bound")
