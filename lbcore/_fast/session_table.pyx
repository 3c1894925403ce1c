# The sticky-session table of the compiled Affinity.  Mirrors lbcore/_pure/affinity.py
# `SessionTable` decision for decision: the same order of last use, the same expiry test
# (live while now - last_use < timeout), the same reclaim and eviction order, so the two
# twins of Affinity pick alike.
#
# Layout (the Python twin's OrderedDict, in C arrays):
# - sessions: one array of 32-byte Session structs; a removed session's id goes on a
#   free list and the next insertion takes it, so an eviction followed by an insertion
#   (a miss in a full table) reuses the struct it just touched, and ids never move;
# - order of last use: a doubly linked list through the sessions (newer/older ids),
#   stalest at `oldest`, so a hit moves its session to `newest` in O(1) and eviction
#   takes `oldest`;
# - slots: the key hash -> id map of _session_table.pxd, at most half full.
# Both arrays double as the table grows (sessions up to max_entries), so an idle
# Affinity costs a few hundred bytes and a million sessions ~42 bytes each.

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, uint64_t
from libc.string cimport memset

from array import array

__all__ = ["SessionTable"]

cdef Py_ssize_t _INITIAL_CAPACITY = 16


cdef int32_t* _empty_slots(size_t n) except NULL:
    cdef int32_t* slots = <int32_t*>PyMem_Malloc(n * sizeof(int32_t))
    if slots == NULL:
        raise MemoryError()
    memset(slots, 0xFF, n * sizeof(int32_t))  # every slot -1: empty
    return slots


@cython.final
cdef class SessionTable:
    """Key hash -> session (endpoint index, last use); see lbcore._pure.affinity.SessionTable."""

    def __cinit__(self, int timeout, Py_ssize_t max_entries):
        self.timeout = timeout
        self.max_entries = max_entries
        self.newest = self.oldest = self.free = -1
        self.reclaimed_at = -INFINITY
        self.capacity = min(_INITIAL_CAPACITY, max_entries)
        self.sessions = <Session*>PyMem_Malloc(self.capacity * sizeof(Session))
        if self.sessions == NULL:
            raise MemoryError()
        self.mask = 2 * _INITIAL_CAPACITY - 1
        self.slots = _empty_slots(self.mask + 1)

    def __dealloc__(self):
        PyMem_Free(self.sessions)
        PyMem_Free(self.slots)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef int32_t lookup(self, uint64_t key, double now) noexcept:
        # SessionTable.lookup: the live session's endpoint, refreshed; -1 if none.
        cdef int32_t id = self.slots[slot_of(self.slots, self.mask, self.sessions, key)]
        cdef Session* session
        if id < 0:
            return -1
        session = &self.sessions[id]
        if now - session.last_use < self.timeout:
            session.last_use = now
            self._make_newest(id)
            return session.endpoint
        self._remove(id)  # expired: reclaimed on lookup
        return -1

    cdef int add(self, uint64_t key, int32_t endpoint, double now) except -1:
        # SessionTable.add: drop the expired sessions at the stale end, evict the
        # stalest if still full, then store the new session as the newest.
        cdef int32_t id
        cdef Session* session
        while self.oldest >= 0 and now - self.sessions[self.oldest].last_use >= self.timeout:
            self._remove(self.oldest)
        self.reclaimed_at = now
        if self.count >= self.max_entries:
            self._remove(self.oldest)
        self._reserve()
        if self.free >= 0:
            id = self.free
            self.free = self.sessions[id].newer
        else:
            id = <int32_t>self.used
            self.used += 1
        self.count += 1
        session = &self.sessions[id]
        session.key = key
        session.last_use = now
        session.endpoint = endpoint
        session.newer = -1
        session.older = self.newest
        if self.newest >= 0:
            self.sessions[self.newest].newer = id
        else:
            self.oldest = id
        self.newest = id
        self.slots[slot_of(self.slots, self.mask, self.sessions, key)] = id
        return 0

    cdef int retain(self, list remap) except -1:
        # SessionTable.retain: renumber endpoints by remap, drop sessions mapped to -1.
        cdef int[::1] new_index = array("i", remap)
        cdef int32_t id = self.oldest, newer
        cdef int index
        while id >= 0:
            newer = self.sessions[id].newer
            index = new_index[self.sessions[id].endpoint]
            if index < 0:
                self._remove(id)
            else:
                self.sessions[id].endpoint = index
            id = newer
        return 0

    cdef void _make_newest(self, int32_t id) noexcept:
        cdef Session* sessions = self.sessions
        cdef Session* session = &sessions[id]
        if id == self.newest:
            return
        # Unlink (it has a newer neighbour, since it is not the newest) ...
        sessions[session.newer].older = session.older
        if session.older >= 0:
            sessions[session.older].newer = session.newer
        else:
            self.oldest = session.newer
        # ... and put it after the newest.
        session.older = self.newest
        session.newer = -1
        sessions[self.newest].newer = id
        self.newest = id

    cdef void _remove(self, int32_t id) noexcept:
        cdef Session* sessions = self.sessions
        cdef Session* session = &sessions[id]
        if session.older >= 0:
            sessions[session.older].newer = session.newer
        else:
            self.oldest = session.newer
        if session.newer >= 0:
            sessions[session.newer].older = session.older
        else:
            self.newest = session.older
        slot_delete(self.slots, self.mask, sessions, slot_of(self.slots, self.mask, sessions, session.key))
        session.newer = self.free
        self.free = id
        self.count -= 1

    cdef int _reserve(self) except -1:
        # Room for one more session; on MemoryError the table is as it was.
        cdef Py_ssize_t capacity
        cdef Session* grown
        cdef int32_t* slots
        cdef size_t mask
        cdef int32_t id
        if self.free < 0 and self.used == self.capacity:
            capacity = min(2 * self.capacity, self.max_entries)
            grown = <Session*>PyMem_Realloc(self.sessions, capacity * sizeof(Session))
            if grown == NULL:
                raise MemoryError()
            self.sessions = grown
            self.capacity = capacity
        if 2 * (<size_t>self.count + 1) > self.mask + 1:
            mask = 2 * self.mask + 1
            slots = _empty_slots(mask + 1)
            id = self.oldest
            while id >= 0:
                slots[slot_of(slots, mask, self.sessions, self.sessions[id].key)] = id
                id = self.sessions[id].newer
            PyMem_Free(self.slots)
            self.slots = slots
            self.mask = mask
        return 0

    def by_last_use(self):
        """(key hash, endpoint index, last use) of every session, stalest first."""
        out = []
        cdef int32_t id = self.oldest
        while id >= 0:
            out.append((self.sessions[id].key, self.sessions[id].endpoint, self.sessions[id].last_use))
            id = self.sessions[id].newer
        return out

    def _check(self, alive):
        """Assert the table's invariants; alive holds the pickable endpoint indices."""
        cdef int32_t id = self.oldest, previous = -1
        cdef Py_ssize_t seen = 0, filled = 0, free = 0
        cdef double last_use = -INFINITY
        cdef Session* session
        assert 0 <= self.count <= self.used <= self.capacity <= self.max_entries
        assert 2 * <size_t>self.count <= self.mask + 1 and (self.mask + 1) & self.mask == 0
        # The order of last use visits every session once, with consistent links.
        while id >= 0:
            assert id < self.used and seen < self.count
            session = &self.sessions[id]
            assert session.older == previous
            assert session.last_use >= last_use  # stalest first (the clock never goes back)
            assert self.reclaimed_at - session.last_use < self.timeout  # only lazily unreclaimed
            assert session.endpoint in alive
            assert self.slots[slot_of(self.slots, self.mask, self.sessions, session.key)] == id
            last_use = session.last_use
            previous = id
            id = session.newer
            seen += 1
        assert seen == self.count and previous == self.newest
        # ... the slot map holds exactly those ids (so no key is in it twice) ...
        for i in range(self.mask + 1):
            filled += self.slots[i] >= 0
        assert filled == self.count
        # ... and every other id handed out is on the free list.
        id = self.free
        while id >= 0:
            assert id < self.used and free < self.used - self.count
            free += 1
            id = self.sessions[id].newer
        assert free == self.used - self.count
