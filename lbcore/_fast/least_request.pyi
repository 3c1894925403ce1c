# The compiled twin has the pure twin's types.
from lbcore._pure.least_request import MAX_ACTIVE_REQUEST_BIAS as MAX_ACTIVE_REQUEST_BIAS
from lbcore._pure.least_request import MAX_CHOICE_COUNT as MAX_CHOICE_COUNT
from lbcore._pure.least_request import LeastRequest as LeastRequest
from lbcore._pure.least_request import splitmix64 as splitmix64
