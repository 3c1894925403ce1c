# The compiled twin has the pure twin's types.
from lbcore._pure.hash_balancer import HashBalancer as HashBalancer
