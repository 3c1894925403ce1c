# The compiled twin has the pure twin's types.
from lbcore._pure.session_table import SessionTable as SessionTable
