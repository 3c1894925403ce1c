"""The compiled twins.  Importing this package fails with ImportError when they are not built.

Each module mirrors a pure-Python twin named in its header comment; lbcore.balancers
and lbcore.hashing choose between the two.
"""

from ._affinity import Affinity
from ._hashing import key_hash
from ._rr import RoundRobin

__all__ = ["key_hash", "RoundRobin", "Affinity"]
