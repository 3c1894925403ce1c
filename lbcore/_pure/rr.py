"""Round robin (``rr``), pure-Python twin (compiled: lbcore/_fast/rr.pyx).

IPVS ``rr`` (net/netfilter/ipvs/ip_vs_rr.c): a cursor walks the endpoint list and
takes the next endpoint with weight > 0, skipping quiesced ones.  Here the walk is
precomputed: the picker is the cycle of pickable endpoints and a pick is one index.
The cursor starts at a random offset (injectable ``rng``) so that the processes of a
fleet do not move in step (Envoy seeds its rr index the same way).
"""

from __future__ import annotations

import random
from typing import Any, Iterable

from .._shared.endpoint_state import pickable_indices
from ..models import Endpoint
from .balancer import Balancer

__all__ = ["RoundRobin", "Cycle"]


class Cycle:
    """The immutable rr picker: pickable endpoints and their indices, in list order."""

    __slots__ = ("endpoints", "indices")

    def __init__(self, endpoints: tuple[Endpoint, ...], indices: tuple[int, ...]) -> None:
        self.endpoints = endpoints
        self.indices = indices


class RoundRobin(Balancer):
    """Round robin over endpoints with weight > 0 (ipvsadm ``rr``).

    Over any ``k * n`` consecutive picks each of the ``n`` pickable endpoints gets
    exactly ``k``.  `pick` is O(1).

    ``panic_threshold`` (percent; None: off): while fewer endpoints than that are healthy,
    picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> b = RoundRobin([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)], rng=random.Random(1))
    >>> sorted(b.pick().ip for _ in range(2))
    ['10.0.0.1', '10.0.0.2']
    """

    scheduler = "rr"
    __slots__ = ("_cycle", "_cursor")

    def __init__(
        self, endpoints: Iterable[Endpoint] = (), *, rng: Any = None, panic_threshold: float | None = None
    ) -> None:
        self._cycle = Cycle((), ())
        # A free-running position; reduced modulo the cycle length on each rebuild.
        self._cursor = (rng if rng is not None else random.Random()).getrandbits(32)
        super().__init__(endpoints, panic_threshold=panic_threshold)

    def _rebuild(self, endpoints: tuple[Endpoint, ...], pickable: list[int]) -> None:
        cycle = Cycle(tuple(endpoints[i] for i in pickable), tuple(pickable))
        if pickable:
            self._cursor %= len(pickable)
        self._cycle = cycle

    def _advance(self, n: int) -> int:
        i = self._cursor  # below n: _rebuild reduced it
        self._cursor = i + 1 if i + 1 < n else 0
        return i

    def pick(self, key: Any = None) -> Endpoint:
        """The next endpoint in the cycle; O(1).  ``key`` is ignored."""
        if self._note_picks:
            self._note_pick()
        cycle = self._cycle
        if not cycle.endpoints:
            raise self._no_endpoints()
        return cycle.endpoints[self._advance(len(cycle.endpoints))]

    def _pick_index(self, key_hash: int) -> int:
        if self._note_picks:
            self._note_pick()
        cycle = self._cycle
        if not cycle.indices:
            return -1
        return cycle.indices[self._advance(len(cycle.indices))]

    def _check(self) -> None:
        super()._check()
        assert list(self._cycle.indices) == pickable_indices(self._endpoints, self._skipped)
        assert self._cycle.endpoints == tuple(self._endpoints[i] for i in self._cycle.indices)
        assert not self._cycle.indices or 0 <= self._cursor < len(self._cycle.indices)
