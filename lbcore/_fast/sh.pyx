# Source hashing (sh).  Mirrors lbcore/_pure/sh.py `SourceHash`, pick for pick: weight
# consecutive buckets per endpoint in list order (IPVS ip_vs_sh.c), with sh-fallback.

cimport cython

from lbcore._fast.buckets cimport BucketHash

__all__ = ["SourceHash"]


@cython.final
cdef class SourceHash(BucketHash):
    """Source hashing over a weighted bucket table (ipvsadm sh); see lbcore._pure.sh."""

    scheduler = "sh"

    cdef tuple _turns(self, tuple endpoints):
        return tuple([max(e.weight, 1) for e in endpoints])
