# The compiled twin has the pure twin's types.
from lbcore._pure.stream import HIGH_WATER as HIGH_WATER
from lbcore._pure.stream import LOW_WATER as LOW_WATER
from lbcore._pure.stream import READ_SIZE as READ_SIZE
from lbcore._pure.stream import Stream as Stream
from lbcore._pure.stream import accept as accept
from lbcore._pure.stream import accepted as accepted
from lbcore._pure.stream import dial as dial
