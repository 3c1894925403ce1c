# The compiled twin has the pure twin's types.
from lbcore.simulate._replay_py import HeldReplay as HeldReplay
from lbcore.simulate._replay_py import SimClock as SimClock
from lbcore.simulate._replay_py import key_hashes as key_hashes
