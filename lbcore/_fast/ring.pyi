# The compiled twin has the pure twin's types.
from lbcore._pure.ring import RingHash as RingHash
from lbcore._pure.ring import ketama_hash as ketama_hash
from lbcore._pure.ring import ring_points as ring_points
