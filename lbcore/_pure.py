"""The pure-Python twins, gathered under the names lbcore._fast exports."""

from ._affinity_py import Affinity
from ._hashing_py import key_hash
from ._lc_py import LeastConnection, WeightedLeastConnection
from ._rr_py import RoundRobin
from ._wrr_py import WeightedRoundRobin

__all__ = ["key_hash", "RoundRobin", "WeightedRoundRobin", "LeastConnection", "WeightedLeastConnection", "Affinity"]
