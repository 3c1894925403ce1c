# The compiled twin has the pure twin's types.
from lbcore._pure.relay import REPLAY_LIMIT as REPLAY_LIMIT
from lbcore._pure.relay import Relay as Relay
from lbcore._pure.relay import wire as wire
from lbcore._pure.relay import ClientSide as ClientSide
from lbcore._pure.relay import Side as Side
from lbcore._pure.relay import UpstreamSide as UpstreamSide
