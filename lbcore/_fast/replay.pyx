# The simulator's event loop for balancers whose picks depend on time: lc, wlc, p2c,
# bounded loads, Affinity.  Mirrors lbcore/_pure/replay.py `HeldReplay`, pick for
# pick and release for release; read that file for the order of things.
#
# Per request the loop stays in C except for one call: the balancer's C-level
# _pick_index (lbcore/_fast/balancer.pxd) with the key's precomputed hash, and the
# release of every connection that ended before it through the balancer's release(),
# which has no C-level face (one Python call per connection, ~40 ns).  Releases come in
# order of end time from an index sorted once for every scheduler (numpy's stable
# argsort in lbcore.simulate), so the loop keeps no heap.

cimport cython
from cpython.array cimport array, clone
from libc.stdint cimport int32_t, int64_t, uint64_t

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.hashing cimport hash_key

__all__ = ["SimClock", "HeldReplay", "key_hashes"]

cdef array _HASH_ARRAY = array("Q")


@cython.final
cdef class SimClock:
    """The simulated time in seconds, as a clock for Affinity(clock=...)."""

    cdef public double now

    def __init__(self, double now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def key_hashes(keys):
    """lbcore.key_hash of every key, as array('Q'); keys is a sequence of str/bytes/int."""
    cdef Py_ssize_t j, n = len(keys)
    cdef array result = clone(_HASH_ARRAY, n, zero=False)
    cdef uint64_t* out = <uint64_t*>result.data.as_ulonglongs
    for j in range(n):
        out[j] = hash_key(keys[j])
    return result


@cython.final
cdef class HeldReplay:
    """Replays requests through one balancer in time order; see lbcore._pure.replay."""

    cdef Balancer balancer
    cdef object release
    cdef SimClock clock
    cdef const uint64_t[::1] hashes
    cdef const int32_t[::1] key_ids
    cdef const double[::1] arrivals
    cdef const double[::1] ends
    cdef const int64_t[::1] end_order
    cdef int32_t[::1] placed
    cdef readonly Py_ssize_t picked
    cdef readonly Py_ssize_t released
    cdef Py_ssize_t universe        # len(endpoint_of) at the last run_until: it only grows

    def __init__(self, balancer, hashes, key_ids, arrivals, ends, end_order, placed, clock=None):
        if not isinstance(balancer, Balancer):
            raise TypeError(
                f"HeldReplay of lbcore._fast needs a compiled balancer, not {type(balancer).__name__}"
            )
        if clock is not None and not isinstance(clock, SimClock):
            raise TypeError(f"clock must be a SimClock of lbcore._fast, not {type(clock).__name__}")
        self.balancer = <Balancer>balancer
        self.release = balancer.release
        self.clock = clock
        self.hashes = hashes
        self.key_ids = key_ids
        self.arrivals = arrivals
        self.ends = ends
        self.end_order = end_order
        self.placed = placed
        cdef Py_ssize_t n = self.arrivals.shape[0], k
        if not (self.key_ids.shape[0] == self.ends.shape[0] == self.end_order.shape[0]
                == self.placed.shape[0] == n):
            raise ValueError("key_ids, arrivals, ends, end_order and placed need one entry per request")
        # Checked once here, so that the loop may index without checks.
        for k in range(n):
            if not 0 <= self.key_ids[k] < self.hashes.shape[0]:
                raise IndexError(f"key_ids[{k}] = {self.key_ids[k]} is not an index into hashes")
            if not 0 <= self.end_order[k] < n:
                raise IndexError(f"end_order[{k}] = {self.end_order[k]} is not a request index")
        self.picked = 0
        self.released = 0
        self.universe = 0

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def run_until(self, double time, uid_of, list endpoint_of):
        """Place every request arriving before time; then release what ended by time."""
        cdef const int32_t[::1] uids = uid_of
        cdef Py_ssize_t n = self.arrivals.shape[0], i, index, k
        cdef double arrival
        if len(endpoint_of) < self.universe:
            raise ValueError("endpoint_of lost entries: connections placed earlier need theirs")
        self.universe = len(endpoint_of)
        for k in range(uids.shape[0]):
            if not 0 <= uids[k] < len(endpoint_of):
                raise IndexError(f"uid_of[{k}] = {uids[k]} is not an index into endpoint_of")
        while self.picked < n and self.arrivals[self.picked] < time:
            i = self.picked
            arrival = self.arrivals[i]
            self._release_until(arrival, endpoint_of)
            if self.clock is not None:
                self.clock.now = arrival
            index = self.balancer._pick_index(self.hashes[self.key_ids[i]])
            if index >= uids.shape[0]:
                raise IndexError(f"endpoint index {index} has no entry in uid_of")
            self.placed[i] = uids[index] if index >= 0 else -1
            self.picked = i + 1
        self._release_until(time, endpoint_of)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int _release_until(self, double time, list endpoint_of) except -1:
        # Sorted by (end, request): the first entry not yet placed, or ending after
        # time, stops the walk (one not placed ends at its own arrival, which is >= time).
        cdef int64_t j
        cdef int32_t uid
        while self.released < self.picked:
            j = self.end_order[self.released]
            if j >= self.picked or self.ends[j] > time:
                return 0
            self.released += 1
            uid = self.placed[j]
            if uid >= 0:
                self.release(endpoint_of[uid])
        return 0
