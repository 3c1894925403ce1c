"""The pure-Python twins, gathered under the names lbcore._fast exports."""

from ._affinity_py import Affinity
from ._hashing_py import key_hash
from ._rr_py import RoundRobin

__all__ = ["key_hash", "RoundRobin", "Affinity"]
