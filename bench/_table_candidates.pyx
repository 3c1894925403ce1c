# The key hash -> session maps the sticky-session table could be built on, driven by
# the same C loops so that only the map differs (bench_affinity.py::test_table_choice).
#
# - "lbcore": lbcore's own SessionTable (lbcore/_fast/session_table.pxd): buckets of
#   three sessions in one 64-byte line, the session (key hash, last use, endpoint)
#   stored in the map itself;
# - "cykhash": khash's int64 -> int64 map from cykhash's .pxd (quadratic probing, a
#   murmur-style hash of the key, 2 flag bits per bucket, tombstones, load <= 0.77),
#   mapping the key to a session id in an array of sessions;
# - "preshed": preshed's MapStruct (linear probing on the raw key, tombstones), the same.
#
# Every candidate does the same work around the map: a lookup reads the session it
# found, a churn step deletes the oldest key and inserts a fresh one (the path of an
# insertion into a full table).  Keys are splitmix64 outputs, uniform like the XXH64
# hashes Affinity stores.

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memset

from cykhash.khashmaps cimport (
    kh_del_int64toint64map,
    kh_destroy_int64toint64map,
    kh_get_int64toint64map,
    kh_init_int64toint64map,
    kh_int64toint64map_t,
    kh_put_int64toint64map,
    kh_resize_int64toint64map,
)
from cymem.cymem cimport Pool
from preshed.maps cimport MapStruct, Result, map_clear, map_get_unless_missing, map_init, map_set

from lbcore._fast.session_table cimport Bucket, SessionTable, find_slot

# A session outside the map, as khash and preshed would point to it.
cdef struct Session:
    uint64_t key
    double last_use
    int32_t endpoint

KINDS = ("lbcore", "cykhash", "preshed")
cdef enum Kind:
    LBCORE, CYKHASH, PRESHED


cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


@cython.final
cdef class Candidate:
    """n sessions keyed in one candidate map; hits() and churn() time its operations."""

    cdef Kind kind
    cdef Py_ssize_t n
    cdef Session* sessions
    cdef uint64_t* probe        # every key, in a random order: the lookup order
    cdef Py_ssize_t* where      # where each session's key lies in probe
    cdef Py_ssize_t oldest      # churn replaces sessions in id order, oldest first
    cdef uint64_t state
    # lbcore
    cdef SessionTable table
    # cykhash
    cdef kh_int64toint64map_t* kh
    # preshed
    cdef Pool pool
    cdef MapStruct* presh

    def __cinit__(self, str kind, Py_ssize_t n, uint64_t seed=1):
        cdef Py_ssize_t i, j, t
        self.kind = <Kind><int>KINDS.index(kind)
        self.n = n
        self.state = seed
        self.sessions = <Session*>PyMem_Malloc(n * sizeof(Session))
        self.probe = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        self.where = <Py_ssize_t*>PyMem_Malloc(n * sizeof(Py_ssize_t))
        if self.sessions == NULL or self.probe == NULL or self.where == NULL:
            raise MemoryError()
        memset(self.sessions, 0, n * sizeof(Session))
        # Each map sized as it would have grown to n entries.
        if self.kind == LBCORE:
            self.table = SessionTable(86400, n)
        elif self.kind == CYKHASH:
            self.kh = kh_init_int64toint64map()
            kh_resize_int64toint64map(self.kh, <uint32_t>(n / 0.77) + 1)
        else:
            self.pool = Pool()
            self.presh = <MapStruct*>self.pool.alloc(1, sizeof(MapStruct))
            t = 8
            while t * 3 <= (n + 1) * 5:  # preshed doubles when filled reaches 60 %
                t *= 2
            map_init(self.pool, self.presh, t)
        for i in range(n):
            self.sessions[i].endpoint = <int32_t>(i % 100)
            self._insert(splitmix64(&self.state), <int32_t>i)
            self.where[i] = i
        for i in range(n - 1, 0, -1):  # Fisher-Yates
            j = <Py_ssize_t>(splitmix64(&self.state) % <uint64_t>(i + 1))
            self.where[i], self.where[j] = self.where[j], self.where[i]
        for i in range(n):
            self.probe[self.where[i]] = self.sessions[i].key

    def __dealloc__(self):
        PyMem_Free(self.sessions)
        PyMem_Free(self.probe)
        PyMem_Free(self.where)
        if self.kh != NULL:
            kh_destroy_int64toint64map(self.kh)

    cdef inline int32_t _find(self, uint64_t key) noexcept:
        cdef uint32_t k
        cdef Result found
        if self.kind == LBCORE:  # the session is in the map: its endpoint, not an id
            return self.table.lookup(key, 0.0)
        if self.kind == CYKHASH:
            k = kh_get_int64toint64map(self.kh, <int64_t>key)
            return -1 if k == self.kh.n_buckets else <int32_t>self.kh.vals[k]
        found = map_get_unless_missing(self.presh, key)
        return <int32_t>(<size_t>found.value) - 1 if found.found else -1

    cdef inline int _insert(self, uint64_t key, int32_t id) except -1:
        cdef int ret
        cdef uint32_t k
        self.sessions[id].key = key
        if self.kind == LBCORE:
            self.table.add(key, self.sessions[id].endpoint, 0.0)
        elif self.kind == CYKHASH:
            k = kh_put_int64toint64map(self.kh, <int64_t>key, &ret)
            self.kh.vals[k] = id
        else:
            map_set(self.pool, self.presh, key, <void*>(<size_t>id + 1))
        return 0

    cdef inline void _delete(self, uint64_t key) noexcept:
        if self.kind == LBCORE:
            self.table._remove(find_slot(self.table.buckets, self.table.nbuckets, key))
        elif self.kind == CYKHASH:
            kh_del_int64toint64map(self.kh, kh_get_int64toint64map(self.kh, <int64_t>key))
        else:
            map_clear(self.presh, key)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def hits(self, Py_ssize_t count, bint chained=False):
        """count lookups of present keys in random order, each refreshing its session's
        last use and reading its endpoint, as an Affinity hit does.  The keys are read
        in sequence (as a key arrives with its request), so only the map and the session
        it leads to can miss the cache.  chained: each lookup waits for the one before
        (its key's position depends on the endpoint found), which measures the latency
        of a hit rather than how many the CPU overlaps, as a pick called from Python
        sees it."""
        cdef Py_ssize_t j, i = 0
        cdef int64_t total = 0
        cdef int32_t endpoint
        cdef Session* session
        for j in range(count):
            if self.kind == LBCORE:  # SessionTable.lookup refreshes the last use itself
                endpoint = self._find(self.probe[i])
            else:
                session = &self.sessions[self._find(self.probe[i])]
                session.last_use = 1.0
                endpoint = session.endpoint
            total += endpoint
            i += 1
            if chained:
                i += endpoint >> 31  # endpoint >= 0: adds nothing, but only once it is known
            if i == self.n:
                i = 0
        return total

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def churn(self, Py_ssize_t count):
        """count steps of: delete the oldest key, insert a fresh key under its id."""
        cdef Py_ssize_t j
        cdef int32_t id
        for j in range(count):
            id = <int32_t>self.oldest
            self._delete(self.sessions[id].key)
            self._insert(splitmix64(&self.state), id)
            self.probe[self.where[id]] = self.sessions[id].key
            self.oldest += 1
            if self.oldest == self.n:
                self.oldest = 0
        return self.n

    def map_bytes(self):
        """Bytes the map and its sessions hold now."""
        if self.kind == LBCORE:
            return self.table.nbuckets * sizeof(Bucket)
        if self.kind == CYKHASH:
            # keys and values 8 bytes each, 2 flag bits per bucket (khash __ac_fsize)
            return self.kh.n_buckets * 16 + max(self.kh.n_buckets >> 4, 1) * 4 + self.n * sizeof(Session)
        return self.presh.length * 16 + self.n * sizeof(Session)  # Cell: key + void*

    def check(self):
        """Every session's key finds its own id (lbcore: its own endpoint)."""
        for i in range(self.n):
            found = self._find(self.sessions[i].key)
            assert found == (self.sessions[i].endpoint if self.kind == LBCORE else i), (KINDS[self.kind], i)
