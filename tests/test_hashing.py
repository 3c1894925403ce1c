"""Key hashing: one seeded XXH64, bit-exact in both twins and in every process."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import xxhash

from lbcore._pure.hashing import HASH_SEED

# Pinned once from the xxhash package; if these move, every fleet's picks move.
KNOWN = [
    ("10.0.0.1", 0xF2014817497C10E2),
    ("2001:db8::1", 0x9200D1D68325E0D3),
    ("session=abc123", 0xF4EECED5F0A561DC),
    ("", 0xA55CEC09CB78ABDF),
    (b"\x00\xff", 0x449EDEAD7F7EF736),
    (0, 0x40904FF364565DEC),
    (1, 0x1A52B776694C62BE),
    (-1, 0xBB3EDDA110C64AF2),
    (2**63, 0x128F22949449DC93),
]


@pytest.mark.parametrize("key,expected", KNOWN)
def test_known_answers(impl, key, expected):
    assert impl.key_hash(key) == expected


@pytest.mark.parametrize("key,_", KNOWN)
def test_known_answers_follow_the_xxhash_package(key, _):
    from lbcore._pure.hashing import key_hash

    if isinstance(key, str):
        data = key.encode()
    elif isinstance(key, bytes):
        data = key
    else:
        data = (key % 2**64).to_bytes(8, "little")
    assert key_hash(key) == xxhash.xxh64_intdigest(data, HASH_SEED)


def test_seed_is_lbcore_in_ascii():
    assert HASH_SEED.to_bytes(6, "big") == b"lbcore"


def test_compiled_xxh64_is_bit_exact_with_the_package(both):
    _, fast = both
    from lbcore._fast.hashing import xxh64_intdigest

    rng = random.Random(20261125)
    seeds = [0, 1, HASH_SEED, 2**64 - 1, 2**32 + 7] + [rng.getrandbits(64) for _ in range(5)]
    # Every length from 0 to 300 crosses each branch of XXH64 (tail bytes, 4- and
    # 8-byte lanes, 32-byte stripes) many times over.
    for length in range(301):
        data = rng.randbytes(length)
        for seed in seeds:
            assert xxh64_intdigest(data, seed) == xxhash.xxh64_intdigest(data, seed), (length, seed)


def test_twins_agree_on_random_keys(both):
    pure, fast = both
    rng = random.Random(7)
    keys: list = []
    for _ in range(2000):
        keys.append(rng.randbytes(rng.randrange(64)))
        keys.append("".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(20))))
        keys.append(rng.randrange(-(2**63), 2**64))
    for key in keys:
        assert fast.key_hash(key) == pure.key_hash(key), key


def test_str_key_is_its_utf8_bytes(impl):
    assert impl.key_hash("héllo") == impl.key_hash("héllo".encode())


def test_int_key_is_two_complement(impl):
    assert impl.key_hash(-1) == impl.key_hash(2**64 - 1)
    assert impl.key_hash(-(2**63)) == impl.key_hash(2**63)


@pytest.mark.parametrize("bad", [2**64, -(2**63) - 1])
def test_int_key_out_of_range(impl, bad):
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        impl.key_hash(bad)


@pytest.mark.parametrize("bad", [1.5, None, ("10.0.0.1",), bytearray(b"x")])
def test_bad_key_type(impl, bad):
    with pytest.raises(TypeError, match="key must be str, bytes or int"):
        impl.key_hash(bad)


def test_same_value_in_separate_processes():
    # Python's hash() is salted per process; lbcore's key hash must not be.
    code = "import lbcore; print(lbcore.key_hash('10.1.2.3'), lbcore.key_hash(b'cookie'), lbcore.key_hash(42))"
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1]
    import lbcore

    assert runs[0].split() == [str(lbcore.key_hash(k)) for k in ("10.1.2.3", b"cookie", 42)]
