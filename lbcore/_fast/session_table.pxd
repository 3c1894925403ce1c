# The compiled sticky-session table, cimported by affinity.pyx (and by
# bench/_table_candidates.pyx, which measures this bucket map against cykhash and preshed;
# bench/README.md records why it is hand-written).  lbcore/_pure/session_table.py
# states the layout and the rules.

cimport cython
from libc.stdint cimport int32_t, uint32_t, uint64_t


cdef enum:
    WAYS = 3            # sessions per bucket: three and the overflow count fill 64 bytes


# One bucket is one 64-byte cache line (the array is aligned to 64): a hit reads the
# key's hash, its endpoint and its last use from the line it probes, nothing else.
cdef struct Bucket:
    uint64_t key[WAYS]          # the key's 64-bit hash (lbcore._fast.hashing.hash_key)
    double last_use[WAYS]       # clock seconds of the session's last pick
    int32_t endpoint[WAYS]      # index into the balancer's endpoints; -1: the slot is empty
    uint32_t overflow           # sessions stored past this bucket whose home is here or
                                # before it (Folly F14's outbound overflow count)


cdef inline size_t home_bucket(uint64_t key, size_t nbuckets) noexcept nogil:
    # Lemire's multiply-shift on the low 32 bits (any bucket count, no division); the
    # hash schedulers take their slot from the high 32, so the two stay independent.
    return <size_t>(((key & 0xFFFFFFFFu) * <uint64_t>nbuckets) >> 32)


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define lbcore_lowest_bit(x) __builtin_ctz(x)
    #else
    #define lbcore_lowest_bit(x) ((x) & 1 ? 0 : (x) & 2 ? 1 : 2)
    #endif
    """
    int lowest_bit "lbcore_lowest_bit" (unsigned int x) noexcept nogil


cdef inline Py_ssize_t find_slot(const Bucket* buckets, size_t nbuckets, uint64_t key) noexcept nogil:
    # SessionTable._find: the slot (bucket * WAYS + way) of key's session, or -1.  The
    # probe moves past a bucket only while sessions from earlier homes lie beyond it.
    # The ways are compared without a branch each: which way holds a key is random, so
    # a branch per way would mispredict, and a mispredict stalls the next pick's read.
    cdef size_t b = home_bucket(key, nbuckets)
    cdef const Bucket* bucket
    cdef unsigned int found
    while True:
        bucket = &buckets[b]
        found = ((<unsigned int>(bucket.key[0] == key) & <unsigned int>(bucket.endpoint[0] >= 0))
                 | (<unsigned int>(bucket.key[1] == key) & <unsigned int>(bucket.endpoint[1] >= 0)) << 1
                 | (<unsigned int>(bucket.key[2] == key) & <unsigned int>(bucket.endpoint[2] >= 0)) << 2)
        if found:
            return <Py_ssize_t>(b * WAYS + lowest_bit(found))
        if bucket.overflow == 0:
            return -1
        b += 1
        if b == nbuckets:
            b = 0


@cython.final
cdef class SessionTable:
    cdef Bucket* buckets        # nbuckets buckets, aligned to 64 bytes
    cdef size_t nbuckets
    cdef size_t most_buckets    # room for max_entries sessions at two per bucket
    cdef Py_ssize_t count       # sessions held (live, or expired and not yet reclaimed)
    cdef size_t hand            # the slot where the next eviction window starts
    cdef readonly int timeout    # seconds (1..86400)
    cdef readonly Py_ssize_t max_entries

    cdef int32_t lookup(self, uint64_t key, double now) noexcept
    cdef int add(self, uint64_t key, int32_t endpoint, double now) except -1
    cdef int retain(self, list remap) except -1
    cdef int _allocate(self, size_t nbuckets) except -1
    cdef void _place(self, uint64_t key, int32_t endpoint, double last_use) noexcept
    cdef void _remove(self, size_t slot) noexcept
    cdef void _evict(self) noexcept
    cdef int _resize(self, double now) except -1
