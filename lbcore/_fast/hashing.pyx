# Compiled twin of lbcore/_pure/hashing.py: key_hash() and the XXH64 it is built on.
# The C-level functions live in _hashing.pxd so that every picker can cimport them.

from libc.stdint cimport uint64_t

__all__ = ["HASH_SEED", "key_hash", "xxh64_intdigest"]

HASH_SEED = 0x6C62636F7265
_MASK64 = 2**64 - 1


cdef uint64_t _int_key_slow(object key) except? 0:
    # An int beyond the signed 64-bit range: unsigned values up to 2**64-1 are keys too.
    if not -(2**63) <= key <= _MASK64:
        raise ValueError(f"int key {key} does not fit in 64 bits")
    return xxh64_u64(<uint64_t>(key & _MASK64), SEED)


def key_hash(key):
    """The 64-bit hash of a key, the same in every process (see lbcore._pure.hashing)."""
    return hash_key(key)


def xxh64_intdigest(const unsigned char[::1] data, uint64_t seed=0):
    """XXH64 of a bytes-like object; the test holds it against the xxhash package."""
    if data.shape[0] == 0:
        return xxh64(NULL, 0, seed)
    return xxh64(&data[0], <size_t>data.shape[0], seed)
