"""The pure-Python twins, gathered under the names lbcore._fast exports."""

from ._buckets_py import tile_buckets
from ._dh_py import DestinationHash
from ._hashing_py import key_hash
from ._maglev_py import Maglev
from ._maglev_table_py import maglev_counts, maglev_permutation, maglev_populate, maglev_table
from ._rr_py import RoundRobin
from ._sh_py import SourceHash

__all__ = [
    "key_hash",
    "RoundRobin",
    "DestinationHash",
    "SourceHash",
    "Maglev",
    "tile_buckets",
    "maglev_counts",
    "maglev_permutation",
    "maglev_populate",
    "maglev_table",
]
