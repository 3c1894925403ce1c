# The compiled twin has the pure twin's types.
from lbcore._pure.rr import RoundRobin as RoundRobin
