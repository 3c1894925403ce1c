# The compiled twin has the pure twin's types.
from lbcore._rr_py import RoundRobin as RoundRobin
