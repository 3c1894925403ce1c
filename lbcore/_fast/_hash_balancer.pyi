# The compiled twin has the pure twin's types.
from lbcore._hash_balancer_py import HashBalancer as HashBalancer
