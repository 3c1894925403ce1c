# The compiled twin has the pure twin's types.
from lbcore._balancer_py import Balancer as Balancer
