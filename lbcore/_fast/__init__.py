"""The compiled twins.  Importing this package fails with ImportError when they are not built.

Each module mirrors a pure-Python twin named in its header comment; lbcore.balancers
and lbcore.hashing choose between the two.  lbcore._pure exports the same names.
"""

from ._affinity import Affinity
from ._buckets import tile_buckets
from ._dh import DestinationHash
from ._hashing import key_hash
from ._lc import LeastConnection, WeightedLeastConnection
from ._maglev import Maglev
from ._maglev_table import maglev_counts, maglev_permutation, maglev_populate, maglev_table
from ._rr import RoundRobin
from ._sh import SourceHash
from ._wrr import WeightedRoundRobin

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
