# The compiled twin has the pure twin's types.
from lbcore._pure.lc import MAX_ACTIVE as MAX_ACTIVE
from lbcore._pure.lc import LeastConnection as LeastConnection
from lbcore._pure.lc import WeightedLeastConnection as WeightedLeastConnection
