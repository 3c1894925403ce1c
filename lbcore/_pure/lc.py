"""Least connection (``lc``, ``wlc``), pure-Python twin (compiled: lbcore/_fast/lc.pyx).

IPVS ``lc`` (net/netfilter/ipvs/ip_vs_lc.c) sends a new connection to the destination
with the fewest active connections; ``wlc`` (ip_vs_wlc.c) to the least active/weight,
compared by cross-multiplication (``loh * w(d) > doh * w(least)``), never by division.
Both keep the first destination in list order on a tie (a strict comparison), and
weight 0 never takes a connection.  IPVS scans every destination per connection; here
the pickable endpoints sit in a `SortedList` ordered by (load, index), so a pick and a
release are O(log n).

Active connections are picks (and affinity placements, `_count`) minus releases.  They
are kept by endpoint address, so an endpoint that stays across `update` keeps its count
(also while it is quiesced or failed: its open connections still end); one that leaves
the set takes its count with it, and a later release of it is ignored.  IPVS weighs
inactive connections in too (``active * 256 + inactive``); a userspace proxy has only
active ones.

Slow start (lbcore/_shared/slow_start.py): while an endpoint ramps up, loads are
active/ramped weight (lc: every weight taken as 1, times 1024, a ramping one times its
factor too), compared by cross-multiplication as wlc's are, so a ramping endpoint holds
about its factor's share of what the others hold.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Iterable

from sortedcontainers import SortedList

from .._shared.endpoint_state import endpoint_key, pickable_indices
from .._shared.slow_start import DEFAULT_AGGRESSION, DEFAULT_MIN_WEIGHT, make_slow_start
from ..errors import ConfigError
from ..models import Endpoint
from .balancer import Balancer

__all__ = ["LeastConnection", "WeightedLeastConnection", "MAX_ACTIVE"]

#: IPVS keeps activeconns in an atomic_t; lbcore refuses to count past the same bound.
MAX_ACTIVE = 2**31 - 1


class _Loads:
    """The lc/wlc picker and the counts it orders by, swapped in whole by `_rebuild`.

    ``active`` maps each endpoint's address to its active connections; ``weights`` each
    pickable endpoint's index to the weight its load is divided by, when ``by_ratio``
    (wlc, or a ramp); ``order`` holds ``(load, index)`` for every pickable endpoint,
    least loaded first.
    """

    __slots__ = ("endpoints", "index_of", "active", "weights", "by_ratio", "order")

    def __init__(
        self,
        endpoints: tuple[Endpoint, ...],
        active: dict[tuple[str, int], int],
        weights: dict[int, int],
        by_ratio: bool,
        order: SortedList,
    ) -> None:
        self.endpoints = endpoints
        self.index_of = {endpoint_key(e): i for i, e in enumerate(endpoints)}
        self.active = active
        self.weights = weights
        self.by_ratio = by_ratio
        self.order = order

    def load(self, active: int, index: int) -> Any:
        # wlc: active/weight as an exact fraction; Fraction compares a/b < c/d as
        # a*d < c*b, the cross-multiplication of ip_vs_wlc.c.  lc: the count alone.
        return Fraction(active, self.weights[index]) if self.by_ratio else active


class LeastConnection(Balancer):
    """Fewest active connections first (ipvsadm ``lc``); ``weighted=True`` gives ``wlc``.

    Ties go to the first endpoint in list order, as in IPVS.  `pick` and `release` are
    O(log n).

    ``slow_start`` (seconds; None or 0: off) ramps an endpoint added by `update` or
    healthy again after `mark_failed` up over that window by Envoy's rule: its weight (lc:
    1) times ``max((t / window) ** (1 / slow_start_aggression), slow_start_min_weight /
    100)``; the endpoints given at construction do not ramp (all alike: no share would
    change).  The weights are refreshed on a pick at most every 1 % of the window
    (``clock``: monotonic seconds).  ``panic_threshold`` (percent; None: off): while
    fewer endpoints than that are healthy, picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> a, b = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    >>> lc = LeastConnection([a, b])
    >>> [lc.pick().ip for _ in range(3)]
    ['10.0.0.1', '10.0.0.2', '10.0.0.1']
    >>> lc.release(a); lc.release(a)
    >>> lc.pick().ip
    '10.0.0.1'
    """

    __slots__ = ("_weighted", "_loads")

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        weighted: bool = False,
        slow_start: float | None = None,
        slow_start_aggression: float = DEFAULT_AGGRESSION,
        slow_start_min_weight: float = DEFAULT_MIN_WEIGHT,
        clock: Any = None,
        panic_threshold: float | None = None,
    ) -> None:
        if type(weighted) is not bool:
            raise ConfigError("weighted", weighted, "must be true or false")
        ramp = make_slow_start(slow_start, slow_start_aggression, slow_start_min_weight, clock)
        self._weighted = weighted
        self._loads = _Loads((), {}, {}, False, SortedList())
        super().__init__(endpoints, panic_threshold=panic_threshold, ramp=ramp)

    @property
    def scheduler(self) -> str:  # type: ignore[override]
        """``"wlc"`` when weighted, else ``"lc"``."""
        return "wlc" if self._weighted else "lc"

    def _rebuild(self, endpoints: tuple[Endpoint, ...], pickable: list[int]) -> None:
        before = self._loads.active
        active = {endpoint_key(e): before.get(endpoint_key(e), 0) for e in endpoints}
        own = [endpoints[i].weight if self._weighted else 1 for i in pickable]
        ramped = self._ramped(endpoints, pickable, own)
        loads = _Loads(endpoints, active, dict(zip(pickable, own if ramped is None else ramped)),
                       self._weighted or ramped is not None, SortedList())
        loads.order.update((loads.load(active[endpoint_key(endpoints[i])], i), i) for i in pickable)
        self._loads = loads

    def pick(self, key: Any = None) -> Endpoint:
        """The least loaded endpoint, now counted one connection more; O(log n).

        ``key`` is ignored.  Raises NoEndpointsError when no endpoint can take a
        connection.

        >>> from lbcore import Endpoint
        >>> wlc = WeightedLeastConnection([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80, weight=3)])
        >>> [wlc.pick().ip for _ in range(4)]
        ['10.0.0.1', '10.0.0.2', '10.0.0.2', '10.0.0.2']
        """
        index = self._pick_index(0)
        if index < 0:
            raise self._no_endpoints()
        return self._loads.endpoints[index]

    def _pick_index(self, key_hash: int) -> int:
        if self._note_picks:
            self._note_pick()
        loads = self._loads
        if not loads.order:
            return -1
        _, index = loads.order[0]
        self._add(loads, index, 1)
        return index

    def release(self, endpoint: Endpoint) -> None:
        """A connection to ``endpoint`` has ended: one active connection less; O(log n).

        An endpoint no longer in the set, or with no active connection, is ignored.

        >>> from lbcore import Endpoint
        >>> a = Endpoint("10.0.0.1", 80)
        >>> lc = LeastConnection([a])
        >>> lc.release(lc.pick()); lc.release(a); lc._active_counts()
        {('10.0.0.1', 80): 0}
        """
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"release() takes an Endpoint, not {type(endpoint).__name__}")
        loads = self._loads
        index = loads.index_of.get(endpoint_key(endpoint))
        if index is not None:
            self._add(loads, index, -1)

    def _count(self, index: int) -> None:
        loads = self._loads
        if not 0 <= index < len(loads.endpoints):
            raise IndexError(f"endpoint index {index} out of range")
        self._add(loads, index, 1)

    def _add(self, loads: _Loads, index: int, delta: int) -> None:
        endpoint = loads.endpoints[index]
        key = endpoint_key(endpoint)
        active = loads.active[key]
        if delta < 0 and active == 0:
            return
        if delta > 0 and active == MAX_ACTIVE:
            raise OverflowError(
                f"{self.scheduler}: {endpoint.address} has {MAX_ACTIVE} active connections;"
                " release() the ones that ended"
            )
        if index in loads.weights:
            loads.order.remove((loads.load(active, index), index))
            loads.order.add((loads.load(active + delta, index), index))
        loads.active[key] = active + delta

    def _active_counts(self) -> dict[tuple[str, int], int]:
        """Active connections by endpoint address (for tests and stats)."""
        return dict(self._loads.active)

    def _check(self) -> None:
        super()._check()
        loads = self._loads
        assert loads.endpoints == self._endpoints
        assert set(loads.active) == {endpoint_key(e) for e in self._endpoints}
        assert all(0 <= n <= MAX_ACTIVE for n in loads.active.values())
        pickable = pickable_indices(self._endpoints, self._skipped)
        assert set(loads.weights) == set(pickable)
        if not self._ramping:
            assert loads.by_ratio == self._weighted
            assert loads.weights == {i: self._endpoints[i].weight if self._weighted else 1 for i in pickable}
        loads.order._check()
        assert list(loads.order) == sorted(
            (loads.load(loads.active[endpoint_key(self._endpoints[i])], i), i) for i in pickable
        )


class WeightedLeastConnection(LeastConnection):
    """Least active/weight first (ipvsadm ``wlc``): ``LeastConnection(weighted=True)``.

    Loads are compared by cross-multiplication, ties go to the first endpoint in list
    order (IPVS ``wlc``).  `pick` and `release` are O(log n).

    >>> from lbcore import Endpoint
    >>> WeightedLeastConnection([Endpoint("10.0.0.1", 80)]).scheduler
    'wlc'
    """

    __slots__ = ()

    def __init__(self, endpoints: Iterable[Endpoint] = (), **options: Any) -> None:
        super().__init__(endpoints, weighted=True, **options)
