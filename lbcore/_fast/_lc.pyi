# The compiled twin has the pure twin's types.
from lbcore._lc_py import MAX_ACTIVE as MAX_ACTIVE
from lbcore._lc_py import LeastConnection as LeastConnection
from lbcore._lc_py import WeightedLeastConnection as WeightedLeastConnection
