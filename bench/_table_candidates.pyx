# The key hash -> session id maps the sticky-session table could be built on, driven by
# the same C loops so that only the map differs (bench_affinity.py::test_table_choice).
#
# - "lbcore": the hand-written slot map of lbcore/_fast/session_table.pxd (linear
#   probing over 4-byte ids, keys read from the sessions, deletion without tombstones);
# - "cykhash": khash's int64 -> int64 map from cykhash's .pxd (quadratic probing, a
#   murmur-style hash of the key, 2 flag bits per bucket, tombstones, load <= 0.77);
# - "preshed": preshed's MapStruct (linear probing on the raw key, tombstones).
#
# Every candidate does the same work around the map: a lookup reads the session it
# found, a churn step deletes the oldest key and inserts a fresh one under its id (the
# path of an insertion into a full table).  Keys are splitmix64 outputs, uniform like
# the XXH64 hashes Affinity stores.

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

from lbcore._fast.session_table cimport Session, slot_delete, slot_of

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
    cdef Py_ssize_t* order      # a random permutation of session ids: the lookup order
    cdef Py_ssize_t oldest      # churn replaces sessions in id order, oldest first
    cdef uint64_t state
    # lbcore
    cdef int32_t* slots
    cdef size_t mask
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
        self.order = <Py_ssize_t*>PyMem_Malloc(n * sizeof(Py_ssize_t))
        if self.sessions == NULL or self.order == NULL:
            raise MemoryError()
        memset(self.sessions, 0, n * sizeof(Session))
        # Each map sized as it would have grown to n entries.
        if self.kind == LBCORE:
            self.mask = 1
            while self.mask + 1 < 2 * <size_t>n:
                self.mask = 2 * self.mask + 1
            self.slots = <int32_t*>PyMem_Malloc((self.mask + 1) * sizeof(int32_t))
            memset(self.slots, 0xFF, (self.mask + 1) * sizeof(int32_t))
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
            self.order[i] = i
        for i in range(n - 1, 0, -1):  # Fisher-Yates
            j = <Py_ssize_t>(splitmix64(&self.state) % <uint64_t>(i + 1))
            self.order[i], self.order[j] = self.order[j], self.order[i]

    def __dealloc__(self):
        PyMem_Free(self.sessions)
        PyMem_Free(self.order)
        PyMem_Free(self.slots)
        if self.kh != NULL:
            kh_destroy_int64toint64map(self.kh)

    cdef inline int32_t _find(self, uint64_t key) noexcept:
        cdef uint32_t k
        cdef Result found
        if self.kind == LBCORE:
            return self.slots[slot_of(self.slots, self.mask, self.sessions, key)]
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
            self.slots[slot_of(self.slots, self.mask, self.sessions, key)] = id
        elif self.kind == CYKHASH:
            k = kh_put_int64toint64map(self.kh, <int64_t>key, &ret)
            self.kh.vals[k] = id
        else:
            map_set(self.pool, self.presh, key, <void*>(<size_t>id + 1))
        return 0

    cdef inline void _delete(self, uint64_t key) noexcept:
        if self.kind == LBCORE:
            slot_delete(self.slots, self.mask, self.sessions, slot_of(self.slots, self.mask, self.sessions, key))
        elif self.kind == CYKHASH:
            kh_del_int64toint64map(self.kh, kh_get_int64toint64map(self.kh, <int64_t>key))
        else:
            map_clear(self.presh, key)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def hits(self, Py_ssize_t count):
        """count lookups of present keys in random order, each reading its session."""
        cdef Py_ssize_t j, i = 0
        cdef int64_t total = 0
        for j in range(count):
            total += self.sessions[self._find(self.sessions[self.order[i]].key)].endpoint
            i += 1
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
            self.oldest += 1
            if self.oldest == self.n:
                self.oldest = 0
        return self.n

    def map_bytes(self):
        """Bytes the map itself holds now (the sessions are the same for every candidate)."""
        if self.kind == LBCORE:
            return (self.mask + 1) * sizeof(int32_t)
        if self.kind == CYKHASH:
            # keys and values 8 bytes each, 2 flag bits per bucket (khash __ac_fsize)
            return self.kh.n_buckets * 16 + max(self.kh.n_buckets >> 4, 1) * 4
        return self.presh.length * 16  # Cell: key + void*

    def check(self):
        """Every session's key finds its own id."""
        for i in range(self.n):
            assert self._find(self.sessions[i].key) == i, (KINDS[self.kind], i)
