"""Maglev consistent hashing (``mh``), pure-Python twin (compiled: lbcore/_fast/maglev.pyx).

The table (lbcore._pure.maglev_table) is built from the endpoints sorted by address, so
every process with the same endpoint *set* and weights builds the same table, whatever
order the endpoints are listed in (Envoy sorts its hosts the same way).

Weight 0: every listed endpoint owns slots, a quiesced one as if its weight were 1, and
is skipped at pick time by the fallback (lbcore._pure.hash_balancer).  IPVS mh keeps a
draining destination's slots by remembering its ``last_weight``; that makes the table
depend on history, so a process started during a drain would disagree with its peers.
Here the table is a function of the endpoint list alone; with equal weights (Kubernetes
EndpointSlices carry none) quiescing, failing or a readiness flip moves exactly the keys
of that endpoint, and they come back when it does.
"""

from __future__ import annotations

from array import array
from typing import Any

from .._shared.table_invariants import check_maglev_counts
from .._shared.table_size import (
    MAGLEV_DEFAULT,
    check_maglev_fit,
    check_maglev_table_size,
)
from ..models import Endpoint
from .hash_balancer import HashBalancer
from .maglev_table import maglev_table

__all__ = ["Maglev"]


class Maglev(HashBalancer):
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
    __slots__ = ()

    def __init__(
        self, endpoints: Any = (), *, table_size: int = MAGLEV_DEFAULT,
        balance_factor: float | None = None, panic_threshold: float | None = None,
    ) -> None:
        super().__init__(endpoints, check_maglev_table_size(table_size), balance_factor, panic_threshold)

    def _layout(self, endpoints: tuple[Endpoint, ...]) -> tuple[Any, list[int]]:
        check_maglev_fit(self._table_size, len(endpoints))
        addresses = [e.address for e in endpoints]
        entries = sorted(range(len(endpoints)), key=addresses.__getitem__)
        table_key = tuple((addresses[i], max(endpoints[i].weight, 1)) for i in entries)
        return table_key, entries

    def _populate(self, table_key: Any) -> array:
        return maglev_table(self._table_size, table_key)

    def _check(self) -> None:
        super()._check()
        picker = self._picker
        check_maglev_counts(picker.table, [weight for _, weight in picker.table_key])
