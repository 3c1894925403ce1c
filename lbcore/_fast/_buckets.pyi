# The compiled twin has the pure twin's types.
from lbcore._buckets_py import BucketHash as BucketHash, tile_buckets as tile_buckets
