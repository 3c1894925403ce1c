# The compiled twin has the pure twin's types.
from lbcore._pure.replay import HeldReplay as HeldReplay
from lbcore._pure.replay import SimClock as SimClock
from lbcore._pure.replay import key_hashes as key_hashes
