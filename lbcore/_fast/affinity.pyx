# Sticky sessions with a TTL over any compiled balancer.  Mirrors lbcore/_pure/affinity.py
# `Affinity`, pick for pick; read that file for the semantics and their sources.
#
# A hit stays in C from pick() to the returned endpoint: hash_key (XXH64 of the key),
# the default clock read with clock_gettime(CLOCK_MONOTONIC_COARSE) (4 ns; the precise
# CLOCK_MONOTONIC costs 26 ns and a Python callable 40 ns, and TTLs are whole seconds),
# the probe of one 64-byte bucket of the SessionTable, and the wrapped balancer is only
# told of the placement through its C-level _count, so it never picks on a hit.  A miss
# calls the wrapped balancer's C-level _pick_index with the same key hash, so over
# Maglev a new key lands where the consistent hash puts it.

cimport cython
from libc.stdint cimport int32_t, uint64_t

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.hashing cimport hash_key
from lbcore._fast.session_table cimport SessionTable

from lbcore._shared.endpoint_state import pickable_indices
from lbcore._shared.affinity_options import (
    DEFAULT_MAX_ENTRIES,
    NO_KEY,
    check_clock,
    check_keyed_by_xxh64,
    check_max_entries,
    check_timeout,
    not_same_twin,
    session_remap,
)
from lbcore.models import DEFAULT_AFFINITY_TIMEOUT

__all__ = ["Affinity"]

cdef extern from *:
    """
    #include <time.h>
    #ifdef CLOCK_MONOTONIC_COARSE
    #define LBCORE_SESSION_CLOCK CLOCK_MONOTONIC_COARSE
    #else
    #define LBCORE_SESSION_CLOCK CLOCK_MONOTONIC
    #endif
    static double lbcore_session_clock(void) {
        struct timespec now;
        clock_gettime(LBCORE_SESSION_CLOCK, &now);
        return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
    }
    """
    double session_clock "lbcore_session_clock" () noexcept nogil


@cython.final
cdef class Affinity(Balancer):
    """Sticky sessions with a TTL over any balancer (ClientIP affinity, cookie stickiness).

    ``pick(key)`` returns the endpoint of ``key``'s session if it was used less than
    ``timeout`` seconds ago (1..86400, the Kubernetes range; default 10800 as in
    Kubernetes), refreshing it; otherwise the wrapped ``balancer`` picks and a session is
    stored.  A hit is O(1) and does not pick in the wrapped balancer: lc/wlc are told
    of the placement so that the ``release`` that follows balances.

    Sessions die when their endpoint leaves the set, is quiesced (weight 0), is not
    usable by condition, or is marked failed; every other session survives `update`.
    The wrapped balancer's panic threshold holds here too (`panic`): in panic its picks,
    and so new sessions, may go to endpoints marked failed; a session still dies when
    its endpoint is marked failed, and those made in panic on failed endpoints die
    when the panic ends.
    Over `Maglev` this is consistent-hash affinity with a TTL: new keys follow the
    hash, live sessions keep their endpoint across endpoint-set changes.

    At most ``max_entries`` sessions are held.  When full, a new session evicts the
    least recently used of the next 8 sessions a hand sweeping the table passes (all of
    them, so exact LRU, up to 8 sessions); a hit costs one cache line, with no order of
    last use to relink (lbcore._pure.session_table).  ``clock`` (seconds, never going back) defaults to the coarse monotonic
    clock; tests inject one.  A key is needed: ``pick()`` without one raises TypeError
    (a session cannot stick to nothing; ``.balancer.pick()`` picks without one).

    >>> from lbcore import Affinity, Endpoint, RoundRobin
    >>> now = [0.0]
    >>> a = Affinity(RoundRobin([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)]),
    ...              timeout=60, clock=lambda: now[0])
    >>> first = a.pick("192.168.7.7")
    >>> now[0] = 59.0
    >>> a.pick("192.168.7.7") == first
    True
    >>> now[0] = 119.0                       # idle 60 s: expired, the balancer picks again
    >>> a.pick("192.168.7.7") == first
    False
    """

    cdef Balancer _balancer
    cdef SessionTable _table
    cdef object _clock      # None: session_clock() in C

    def __init__(self, balancer, timeout=DEFAULT_AFFINITY_TIMEOUT,
                 max_entries=DEFAULT_MAX_ENTRIES, clock=None):
        if not isinstance(balancer, Balancer):
            raise not_same_twin(balancer, "lbcore._fast")
        check_keyed_by_xxh64(balancer)
        self._table = SessionTable(check_timeout(timeout), check_max_entries(max_entries))
        self._clock = check_clock(clock)
        self._balancer = <Balancer>balancer
        self._endpoints = self._balancer._endpoints
        self._failed = self._balancer._failed
        self._skipped = self._balancer._skipped
        self._needs_key = True

    @property
    def balancer(self):
        """The wrapped balancer, which picks for keys without a live session."""
        return self._balancer

    @property
    def scheduler(self):
        """The wrapped balancer's scheduler (ipvsadm: -s rr -p T is rr with persistence)."""
        return self._balancer.scheduler

    @property
    def endpoints(self):
        """The wrapped balancer's endpoints."""
        return self._balancer._endpoints

    @property
    def panic_threshold(self):
        """The wrapped balancer's panic threshold in percent (None: off)."""
        return self._balancer.panic_threshold

    @property
    def panic(self):
        """Whether the wrapped balancer is in panic (its picks ignore failure marks)."""
        return self._balancer.panic

    @property
    def panic_picks(self):
        """The wrapped balancer's picks in panic (session hits are not picks)."""
        return self._balancer.panic_picks

    @property
    def slow_start(self):
        """The wrapped balancer's slow start window in seconds (None: off)."""
        return self._balancer.slow_start

    @property
    def timeout(self):
        """Seconds a session lives after its last use."""
        return self._table.timeout

    @property
    def max_entries(self):
        """The most sessions held at once."""
        return self._table.max_entries

    def update(self, endpoints):
        """Replace the endpoint set; sessions of endpoints that stay usable survive."""
        self._balancer.update(endpoints)
        self._follow()

    def mark_failed(self, endpoint):
        """No new picks for endpoint until mark_healthy(); its sessions die."""
        self._balancer.mark_failed(endpoint)
        self._follow()

    def mark_healthy(self, endpoint):
        """Undo mark_failed() (the sessions that died stay dead)."""
        self._balancer.mark_healthy(endpoint)
        self._follow()

    def release(self, endpoint):
        """A connection picked earlier has ended: the wrapped balancer is told."""
        self._balancer.release(endpoint)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick(self, key=None):
        """The endpoint of key's live session, else the wrapped balancer's pick; O(1)."""
        cdef Py_ssize_t index = self._pick_index(self._hash_for_pick(key))
        if index < 0:
            raise self._no_endpoints()
        return self._endpoints[index]

    cdef uint64_t _hash_for_pick(self, object key) except? 0:
        if key is None:
            raise TypeError(NO_KEY)
        return hash_key(key)

    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        cdef Balancer balancer = self._balancer
        cdef double now
        cdef Py_ssize_t index
        # The clock first: an injected one is Python code, and nothing but C may run
        # between the catch-up below and the use of the index it vouches for.
        now = session_clock() if self._clock is None else self._clock()
        if balancer._endpoints is not self._endpoints or balancer._failed is not self._failed:
            self._follow()  # the wrapped balancer was changed directly
        index = self._table.lookup(key_hash, now)
        if index >= 0:
            balancer._count(index)
            return index
        index = balancer._pick_index(key_hash)
        if index >= 0:
            self._table.add(key_hash, <int32_t>index, now)
        return index

    cdef int _count(self, Py_ssize_t index) except -1:
        return self._balancer._count(index)

    cdef int _follow(self) except -1:
        # Affinity._follow: sessions of endpoints that can no longer take connections die.
        cdef Balancer balancer = self._balancer
        # Sessions live on the endpoints picks may reach (all of them in panic), except
        # that an endpoint marked failed just now loses its sessions even in panic.
        remap = session_remap(self._endpoints, self._skipped, balancer._endpoints,
                              balancer._skipped | (balancer._failed - self._failed))
        if remap is not None:
            self._table.retain(remap)
        self._endpoints = balancer._endpoints
        self._failed = balancer._failed
        self._skipped = balancer._skipped
        return 0

    def _sessions(self):
        """(key hash, endpoint, last use) of every session, stalest first (tests, debugging)."""
        return [(key, self._endpoints[i], last_use) for key, i, last_use in self._table.by_last_use()]

    def _check(self):
        Balancer._check(self)
        self._balancer._check()
        assert self._endpoints is self._balancer._endpoints
        assert self._failed is self._balancer._failed
        assert self._skipped is self._balancer._skipped
        self._table._check(set(pickable_indices(self._endpoints, self._skipped)))

    def _check_panic(self):
        """The wrapped balancer's own check covers its panic."""

    def __repr__(self):
        return f"Affinity({self._balancer!r}, timeout={self.timeout}, max_entries={self.max_entries})"
