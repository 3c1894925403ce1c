"""Key hashing, pure-Python twin: every key becomes one 64-bit value.

A key is an IP address string, a cookie value, or a 64-bit number.  It is hashed with
XXH64 and lbcore's fixed seed, never with Python's ``hash()`` (salted per process), so
the same key picks the same endpoint in every process of a fleet.

- ``str``: XXH64 of its UTF-8 bytes;
- ``bytes``: XXH64 of the bytes;
- ``int`` in [-2**63, 2**64): XXH64 of the 8 little-endian bytes of its 64-bit two's
  complement (so ``-1`` and ``2**64 - 1`` are the same key).

The compiled twin (``lbcore/_fast/hashing.pyx``) must give the same values; a
known-answer test pins both.
"""

from __future__ import annotations

from xxhash import xxh64_intdigest

__all__ = ["HASH_SEED", "key_hash", "xxh64_intdigest"]

#: "lbcore" in ASCII.
HASH_SEED = 0x6C62636F7265
_MASK64 = 2**64 - 1


def key_hash(key: str | bytes | int) -> int:
    """The 64-bit hash of a key, the same in every process.

    >>> key_hash("10.0.0.1") == key_hash(b"10.0.0.1")
    True
    >>> key_hash(-1) == key_hash(2**64 - 1)
    True
    """
    if isinstance(key, str):
        return xxh64_intdigest(key.encode("utf-8"), HASH_SEED)
    if isinstance(key, bytes):
        return xxh64_intdigest(key, HASH_SEED)
    if isinstance(key, int):
        if not -(2**63) <= key <= _MASK64:
            raise ValueError(f"int key {key} does not fit in 64 bits")
        return xxh64_intdigest((key & _MASK64).to_bytes(8, "little"), HASH_SEED)
    raise TypeError(f"key must be str, bytes or int, not {type(key).__name__}")
