"""Destination hashing (``dh``), pure-Python twin (compiled: lbcore/_fast/dh.pyx).

IPVS ``dh`` (net/netfilter/ipvs/ip_vs_dh.c): a table of 256 buckets by default, one
bucket per endpoint cycling through the list (weights ignored); the key is the
destination.  IPVS dh has no fallback and drops the connection when the bucket's
destination is unavailable; here dh falls back to the next usable bucket as sh and mh
do, because a library caller would otherwise get NoEndpointsError while usable
endpoints exist.
"""

from __future__ import annotations

from ..models import Endpoint
from .buckets import BucketHash

__all__ = ["DestinationHash"]


class DestinationHash(BucketHash):
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
    __slots__ = ()

    def _turns(self, endpoints: tuple[Endpoint, ...]) -> tuple[int, ...]:
        return (1,) * len(endpoints)
