# The round-robin cycle, cimported by _wrr.pyx, whose precomputed smooth-WRR period is
# the same kind of picker: a fixed sequence of endpoints walked by a cursor.

cimport cython


@cython.final
cdef class Cycle:
    cdef readonly tuple endpoints   # the picks of one period, in order
    cdef readonly tuple indices     # their indices into the balancer's endpoints
    cdef Py_ssize_t n
