# The compiled twin has the pure twin's types.
from lbcore._pure.maglev import Maglev as Maglev
