# Destination hashing (dh).  Mirrors lbcore/_pure/dh.py `DestinationHash`, pick for pick:
# one bucket per endpoint, cycling the list (IPVS ip_vs_dh.c), with fallback.

cimport cython

from lbcore._fast.buckets cimport BucketHash

__all__ = ["DestinationHash"]


@cython.final
cdef class DestinationHash(BucketHash):
    """Destination hashing over a bucket table (ipvsadm dh); see lbcore._pure.dh."""

    scheduler = "dh"

    cdef tuple _turns(self, tuple endpoints):
        return (1,) * len(endpoints)
