# The compiled base of the hash schedulers, cimported by _buckets (dh, sh) and _maglev.

cimport cython
from cpython.array cimport array
from libc.stdint cimport int32_t, uint64_t

from lbcore._fast.balancer cimport Balancer
from lbcore._fast.loads cimport Loads


@cython.final
cdef class _HashPicker:
    cdef readonly tuple endpoints
    cdef readonly object table_key     # what the table was built from
    cdef readonly array table          # the entry owning each slot
    cdef readonly list entries         # the endpoint index of each entry
    cdef readonly array resolved       # the endpoint index a pick returns, per slot
    cdef uint64_t size                 # len(resolved): 0 when nothing can be picked
    cdef const int32_t* slots          # resolved's items


# Per position of a table (or ring), the endpoint index a pick returns: its owner if
# usable, else the owner of the next usable position; cimported by ring.pyx.
cdef array _resolve_fallback(array table, list entries, list pickable)


cdef class HashBalancer(Balancer):
    cdef readonly Py_ssize_t table_size
    cdef readonly _HashPicker _picker
    cdef readonly object balance_factor   # None: unbounded
    cdef uint64_t _percent                # balance_factor in percent; 0: unbounded
    cdef Loads _loads                     # None unless bounded

    # (table key, entries) for these endpoints; raises ConfigError if they do not fit.
    cdef tuple _layout(self, tuple endpoints)
    # The table for a table key: the entry owning each slot.
    cdef array _populate(self, object table_key)
