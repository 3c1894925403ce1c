# The compiled twin has the pure twin's types.
from lbcore.forwarder._copier_py import BUFFER_SIZE as BUFFER_SIZE
from lbcore.forwarder._copier_py import Copier as Copier
