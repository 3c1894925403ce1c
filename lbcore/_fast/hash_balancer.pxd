# The compiled base of the hash schedulers, cimported by _buckets (dh, sh) and _maglev.

cimport cython
from cpython.array cimport array
from libc.stdint cimport int32_t, uint64_t

from lbcore._fast.balancer cimport Balancer


@cython.final
cdef class _HashPicker:
    cdef readonly tuple endpoints
    cdef readonly object table_key     # what the table was built from
    cdef readonly array table          # the entry owning each slot
    cdef readonly list entries         # the endpoint index of each entry
    cdef readonly array resolved       # the endpoint index a pick returns, per slot
    cdef uint64_t size                 # len(resolved): 0 when nothing can be picked
    cdef const int32_t* slots          # resolved's items


cdef class HashBalancer(Balancer):
    cdef readonly Py_ssize_t table_size
    cdef readonly _HashPicker _picker

    # (table key, entries) for these endpoints; raises ConfigError if they do not fit.
    cdef tuple _layout(self, tuple endpoints)
    # The table for a table key: the entry owning each slot.
    cdef array _populate(self, object table_key)
