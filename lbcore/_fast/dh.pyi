# The compiled twin has the pure twin's types.
from lbcore._pure.dh import DestinationHash as DestinationHash
