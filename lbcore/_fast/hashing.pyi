# The compiled twin has the pure twin's types.
from lbcore._pure.hashing import HASH_SEED as HASH_SEED, key_hash as key_hash

def xxh64_intdigest(data: bytes, seed: int = ...) -> int: ...
