# Source hashing (sh).  Mirrors lbcore/_sh_py.py `SourceHash`, pick for pick: weight
# consecutive buckets per endpoint in list order (IPVS ip_vs_sh.c), with sh-fallback.

cimport cython

from lbcore._fast._buckets cimport BucketHash


@cython.final
cdef class SourceHash(BucketHash):
    """Source hashing over a weighted bucket table (ipvsadm sh); see lbcore._sh_py."""

    scheduler = "sh"

    cdef tuple _turns(self, tuple endpoints):
        return tuple([max(e.weight, 1) for e in endpoints])
