"""Key hashing: the one place a pick key becomes a 64-bit value.

The compiled twin is used unless ``LBCORE_NO_EXTENSIONS=1`` or it is not built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extensions import NO_EXTENSIONS

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._hashing_py import HASH_SEED, key_hash
else:
    try:
        from ._fast._hashing import HASH_SEED, key_hash
    except ImportError:  # not built: a pure install, or a checkout without build_ext
        from ._hashing_py import HASH_SEED, key_hash

__all__ = ["HASH_SEED", "key_hash"]
