# The compiled twin has the pure twin's types.
from lbcore._pure.poller import Poller as Poller
