# The compiled twin has the pure twin's types.
from lbcore._affinity_py import Affinity as Affinity
