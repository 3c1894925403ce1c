# The compiled base of dh and sh, cimported by _dh and _sh.

from lbcore._fast.hash_balancer cimport HashBalancer


cdef class BucketHash(HashBalancer):
    # How many consecutive buckets each endpoint takes per cycle.
    cdef tuple _turns(self, tuple endpoints)
