# The face every compiled balancer shares.  Mirrors lbcore/_pure/balancer.py `Balancer`;
# read that file for the contract.  Nothing here is on the per-pick path except
# _hash_for_pick (and _note_pick, in panic or while an endpoint ramps up); subclasses
# override pick() with their own fast path.

cimport cython
from cpython.array cimport array, clone
from libc.stdint cimport uint64_t

from lbcore._fast.hashing cimport SEED, hash_key, xxh64_u64

from lbcore._shared.endpoint_state import (
    check_endpoints,
    endpoint_key,
    no_endpoints_error,
    pickable_indices,
    surviving_failures,
)
from lbcore._shared.key_buffers import buffer_keys
from lbcore._shared.lease import Lease
from lbcore._shared.panic import NO_MARKS, check_panic_threshold, in_panic

__all__ = ["Balancer"]

cdef array _INDEX_ARRAY = array("i")


cdef class Balancer:
    """Base of every compiled balancer; not used on its own."""

    scheduler = ""

    def __init__(self, endpoints=(), *, panic_threshold=None, ramp=None):
        self._panic_threshold = check_panic_threshold(panic_threshold)
        self._ramp = ramp
        self._endpoints = ()
        self._failed = frozenset()
        self._skipped = frozenset()
        self._panic = self._ramping = self._note_picks = False
        self._panic_picks = 0
        self.update(endpoints)

    @property
    def endpoints(self):
        """All endpoints, in the order given, including those not taking connections."""
        return self._endpoints

    @property
    def needs_key(self):
        """Whether pick() needs a key (hash schedulers)."""
        return self._needs_key

    def update(self, endpoints):
        """Replace the endpoint set; survivors keep load state and failure marks."""
        endpoints = check_endpoints(endpoints)
        failed = surviving_failures(self._failed, endpoints)
        if self._ramp is not None:
            self._ramp.track(endpoints)
        self._publish(endpoints, failed)
        self._endpoints = endpoints
        self._failed = failed

    @property
    def panic_threshold(self):
        """The panic threshold in percent (``None``: off)."""
        return self._panic_threshold

    @property
    def panic(self):
        """Whether fewer than `panic_threshold` percent of the endpoints that take new
        connections are healthy, so that picks ignore the failure marks."""
        return self._panic

    @property
    def panic_picks(self):
        """Picks made in panic (Envoy's ``lb_healthy_panic``), since construction."""
        return self._panic_picks

    @property
    def slow_start(self):
        """The slow start window in seconds (``None``: off)."""
        return None if self._ramp is None else self._ramp.window

    cdef int _publish(self, tuple endpoints, frozenset failed) except -1:
        # Panic and the ramps are decided here, once per change, not per pick.
        cdef bint panic = in_panic(endpoints, failed, self._panic_threshold)
        skipped = NO_MARKS if panic else failed
        self._rebuild(endpoints, pickable_indices(endpoints, skipped))
        self._skipped = skipped
        self._panic = panic
        self._ramping = self._ramp is not None and bool(self._ramp.started)
        self._note_picks = panic or self._ramping
        return 0

    def _ramp_factors(self):
        """The factor of each endpoint ramping up now, by address (tests and stats)."""
        return {} if self._ramp is None else self._ramp.ramping()

    cdef object _ramped(self, tuple endpoints, list pickable, list weights):
        # The weights of pickable while some endpoint ramps up, else None.
        return None if self._ramp is None else self._ramp.weights(endpoints, pickable, weights)

    cdef int _note_pick(self) except -1:
        # Before a pick in panic or while an endpoint ramps: count it, refresh the ramp.
        if self._panic:
            self._panic_picks += 1
        if self._ramping and self._ramp.clock() >= self._ramp.refresh_at:
            self._publish(self._endpoints, self._failed)
        return 0

    def mark_failed(self, endpoint):
        """Passive health: no new picks for ``endpoint`` until mark_healthy()."""
        self._set_failed(endpoint, True)

    def mark_healthy(self, endpoint):
        """Undo mark_failed(); unknown endpoints are ignored."""
        self._set_failed(endpoint, False)

    def _set_failed(self, endpoint, bint failed):
        key = endpoint_key(endpoint)
        if failed == (key in self._failed) or key not in {endpoint_key(e) for e in self._endpoints}:
            return
        marks = self._failed | {key} if failed else self._failed - {key}
        if not failed and self._ramp is not None:
            self._ramp.restart(key)  # back from a failure: it ramps up again (Envoy)
        self._publish(self._endpoints, marks)
        self._failed = marks

    def release(self, endpoint):
        """A connection picked earlier has ended (counted by lc/wlc; no-op here)."""

    def lease(self, key=None):
        """Pick now and release when the ``with`` block ends."""
        return Lease(self, self.pick(key))

    def pick(self, key=None):
        """The endpoint for a new connection; raises NoEndpointsError if none can take it."""
        cdef Py_ssize_t index = self._pick_index(self._hash_for_pick(key))
        if index < 0:
            raise self._no_endpoints()
        return self._endpoints[index]

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick_many(self, keys):
        """Endpoint indices (into endpoints) for a batch of keys, as array('i')."""
        cdef const uint64_t[::1] int_keys
        cdef array result
        cdef int[::1] out
        cdef Py_ssize_t j, n, index
        cdef uint64_t h = 0
        view = buffer_keys(keys)
        if view is not None:
            int_keys = view
            n = int_keys.shape[0]
            result = clone(_INDEX_ARRAY, n, zero=False)
            out = result
            for j in range(n):
                if self._needs_key:
                    h = xxh64_u64(int_keys[j], SEED)
                index = self._pick_index(h)
                if index < 0:
                    raise self._no_endpoints()
                out[j] = <int>index
            return result
        n = len(keys)
        result = clone(_INDEX_ARRAY, n, zero=False)
        out = result
        for j, key in enumerate(keys):
            index = self._pick_index(self._hash_for_pick(key))
            if index < 0:
                raise self._no_endpoints()
            out[j] = <int>index
        return result

    cdef uint64_t _hash_for_pick(self, object key) except? 0:
        if key is None:
            if self._needs_key:
                raise TypeError(f"{self.scheduler} needs a key (a client address, a cookie value)")
            return 0
        return hash_key(key) if self._needs_key else 0

    cdef object _no_endpoints(self):
        return no_endpoints_error(self.scheduler, self._endpoints, self._failed)

    cdef int _rebuild(self, tuple endpoints, list pickable) except -1:
        raise NotImplementedError

    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        raise NotImplementedError

    cdef int _count(self, Py_ssize_t index) except -1:
        return 0

    def _check(self):
        """Assert the invariants every balancer keeps (tests call this after each step)."""
        assert self._failed <= {endpoint_key(e) for e in self._endpoints}
        self._check_panic()

    def _check_panic(self):
        assert self._panic == in_panic(self._endpoints, self._failed, self._panic_threshold)
        assert self._skipped == (NO_MARKS if self._panic else self._failed)
        assert self._note_picks == (self._panic or self._ramping)

    def __repr__(self):
        return f"{type(self).__name__}({list(self._endpoints)!r})"
