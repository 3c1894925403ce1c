# The compiled twin has the pure twin's types.
from lbcore._pure.copier import BUFFER_SIZE as BUFFER_SIZE
from lbcore._pure.copier import Copier as Copier
