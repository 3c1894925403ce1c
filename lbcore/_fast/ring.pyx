# Ring hash (ring).  Mirrors lbcore/_pure/ring.py `RingHash`, `ring_points` and
# `ketama_hash`, pick for pick; read that file for the rule, the ketama compatibility
# and their sources.
#
# The pure twin finds a key's point by binary search (bisect_right).  Here the ring
# carries a bucket index: with B buckets (a power of two, at least the number of
# points) and a point's bucket its top log2(B) bits, starts[b] is the first point of
# bucket b or later.  A key's successor is then in its own bucket or is the first point
# of the next non-empty one, so a pick reads starts[], then a point or two (about one
# point per bucket), instead of walking log2(P) levels of the ring: the same answer as
# bisect_right, in O(1) expected.  The build sorts the points by two counting passes on
# their top 16 bits and an insertion sort, O(P) expected, then writes the index in one
# pass: about Maglev's time per slot, for a ring of at most a Maglev table's size.
#
# The ketama key hash (MD5, md5.pxd) and the xxh64 one (hashing.pxd) are both in C, so a
# pick makes no Python call.

cimport cython
from cpython.array cimport array, clone
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.long cimport PyLong_Check
from cpython.unicode cimport PyUnicode_Check
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.hash_balancer cimport _resolve_fallback
from lbcore._fast.hashing cimport SEED, hash_key, xxh64, xxh64_u64
from lbcore._fast.loads cimport Loads, loads_add, loads_add_checked, loads_release, probe
from lbcore._fast.md5 cimport md5

from lbcore._shared.endpoint_state import pickable_indices
from lbcore._shared.key_buffers import buffer_keys
from lbcore._shared.ring_layout import check_ring_hash, ring_counts
from lbcore._shared.table_invariants import check_resolution
from lbcore._twins import pure_twin
from lbcore.models import balance_percent, check_balance_factor

__all__ = ["RingHash", "ring_points", "ketama_hash"]

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1

cdef array _INDEX_ARRAY = array("i")
cdef array _U64_ARRAY = array("Q")
cdef array _U32_ARRAY = array("I")
cdef object _MASK64 = 2**64 - 1


cdef uint32_t _ketama_bytes(const void* data, size_t size) noexcept nogil:
    cdef uint32_t digest[4]
    md5(data, size, digest)
    return digest[0]


cdef uint32_t _ketama_u64(uint64_t value) noexcept nogil:
    # An int key: MD5 of the decimal text of its unsigned 64-bit value.
    cdef char text[24]
    cdef int start = 24
    while True:
        start -= 1
        text[start] = <char>(48 + value % 10)
        value //= 10
        if value == 0:
            break
    return _ketama_bytes(&text[start], 24 - start)


cdef uint64_t _ketama_key(object key) except? 0:
    """lbcore._pure.ring.ketama_hash(key), in the top 32 bits as the ring holds it."""
    cdef const char* data
    cdef Py_ssize_t size
    cdef int overflow
    cdef long long small
    if PyUnicode_Check(key):
        data = PyUnicode_AsUTF8AndSize(key, &size)
        return <uint64_t>_ketama_bytes(data, <size_t>size) << 32
    if PyBytes_Check(key):
        return <uint64_t>_ketama_bytes(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key)) << 32
    if PyLong_Check(key):
        small = PyLong_AsLongLongAndOverflow(key, &overflow)
        if overflow == 0:
            return <uint64_t>_ketama_u64(<uint64_t>small) << 32
        if not -(2**63) <= key <= _MASK64:
            raise ValueError(f"int key {key} does not fit in 64 bits")
        return <uint64_t>_ketama_u64(<uint64_t>(key & _MASK64)) << 32
    raise TypeError(f"key must be str, bytes or int, not {type(key).__name__}")


def ketama_hash(key):
    """libketama's hash of a key: the first 32-bit little-endian word of its MD5."""
    return _ketama_key(key) >> 32


cdef int _bucket_bits(Py_ssize_t points) noexcept:
    # log2 of the bucket count: a power of two, at least the points, at least 2.
    cdef int bits = 1
    while (<Py_ssize_t>1 << bits) < points:
        bits += 1
    return bits


cdef void _radix_pass(const uint64_t* src, const int32_t* src_owner, uint64_t* dst,
                      int32_t* dst_owner, Py_ssize_t n, int shift) noexcept nogil:
    # One stable counting sort on the byte at shift.
    cdef uint32_t place[256]
    cdef Py_ssize_t p
    cdef uint32_t total = 0, count
    cdef int b
    memset(place, 0, sizeof(place))
    for p in range(n):
        place[(src[p] >> shift) & 255] += 1
    for b in range(256):
        count = place[b]
        place[b] = total
        total += count
    for p in range(n):
        b = (src[p] >> shift) & 255
        dst[place[b]] = src[p]
        dst_owner[place[b]] = src_owner[p]
        place[b] += 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef tuple _build(tuple table_key):
    """(points, owners, starts, bits): the sorted ring and its bucket index."""
    kind, entries = table_key
    counts = ring_counts(kind, entries)
    cdef bint ketama = kind == "ketama"
    cdef Py_ssize_t total = sum(counts) * (4 if ketama else 1), n = len(entries)
    cdef Py_ssize_t e, j, k, p, q, count
    cdef array raw_points = clone(_U64_ARRAY, total, zero=False)
    cdef array raw_owners = clone(_INDEX_ARRAY, total, zero=False)
    cdef uint64_t* rp = <uint64_t*>raw_points.data.as_ulonglongs
    cdef int32_t* ro = <int32_t*>raw_owners.data.as_ints
    cdef uint64_t seed, value
    cdef uint32_t digest[4]
    cdef char name[128]
    cdef bytes address
    cdef Py_ssize_t length, digits
    cdef int word
    # Every entry's points, entry by entry.
    p = 0
    for e in range(n):
        address = entries[e][0].encode()
        count = counts[e]
        if ketama:
            # "ip:port-k": an address is at most 47 bytes ("[v6]:65535"), k at most 20 digits.
            length = len(address)
            memcpy(name, PyBytes_AS_STRING(address), length)
            name[length] = 45  # "-"
            for k in range(count):
                digits = len(str(k))
                value = k
                for j in range(digits - 1, -1, -1):
                    name[length + 1 + j] = <char>(48 + value % 10)
                    value //= 10
                md5(name, length + 1 + digits, digest)
                for word in range(4):
                    rp[p] = <uint64_t>digest[word] << 32
                    ro[p] = <int32_t>e
                    p += 1
        else:
            seed = xxh64(PyBytes_AS_STRING(address), len(address), 0)
            for j in range(count):
                rp[p] = xxh64_u64(<uint64_t>j, seed)
                ro[p] = <int32_t>e
                p += 1
    # Sorted by the top 16 bits with two stable counting passes (bits 48-55, then
    # 56-63), each a read and 256 sequential write streams; then an insertion sort,
    # which only moves a point within its group of equal top bits (two or three points):
    # stable throughout, so entry order survives among equal points.
    cdef array points = clone(_U64_ARRAY, total, zero=False)
    cdef array owners = clone(_INDEX_ARRAY, total, zero=False)
    cdef uint64_t* pt = <uint64_t*>points.data.as_ulonglongs
    cdef int32_t* ow = <int32_t*>owners.data.as_ints
    _radix_pass(rp, ro, pt, ow, total, 48)
    _radix_pass(pt, ow, rp, ro, total, 56)
    pt = rp
    ow = ro
    points, owners = raw_points, raw_owners
    cdef int32_t owner
    for p in range(1, total):
        value, owner, q = pt[p], ow[p], p
        while q > 0 and pt[q - 1] > value:
            pt[q] = pt[q - 1]
            ow[q] = ow[q - 1]
            q -= 1
        pt[q] = value
        ow[q] = owner
    # The bucket index: starts[b] is the first point whose top bits are b or more.
    cdef int bits = _bucket_bits(total)
    cdef int shift = 64 - bits
    cdef Py_ssize_t buckets = <Py_ssize_t>1 << bits
    cdef array starts = clone(_U32_ARRAY, buckets + 1, zero=False)
    cdef uint32_t* start = <uint32_t*>starts.data.as_uints
    p = 0
    for j in range(buckets + 1):
        while p < total and <Py_ssize_t>(pt[p] >> shift) < j:
            p += 1
        start[j] = <uint32_t>p
    # A shared value belongs to the entry sorting last, for every one of its copies.
    for p in range(total - 2, -1, -1):
        if pt[p] == pt[p + 1]:
            ow[p] = ow[p + 1]
    return points, owners, starts, bits


def ring_points(tuple table_key):
    """(points, owners): the ring for (hash, ((address, weight), ...)), entries in
    address order; lbcore._pure.ring.ring_points."""
    points, owners, _, _ = _build(table_key)
    return points, owners


@cython.final
cdef class _Ring:
    """The immutable picker: the ring, its bucket index, its resolution, and what it
    was built from."""

    cdef readonly tuple endpoints
    cdef readonly object table_key
    cdef readonly list entries
    cdef readonly array points
    cdef readonly array owners
    cdef readonly array starts
    cdef readonly array resolved       # empty when nothing can be picked
    cdef uint64_t size                 # points on the ring
    cdef int shift                     # 64 - log2(buckets)
    cdef bint usable
    cdef const uint64_t* pt
    cdef const uint32_t* start
    cdef const int32_t* slots          # resolved's items

    def __cinit__(self, tuple endpoints, object table_key, list entries, array points,
                  array owners, array starts, int bits, array resolved):
        self.endpoints = endpoints
        self.table_key = table_key
        self.entries = entries
        self.points = points
        self.owners = owners
        self.starts = starts
        self.resolved = resolved
        self.size = len(points)
        self.shift = 64 - bits
        self.usable = len(resolved) > 0
        self.pt = <const uint64_t*>points.data.as_ulonglongs
        self.start = <const uint32_t*>starts.data.as_uints
        self.slots = <const int32_t*>resolved.data.as_ints


cdef inline uint64_t _position(_Ring ring, uint64_t h) noexcept nogil:
    # bisect_right(points, h), wrapping to 0: the first point strictly above h.
    cdef uint64_t bucket = h >> ring.shift
    cdef uint64_t p = ring.start[bucket], end = ring.start[bucket + 1]
    while p < end and ring.pt[p] <= h:
        p += 1
    return p if p < ring.size else 0


cdef _Ring _NO_RING = _Ring(None, None, [], clone(_U64_ARRAY, 0, zero=False),
                            clone(_INDEX_ARRAY, 0, zero=False), clone(_U32_ARRAY, 3, zero=True),
                            1, clone(_INDEX_ARRAY, 0, zero=False))


@cython.final
cdef class RingHash(Balancer):
    """Ring hash (``ring``): consistent hashing on a ring, points by weight.

    The same key gives the same endpoint in every process with the same endpoint set,
    in any list order; removing an endpoint moves only its own keys.  ``hash="ketama"``
    places keys exactly as ``uhashring.HashRing(nodes, hash_fn="ketama")`` does for
    nodes named ``ip:port``; the default, ``"xxh64"``, is faster.  ``balance_factor=c``
    (1..100) bounds every endpoint to ``ceil(c * (active + 1) * its weight share)``
    connections: a key whose endpoint is full goes on along the ring (then `release`
    must be called).  `pick` is O(1) expected (a bucketed search of the ring; O(log P)
    in the pure twin), `update` O(P log P) for P points (160 per endpoint, 1024 to
    65536 in all).

    ``panic_threshold`` (percent; None: off): while fewer endpoints than that are healthy,
    picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> endpoints = [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80)]
    >>> ring = RingHash(endpoints)
    >>> ring.pick("client-7") == RingHash(endpoints[::-1]).pick("client-7")
    True
    >>> mine = ring.pick("client-7")
    >>> ring.update([e for e in endpoints if e != mine])   # only mine's keys move
    >>> ring.pick("client-7") != mine
    True
    """

    scheduler = "ring"
    cdef bint _ketama
    cdef object _balance_factor
    cdef uint64_t _percent
    cdef readonly _Ring _ring
    cdef Loads _loads

    def __init__(self, endpoints=(), *, hash="xxh64", balance_factor=None, panic_threshold=None):
        self._ketama = check_ring_hash(hash) == "ketama"
        self._balance_factor = None if balance_factor is None else check_balance_factor(balance_factor)
        self._percent = 0 if balance_factor is None else balance_percent(balance_factor)
        self._needs_key = True
        self._ring = _NO_RING
        self._loads = Loads("ring", (), (), None) if self._percent else None
        Balancer.__init__(self, endpoints, panic_threshold=panic_threshold)

    @property
    def hash(self):
        """"xxh64" or "ketama": how keys and points are hashed."""
        return "ketama" if self._ketama else "xxh64"

    @property
    def balance_factor(self):
        """The bound on loads (None: unbounded)."""
        return self._balance_factor

    @property
    def ring_size(self):
        """The number of points on the ring."""
        return self._ring.size

    cdef tuple _layout(self, tuple endpoints):
        addresses = [e.address for e in endpoints]
        entries = sorted(range(len(endpoints)), key=addresses.__getitem__)
        return (self.hash, tuple([(addresses[i], max(endpoints[i].weight, 1)) for i in entries])), entries

    cdef int _rebuild(self, tuple endpoints, list pickable) except -1:
        cdef _Ring old = self._ring
        cdef int bits
        if endpoints is old.endpoints:  # a failure mark: same endpoints, same ring
            table_key, entries = old.table_key, old.entries
            points, owners, starts, bits = old.points, old.owners, old.starts, 64 - old.shift
        else:
            table_key, entries = self._layout(endpoints)
            if table_key == old.table_key:
                points, owners, starts, bits = old.points, old.owners, old.starts, 64 - old.shift
            else:
                points, owners, starts, bits = _build(table_key)
        resolved = _resolve_fallback(owners, entries, pickable)
        loads = Loads("ring", endpoints, pickable, self._loads) if self._percent else None
        self._ring = _Ring(endpoints, table_key, entries, points, owners, starts, bits, resolved)
        self._loads = loads
        return 0

    cdef uint64_t _hash_for_pick(self, object key) except? 0:
        if key is None:
            raise TypeError("ring needs a key (a client address, a cookie value)")
        return _ketama_key(key) if self._ketama else hash_key(key)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Py_ssize_t _pick_index(self, uint64_t key_hash) except -2:
        if self._note_picks:
            self._note_pick()
        cdef _Ring ring = self._ring
        cdef Py_ssize_t index
        if not ring.usable:
            return -1
        if self._loads is None:
            return ring.slots[_position(ring, key_hash)]
        index = probe(self._loads, ring.slots, ring.size, _position(ring, key_hash), self._percent)
        loads_add(self._loads, index)
        return index

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def pick(self, key=None):
        """The endpoint for key (str, bytes or int); O(1) expected."""
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
        cdef int32_t* out
        cdef Py_ssize_t j, n, index
        cdef uint64_t h
        view = buffer_keys(keys)
        if view is None:
            return Balancer.pick_many(self, keys)
        int_keys = view
        n = int_keys.shape[0]
        result = clone(_INDEX_ARRAY, n, zero=False)
        out = <int32_t*>result.data.as_ints
        for j in range(n):
            h = <uint64_t>_ketama_u64(int_keys[j]) << 32 if self._ketama else xxh64_u64(int_keys[j], SEED)
            index = self._pick_index(h)
            if index < 0:
                raise self._no_endpoints()
            out[j] = <int32_t>index
        return result

    def release(self, endpoint):
        """A connection picked earlier has ended: counted with balance_factor, else a no-op."""
        if self._loads is not None:
            loads_release(self._loads, endpoint)

    cdef int _count(self, Py_ssize_t index) except -1:
        return 0 if self._loads is None else loads_add_checked(self._loads, index)

    def _active_counts(self):
        """Active connections by endpoint address (with balance_factor; tests, stats)."""
        return {} if self._loads is None else self._loads.counts()

    def _check(self):
        Balancer._check(self)
        cdef _Ring ring = self._ring
        cdef Py_ssize_t b, p
        assert ring.endpoints is self._endpoints
        table_key, entries = self._layout(self._endpoints)
        assert ring.table_key == table_key and ring.entries == entries
        if entries:
            # The pure twin's builder, whichever twin built this ring: a second opinion.
            points, owners = pure_twin("ring").ring_points(table_key)
            assert list(ring.points) == points and list(ring.owners) == list(owners)
            for b in range(len(ring.starts) - 1):
                for p in range(ring.start[b], ring.start[b + 1]):
                    assert ring.pt[p] >> ring.shift == <uint64_t>b
            assert ring.start[len(ring.starts) - 1] == ring.size
        else:
            assert ring.size == 0
        pickable = pickable_indices(self._endpoints, self._skipped)
        usable = set(pickable)
        check_resolution(ring.owners, [i if i in usable else -1 for i in entries], ring.resolved)
        assert (self._loads is None) == (self._percent == 0)
        if self._loads is not None:
            self._loads.check(self._endpoints, pickable)
