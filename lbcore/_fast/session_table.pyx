# The sticky-session table of the compiled Affinity.  Mirrors lbcore/_pure/session_table.py
# `SessionTable` slot for slot: the same buckets, home buckets, growth, eviction window
# and expiry test, so the two twins of Affinity keep and evict the same sessions.  Read
# that file for the layout and the rules.
#
# In C a bucket is one aligned 64-byte line (session_table.pxd): a hit is the probe of
# the key's home bucket (one cache miss; the next bucket only for the ~13 % of sessions
# stored past their home at the fullest), a compare of up to three key hashes, and a
# store of the new last use into the line already read.

cimport cython
from libc.stdint cimport int32_t, uint64_t, uintptr_t
from libc.stdlib cimport free

from array import array

__all__ = ["SessionTable"]

cdef extern from *:
    """
    #include <stdlib.h>
    #include <sys/mman.h>
    /* Buckets aligned to a cache line; a table of 2 MiB or more aligned to a huge page
       and marked for transparent huge pages, so that a hit's probe into a large table
       does not miss the TLB as well (measured here: a dependent read in 32 MiB takes
       264 ns with 4 KiB pages, 173 ns with 2 MiB pages). */
    static void* lbcore_buckets_alloc(size_t size) {
        const size_t huge = (size_t)2 << 20;
        void* block = NULL;
        if (posix_memalign(&block, size >= huge ? huge : 64, size) != 0)
            return NULL;
    #ifdef MADV_HUGEPAGE
        if (size >= huge)
            madvise(block, size, MADV_HUGEPAGE);
    #endif
        return block;
    }
    """
    void* buckets_alloc "lbcore_buckets_alloc" (size_t size) noexcept nogil


cdef size_t INITIAL_BUCKETS = 8     # lbcore._pure.session_table.INITIAL_BUCKETS
cdef int EVICTION_RANGE = 8         # lbcore._pure.session_table.EVICTION_RANGE


@cython.final
cdef class SessionTable:
    """Key hash -> (endpoint index, last use) in buckets of three slots; see
    lbcore._pure.session_table.SessionTable."""

    def __cinit__(self, int timeout, Py_ssize_t max_entries):
        self.timeout = timeout
        self.max_entries = max_entries
        self.most_buckets = <size_t>(max_entries + 1) // 2
        self._allocate(min(INITIAL_BUCKETS, self.most_buckets))

    def __dealloc__(self):
        free(self.buckets)

    cdef int _allocate(self, size_t nbuckets) except -1:
        # Empty buckets; on MemoryError the table is as it was.
        cdef Bucket* buckets = <Bucket*>buckets_alloc(nbuckets * sizeof(Bucket))
        cdef size_t b
        if buckets == NULL:
            raise MemoryError()
        for b in range(nbuckets):
            buckets[b].endpoint[0] = buckets[b].endpoint[1] = buckets[b].endpoint[2] = -1
            buckets[b].overflow = 0
        free(self.buckets)
        self.buckets = buckets
        self.nbuckets = nbuckets
        self.count = 0
        self.hand = 0
        return 0

    @cython.cdivision(True)
    cdef int32_t lookup(self, uint64_t key, double now) noexcept:
        # SessionTable.lookup: the live session's endpoint, refreshed; -1 if none.
        cdef Py_ssize_t s = find_slot(self.buckets, self.nbuckets, key)
        cdef Bucket* bucket
        cdef Py_ssize_t j
        if s < 0:
            return -1
        bucket = &self.buckets[s // WAYS]
        j = s % WAYS
        if now - bucket.last_use[j] < self.timeout:
            bucket.last_use[j] = now
            return bucket.endpoint[j]
        self._remove(s)  # expired: reclaimed on lookup
        return -1

    cdef int add(self, uint64_t key, int32_t endpoint, double now) except -1:
        # SessionTable.add: evict when full, rebuild at the load limit, then place.
        if self.count >= self.max_entries:
            self._evict()
        elif <size_t>self.count >= 2 * self.nbuckets:
            self._resize(now)
        self._place(key, endpoint, now)
        return 0

    @cython.cdivision(True)
    cdef int retain(self, list remap) except -1:
        # SessionTable.retain: renumber endpoints by remap, drop sessions mapped to -1.
        cdef int[::1] new_index = array("i", remap)
        cdef size_t s
        cdef Bucket* bucket
        cdef int index
        for s in range(WAYS * self.nbuckets):
            bucket = &self.buckets[s // WAYS]
            if bucket.endpoint[s % WAYS] >= 0:
                index = new_index[bucket.endpoint[s % WAYS]]
                if index < 0:
                    self._remove(s)
                else:
                    bucket.endpoint[s % WAYS] = index
        return 0

    cdef void _place(self, uint64_t key, int32_t endpoint, double last_use) noexcept:
        # The first free slot from the key's home bucket on; every full bucket passed
        # counts one more session stored beyond it.  The load limit leaves one free.
        cdef size_t b = home_bucket(key, self.nbuckets)
        cdef Bucket* bucket = &self.buckets[b]
        cdef int j
        while bucket.endpoint[0] >= 0 and bucket.endpoint[1] >= 0 and bucket.endpoint[2] >= 0:
            bucket.overflow += 1
            b += 1
            if b == self.nbuckets:
                b = 0
            bucket = &self.buckets[b]
        j = 0 if bucket.endpoint[0] < 0 else 1 if bucket.endpoint[1] < 0 else 2
        bucket.key[j] = key
        bucket.last_use[j] = last_use
        bucket.endpoint[j] = endpoint
        self.count += 1

    @cython.cdivision(True)
    cdef void _remove(self, size_t slot) noexcept:
        cdef Bucket* bucket = &self.buckets[slot // WAYS]
        cdef size_t b = home_bucket(bucket.key[slot % WAYS], self.nbuckets)
        bucket.endpoint[slot % WAYS] = -1
        self.count -= 1
        while b != slot // WAYS:
            self.buckets[b].overflow -= 1
            b += 1
            if b == self.nbuckets:
                b = 0

    @cython.cdivision(True)
    cdef void _evict(self) noexcept:
        # SessionTable._evict: the least recently used of the next EVICTION_RANGE
        # sessions from the hand (ties to the first); the hand moves past them.
        cdef size_t slots = WAYS * self.nbuckets, s = self.hand, victim = 0
        cdef Py_ssize_t window = min(EVICTION_RANGE, self.count), seen
        cdef double stalest = 0
        cdef Bucket* bucket
        for seen in range(window):
            while self.buckets[s // WAYS].endpoint[s % WAYS] < 0:
                s = s + 1 if s + 1 < slots else 0
            bucket = &self.buckets[s // WAYS]
            if seen == 0 or bucket.last_use[s % WAYS] < stalest:
                victim = s
                stalest = bucket.last_use[s % WAYS]
            s = s + 1 if s + 1 < slots else 0
        self.hand = s
        self._remove(victim)

    @cython.cdivision(True)
    cdef int _resize(self, double now) except -1:
        # SessionTable._resize: rebuild without the expired sessions, twice the buckets
        # (up to most_buckets) unless those left fill at most half of the load limit.
        cdef Bucket* old = self.buckets
        cdef size_t old_count = self.nbuckets, nbuckets = self.nbuckets, b
        cdef Py_ssize_t live = 0
        cdef int j
        for b in range(old_count):
            for j in range(WAYS):
                live += old[b].endpoint[j] >= 0 and now - old[b].last_use[j] < self.timeout
        if <size_t>live + 1 > nbuckets:
            nbuckets = min(2 * nbuckets, self.most_buckets)
        self.buckets = NULL  # kept here until its sessions have moved
        try:
            self._allocate(nbuckets)
        except MemoryError:
            self.buckets = old
            raise
        for b in range(old_count):
            for j in range(WAYS):
                if old[b].endpoint[j] >= 0 and now - old[b].last_use[j] < self.timeout:
                    self._place(old[b].key[j], old[b].endpoint[j], old[b].last_use[j])
        free(old)
        return 0

    @cython.cdivision(True)
    def by_last_use(self):
        """(key hash, endpoint index, last use) of every session, stalest first (ties in slot order)."""
        cdef size_t s
        cdef Bucket* bucket
        slots = []
        for s in range(WAYS * self.nbuckets):
            bucket = &self.buckets[s // WAYS]
            if bucket.endpoint[s % WAYS] >= 0:
                slots.append((bucket.last_use[s % WAYS], s))
        slots.sort()
        return [(self.buckets[s // WAYS].key[s % WAYS], self.buckets[s // WAYS].endpoint[s % WAYS], last_use)
                for last_use, s in slots]

    @cython.cdivision(True)
    def _check(self, alive):
        """Assert the table's invariants; alive holds the pickable endpoint indices."""
        cdef size_t s, b, nbuckets = self.nbuckets
        cdef Bucket* bucket
        assert 1 <= nbuckets <= self.most_buckets and 2 * self.most_buckets >= <size_t>self.max_entries
        assert <uintptr_t>self.buckets % 64 == 0 and sizeof(Bucket) == 64
        occupied = [s for s in range(WAYS * nbuckets) if self.buckets[s // WAYS].endpoint[s % WAYS] >= 0]
        assert len(occupied) == self.count <= min(self.max_entries, 2 * nbuckets)
        assert len({self.buckets[s // WAYS].key[s % WAYS] for s in occupied}) == self.count  # no key twice
        assert self.hand < WAYS * nbuckets
        # Every session is found from its home bucket, and each overflow count is the
        # number of sessions stored past its bucket from a home at or before it.
        overflow = [0] * nbuckets
        for s in occupied:
            bucket = &self.buckets[s // WAYS]
            assert bucket.endpoint[s % WAYS] in alive
            assert find_slot(self.buckets, nbuckets, bucket.key[s % WAYS]) == <Py_ssize_t>s
            b = home_bucket(bucket.key[s % WAYS], nbuckets)
            while b != s // WAYS:
                overflow[b] += 1
                b = b + 1 if b + 1 < nbuckets else 0
        assert overflow == [self.buckets[b].overflow for b in range(nbuckets)]
