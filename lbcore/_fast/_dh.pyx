# Destination hashing (dh).  Mirrors lbcore/_dh_py.py `DestinationHash`, pick for pick:
# one bucket per endpoint, cycling the list (IPVS ip_vs_dh.c), with fallback.

cimport cython

from lbcore._fast._buckets cimport BucketHash


@cython.final
cdef class DestinationHash(BucketHash):
    """Destination hashing over a bucket table (ipvsadm dh); see lbcore._dh_py."""

    scheduler = "dh"

    cdef tuple _turns(self, tuple endpoints):
        return (1,) * len(endpoints)
