# The compiled twin has the pure twin's types.
from lbcore._pure.balancer import Balancer as Balancer
