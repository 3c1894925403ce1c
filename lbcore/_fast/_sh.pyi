# The compiled twin has the pure twin's types.
from lbcore._sh_py import SourceHash as SourceHash
