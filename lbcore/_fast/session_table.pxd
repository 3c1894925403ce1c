# The compiled sticky-session table, cimported by _affinity.pyx (and by
# bench/_table_candidates.pyx, which measures the slot map below against cykhash and
# preshed; bench/README.md records why it is hand-written).

cimport cython
from libc.stdint cimport int32_t, uint64_t


cdef struct Session:
    uint64_t key        # the key's 64-bit hash (lbcore._fast.hashing.hash_key)
    double last_use     # clock seconds of the session's last pick
    int32_t endpoint    # index into the balancer's endpoints
    int32_t newer       # order of last use: a doubly linked list of session ids,
    int32_t older       # -1 at either end; a free id's newer links the free list


# The slot map: key hash -> session id.  Open addressing with linear probing over an
# array of 32-bit session ids (-1 = empty) whose length is a power of two; a key's home
# slot is its low bits, with no further mixing, because keys are XXH64 outputs.  The
# key itself is read from the session, so a slot costs 4 bytes, not 12 or 16.

cdef inline size_t slot_of(const int32_t* slots, size_t mask, const Session* sessions,
                           uint64_t key) noexcept nogil:
    """The slot holding key's session id, or the empty slot where it would go."""
    cdef size_t i = <size_t>key & mask
    cdef int32_t s = slots[i]
    while s >= 0 and sessions[s].key != key:
        i = (i + 1) & mask
        s = slots[i]
    return i


cdef inline void slot_delete(int32_t* slots, size_t mask, const Session* sessions,
                             size_t i) noexcept nogil:
    """Empty slot i without a tombstone (Knuth, TAOCP vol. 3, 6.4 Algorithm R).

    Later ids of the same probe run move back into the hole unless their home slot lies
    cyclically after it, so every id stays reachable from its home slot.
    """
    cdef size_t j = i, home
    cdef int32_t s
    while True:
        j = (j + 1) & mask
        s = slots[j]
        if s < 0:
            break
        home = <size_t>sessions[s].key & mask
        if ((j - home) & mask) >= ((j - i) & mask):
            slots[i] = s
            i = j
    slots[i] = -1


@cython.final
cdef class SessionTable:
    cdef Session* sessions      # ids 0..used-1: live sessions and free ids
    cdef int32_t* slots         # mask + 1 slots, at most half of them used
    cdef Py_ssize_t count       # live sessions
    cdef Py_ssize_t used        # ids handed out so far
    cdef Py_ssize_t capacity    # sessions allocated
    cdef size_t mask
    cdef int32_t newest
    cdef int32_t oldest
    cdef int32_t free           # a free id below used, or -1
    cdef readonly int timeout    # seconds (1..86400)
    cdef readonly Py_ssize_t max_entries
    cdef double reclaimed_at    # when add() last dropped the expired sessions

    cdef int32_t lookup(self, uint64_t key, double now) noexcept
    cdef int add(self, uint64_t key, int32_t endpoint, double now) except -1
    cdef int retain(self, list remap) except -1
    cdef void _make_newest(self, int32_t id) noexcept
    cdef void _remove(self, int32_t id) noexcept
    cdef int _reserve(self) except -1
