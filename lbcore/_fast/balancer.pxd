# The compiled balancer base, cimported by every compiled scheduler (and by Affinity,
# which calls _pick_index of the balancer it wraps without a Python call).

from libc.stdint cimport uint64_t


cdef class Balancer:
    cdef tuple _endpoints       # every endpoint, in the order given
    cdef frozenset _failed      # (ip, port) of endpoints marked failed
    cdef frozenset _skipped     # the marks the picker obeys: _failed, or none in panic
    cdef bint _needs_key        # hash schedulers: pick() without a key is an error
    cdef object _panic_threshold  # percent, or None
    cdef bint _panic
    cdef unsigned long long _panic_picks
    cdef object _ramp           # lbcore._shared.slow_start.SlowStart, or None
    cdef bint _ramping          # some endpoint ramps up
    # A pick must first call _note_pick (in panic, or while something ramps): the one
    # flag every pick tests.
    cdef bint _note_picks
    cdef object __weakref__

    cdef int _publish(self, tuple endpoints, frozenset failed) except -1
    cdef object _ramped(self, tuple endpoints, list pickable, list weights)
    cdef int _note_pick(self) except -1

    # Build and publish the picker; raise before changing anything.
    cdef int _rebuild(self, tuple endpoints, list pickable) except -1
    # Index into _endpoints of the next pick, or -1 when nothing can be picked.
    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2
    # A connection was placed on _endpoints[index] without a pick (an affinity hit):
    # lc/wlc count it so that the release() that follows balances; others ignore it.
    cdef int _count(self, Py_ssize_t index) except -1
    cdef uint64_t _hash_for_pick(self, object key) except? 0
    cdef object _no_endpoints(self)
