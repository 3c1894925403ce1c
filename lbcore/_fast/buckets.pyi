# The compiled twin has the pure twin's types.
from lbcore._pure.buckets import BucketHash as BucketHash, tile_buckets as tile_buckets
