"""The compiled twins.  Importing this package fails with ImportError when they are not built.

Each module mirrors a pure-Python twin named in its header comment; lbcore.balancers
and lbcore.hashing choose between the two.
"""

from ._affinity import Affinity
from ._hashing import key_hash
from ._lc import LeastConnection, WeightedLeastConnection
from ._rr import RoundRobin
from ._wrr import WeightedRoundRobin

__all__ = ["key_hash", "RoundRobin", "WeightedRoundRobin", "LeastConnection", "WeightedLeastConnection", "Affinity"]
