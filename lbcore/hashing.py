"""Key hashing: the one place a pick key becomes a 64-bit value.

The compiled twin is used unless ``LBCORE_NO_EXTENSIONS=1`` or it is not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._twins import twin

if TYPE_CHECKING:
    from ._pure.hashing import HASH_SEED, key_hash
else:
    HASH_SEED = twin("hashing").HASH_SEED
    key_hash = twin("hashing").key_hash

__all__ = ["HASH_SEED", "key_hash"]
