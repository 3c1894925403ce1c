# The compiled twin has the pure twin's types.
from lbcore._pure.loads import Loads as Loads
