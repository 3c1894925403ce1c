"""Source hashing (``sh``), pure-Python twin (compiled: lbcore/_fast/sh.pyx).

IPVS ``sh`` (net/netfilter/ipvs/ip_vs_sh.c) with ``sh-fallback``: a table of 256
buckets by default, each endpoint taking ``weight`` consecutive buckets in list order,
cycling until full; the key is the client address (or anything else that should stick).
When the bucket's endpoint cannot take new connections (weight 0, not ready, failed) the
pick falls back to the next usable bucket.  IPVS loops around the table from a point
derived from the hash (its code adds the hash twice); here the loop starts at the next
bucket, so a down endpoint's keys go to the endpoint tiled after it.
"""

from __future__ import annotations

from ..models import Endpoint
from .buckets import BucketHash

__all__ = ["SourceHash"]


class SourceHash(BucketHash):
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
    __slots__ = ()

    def _turns(self, endpoints: tuple[Endpoint, ...]) -> tuple[int, ...]:
        return tuple(max(e.weight, 1) for e in endpoints)
