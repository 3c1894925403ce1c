"""The pure-Python twins, gathered under the names lbcore._fast exports."""

from ._affinity_py import Affinity
from ._buckets_py import tile_buckets
from ._dh_py import DestinationHash
from ._hashing_py import key_hash
from ._lc_py import LeastConnection, WeightedLeastConnection
from ._maglev_py import Maglev
from ._maglev_table_py import maglev_counts, maglev_permutation, maglev_populate, maglev_table
from ._rr_py import RoundRobin
from ._sh_py import SourceHash
from ._wrr_py import WeightedRoundRobin

__all__ = [
    "key_hash",
    "RoundRobin",
    "WeightedRoundRobin",
    "LeastConnection",
    "WeightedLeastConnection",
    "DestinationHash",
    "SourceHash",
    "Maglev",
    "Affinity",
    "tile_buckets",
    "maglev_counts",
    "maglev_permutation",
    "maglev_populate",
    "maglev_table",
]
