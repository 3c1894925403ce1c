# The compiled twin has the pure twin's types.
from lbcore._maglev_py import Maglev as Maglev
