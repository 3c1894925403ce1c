# Maglev consistent hashing (mh).  Mirrors lbcore/_pure/maglev.py `Maglev`, pick for pick;
# read that file for the decisions (endpoints sorted by address, weight 0 keeps slots).
# The table is built by lbcore._fast.maglev_table; the pick is HashBalancer's.

cimport cython
from cpython.array cimport array

from lbcore._fast.hash_balancer cimport HashBalancer

from lbcore._fast.maglev_table import maglev_table
from lbcore._shared.table_invariants import check_maglev_counts
from lbcore._shared.table_size import MAGLEV_DEFAULT, check_maglev_fit, check_maglev_table_size

__all__ = ["Maglev"]


@cython.final
cdef class Maglev(HashBalancer):
    """Maglev consistent hashing (ipvsadm ``mh`` with ``mh-fallback``).

    ``table_size`` slots: a prime greater than the number of endpoints, default 65537;
    at least 100 times the number of endpoints keeps every endpoint within 1 % of its
    share.  Removing one of n endpoints moves its own 1/n of the keys and some more
    (1.54 % of keys for one of 100 at M = 65537; bench/README.md).
    `update` is O(M log M) when the set or the weights change and O(M) otherwise (a
    failure mark or a readiness flip only redoes the fallback); `pick` is O(1).
    ``balance_factor=c`` (1..100) bounds every endpoint to ``ceil(c * (active + 1) *
    its weight share)`` connections: a key whose endpoint is full goes to the owner of
    the next slot with room (then `release` must be called; O(1) expected).

    ``panic_threshold`` (percent; None: off): while fewer endpoints than that are healthy,
    picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> endpoints = [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)]
    >>> a = Maglev(endpoints, table_size=251)
    >>> b = Maglev(endpoints[::-1], table_size=251)
    >>> a.pick("client-42") == b.pick("client-42")
    True
    """

    scheduler = "mh"

    def __init__(self, endpoints=(), *, table_size=MAGLEV_DEFAULT, balance_factor=None, panic_threshold=None):
        HashBalancer.__init__(
            self, endpoints, check_maglev_table_size(table_size), balance_factor, panic_threshold
        )

    cdef tuple _layout(self, tuple endpoints):
        check_maglev_fit(self.table_size, len(endpoints))
        addresses = [e.address for e in endpoints]
        entries = sorted(range(len(endpoints)), key=addresses.__getitem__)
        table_key = tuple([(addresses[i], endpoints[i].weight or 1) for i in entries])  # weight 0 as 1
        return table_key, entries

    cdef array _populate(self, object table_key):
        return maglev_table(self.table_size, table_key)

    def _check(self):
        HashBalancer._check(self)
        check_maglev_counts(self._picker.table, [weight for _, weight in self._picker.table_key])
