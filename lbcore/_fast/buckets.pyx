# IPVS bucket tables for dh and sh.  Mirrors lbcore/_pure/buckets.py `tile_buckets` and
# `BucketHash`; read that file for the rule (IPVS ip_vs_sh_reassign) and how it differs
# from IPVS (weight-0 endpoints keep one bucket, a table too small is an error).

from cpython.array cimport array, clone
from libc.stdint cimport int32_t

from lbcore._fast.hash_balancer cimport HashBalancer

from lbcore._shared.table_invariants import check_tiling
from lbcore._shared.table_size import BUCKETS_DEFAULT, check_bucket_table_size, check_buckets_fit

__all__ = ["BucketHash", "tile_buckets"]

cdef array _INDEX_ARRAY = array("i")


def tile_buckets(tuple turns, Py_ssize_t size):
    """The entry owning each of size buckets: entry e takes turns[e] in a row, entries
    in order, cycling until full; O(size).  Empty when there are no entries."""
    cdef Py_ssize_t n = len(turns), bucket, entry = 0
    cdef array table = clone(_INDEX_ARRAY, size if n else 0, zero=False)
    cdef int32_t* out = <int32_t*>table.data.as_ints
    cdef array limits = array("q", turns)
    cdef long long* limit = limits.data.as_longlongs
    cdef long long taken = 0
    for bucket in range(len(table)):
        out[bucket] = <int32_t>entry
        taken += 1
        if taken >= limit[entry]:
            entry = entry + 1 if entry + 1 < n else 0
            taken = 0
    return table


cdef class BucketHash(HashBalancer):
    """Base of dh and sh: a power-of-two bucket table tiled in list order."""

    def __init__(self, endpoints=(), *, table_size=BUCKETS_DEFAULT, panic_threshold=None):
        HashBalancer.__init__(
            self, endpoints, check_bucket_table_size(table_size), panic_threshold=panic_threshold
        )

    cdef tuple _turns(self, tuple endpoints):
        raise NotImplementedError

    cdef tuple _layout(self, tuple endpoints):
        cdef tuple turns = self._turns(endpoints)
        check_buckets_fit(self.scheduler, self.table_size, turns)
        return turns, list(range(len(endpoints)))

    cdef array _populate(self, object table_key):
        return tile_buckets(table_key, self.table_size)

    def _check(self):
        HashBalancer._check(self)
        check_tiling(self._picker.table, self._picker.table_key)
