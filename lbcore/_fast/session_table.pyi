# The compiled twin has the pure twin's types.
from lbcore._pure.affinity import SessionTable as SessionTable
