# Source hashing (sh).  Mirrors lbcore/_pure/sh.py `SourceHash`, pick for pick: weight
# consecutive buckets per endpoint in list order (IPVS ip_vs_sh.c), with sh-fallback.

cimport cython

from lbcore._fast.buckets cimport BucketHash

__all__ = ["SourceHash"]


@cython.final
cdef class SourceHash(BucketHash):
    """Source hashing over a weighted bucket table (ipvsadm ``sh`` with ``sh-fallback``).

    ``table_size`` buckets (a power of two, 16..1048576, default 256; at least the sum
    of the weights, each counted as at least 1).  The last cycle is cut where the table
    ends, so endpoints early in the list get up to one cycle more: a table much larger
    than the total weight spreads more evenly.  `update` is O(table_size); `pick` is O(1).

    ``panic_threshold`` (percent; None: off): while fewer endpoints than that are healthy,
    picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> b = SourceHash([Endpoint("10.0.0.1", 80, weight=3), Endpoint("10.0.0.2", 80)])
    >>> b.pick("198.51.100.4") == b.pick("198.51.100.4")
    True
    """

    scheduler = "sh"

    cdef tuple _turns(self, tuple endpoints):
        return tuple([max(e.weight, 1) for e in endpoints])
