# Destination hashing (dh).  Mirrors lbcore/_pure/dh.py `DestinationHash`, pick for pick:
# one bucket per endpoint, cycling the list (IPVS ip_vs_dh.c), with fallback.

cimport cython

from lbcore._fast.buckets cimport BucketHash

__all__ = ["DestinationHash"]


@cython.final
cdef class DestinationHash(BucketHash):
    """Destination hashing over a bucket table (ipvsadm ``dh``).

    ``table_size`` buckets (a power of two, 16..1048576, default 256; at least the
    number of endpoints).  `update` is O(table_size); `pick` is O(1).

    ``panic_threshold`` (percent; None: off): while fewer endpoints than that are healthy,
    picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> b = DestinationHash([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)])
    >>> b.pick("203.0.113.7") == b.pick("203.0.113.7")
    True
    """

    scheduler = "dh"

    cdef tuple _turns(self, tuple endpoints):
        return (1,) * len(endpoints)
