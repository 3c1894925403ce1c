# XXH64 and key hashing for the compiled pickers.  Mirrors lbcore/_pure/hashing.py.
#
# The `xxhash` package has no C-level API and a Python call per pick would cost more
# than the whole pick budget, so this is a small port of XXH64 (the algorithm of
# xxhash's xxhash.h, spec: https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md).
# tests/test_hashing.py holds it bit-exact against the package over many lengths and
# seeds.  Reads are little-endian (memcpy of a native uint64 on x86-64/aarch64).

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.long cimport PyLong_Check
from cpython.unicode cimport PyUnicode_Check
from cpython.bytes cimport PyBytes_Check, PyBytes_AS_STRING, PyBytes_GET_SIZE

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1

# The five primes of XXH64 (xxhash_spec.md, "XXH64 algorithm description"), and
# lbcore's seed: "lbcore" in ASCII, the same as lbcore._pure.hashing.HASH_SEED.
cdef extern from *:
    """
    #define LBCORE_PRIME64_1 0x9E3779B185EBCA87ULL
    #define LBCORE_PRIME64_2 0xC2B2AE3D27D4EB4FULL
    #define LBCORE_PRIME64_3 0x165667B19E3779F9ULL
    #define LBCORE_PRIME64_4 0x85EBCA77C2B2AE63ULL
    #define LBCORE_PRIME64_5 0x27D4EB2F165667C5ULL
    #define LBCORE_HASH_SEED 0x6C62636F7265ULL
    """
    const uint64_t PRIME64_1 "LBCORE_PRIME64_1"
    const uint64_t PRIME64_2 "LBCORE_PRIME64_2"
    const uint64_t PRIME64_3 "LBCORE_PRIME64_3"
    const uint64_t PRIME64_4 "LBCORE_PRIME64_4"
    const uint64_t PRIME64_5 "LBCORE_PRIME64_5"
    const uint64_t SEED "LBCORE_HASH_SEED"


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _read64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t _read32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * PRIME64_2
    acc = _rotl(acc, 31)
    return acc * PRIME64_1


cdef inline uint64_t _merge_round(uint64_t acc, uint64_t v) noexcept nogil:
    acc ^= _round(0, v)
    return acc * PRIME64_1 + PRIME64_4


cdef inline uint64_t _avalanche(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= PRIME64_2
    h ^= h >> 29
    h *= PRIME64_3
    h ^= h >> 32
    return h


cdef inline uint64_t xxh64(const void* data, size_t length, uint64_t seed) noexcept nogil:
    """XXH64 of `length` bytes at `data`."""
    cdef const uint8_t* p = <const uint8_t*>data
    cdef const uint8_t* end = p + length
    cdef const uint8_t* limit
    cdef uint64_t v1, v2, v3, v4, h
    if length >= 32:
        # Four accumulators over 32-byte stripes, merged at the end.
        limit = end - 32
        v1 = seed + PRIME64_1 + PRIME64_2
        v2 = seed + PRIME64_2
        v3 = seed
        v4 = seed - PRIME64_1
        while p <= limit:
            v1 = _round(v1, _read64(p))
            v2 = _round(v2, _read64(p + 8))
            v3 = _round(v3, _read64(p + 16))
            v4 = _round(v4, _read64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge_round(h, v1)
        h = _merge_round(h, v2)
        h = _merge_round(h, v3)
        h = _merge_round(h, v4)
    else:
        h = seed + PRIME64_5
    h += <uint64_t>length
    # The tail: 8-byte lanes, one 4-byte lane, then single bytes.
    while p + 8 <= end:
        h ^= _round(0, _read64(p))
        h = _rotl(h, 27) * PRIME64_1 + PRIME64_4
        p += 8
    if p + 4 <= end:
        h ^= <uint64_t>_read32(p) * PRIME64_1
        h = _rotl(h, 23) * PRIME64_2 + PRIME64_3
        p += 4
    while p < end:
        h ^= <uint64_t>p[0] * PRIME64_5
        h = _rotl(h, 11) * PRIME64_1
        p += 1
    return _avalanche(h)


cdef inline uint64_t xxh64_u64(uint64_t value, uint64_t seed) noexcept nogil:
    """XXH64 of the 8 little-endian bytes of `value`: xxh64() unrolled for length 8."""
    cdef uint64_t h = seed + PRIME64_5 + 8
    h ^= _round(0, value)
    h = _rotl(h, 27) * PRIME64_1 + PRIME64_4
    return _avalanche(h)


cdef uint64_t _int_key_slow(object key) except? 0


cdef inline uint64_t hash_key(object key) except? 0:
    """The 64-bit hash of a str, bytes or int key (lbcore._pure.hashing.key_hash)."""
    cdef const char* data
    cdef Py_ssize_t size
    cdef int overflow
    cdef long long small
    if PyUnicode_Check(key):
        # For an ASCII str this is the string's own buffer: no copy, no allocation.
        data = PyUnicode_AsUTF8AndSize(key, &size)
        return xxh64(data, <size_t>size, SEED)
    if PyBytes_Check(key):
        return xxh64(PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key), SEED)
    if PyLong_Check(key):
        small = PyLong_AsLongLongAndOverflow(key, &overflow)
        if overflow == 0:
            return xxh64_u64(<uint64_t>small, SEED)
        return _int_key_slow(key)
    raise TypeError(f"key must be str, bytes or int, not {type(key).__name__}")
