# The compiled twin has the pure twin's types.
from lbcore._dh_py import DestinationHash as DestinationHash
