# The compiled twin has the pure twin's types.
from lbcore._pure.wrr import MAX_CYCLE as MAX_CYCLE
from lbcore._pure.wrr import MAX_CYCLE_WORK as MAX_CYCLE_WORK
from lbcore._pure.wrr import WeightedRoundRobin as WeightedRoundRobin
from lbcore._pure.wrr import swrr_cycle as swrr_cycle
