# The compiled twin has the pure twin's types.
from lbcore._pure.sh import SourceHash as SourceHash
