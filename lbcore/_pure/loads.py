"""Active connections per endpoint, and the bound of bounded loads, pure-Python twin
(compiled: lbcore/_fast/loads.pyx).

`Loads` is the mutable load state of ``p2c`` (LeastRequest) and of ``mh``/``ring`` with
``balance_factor``, kept outside their pickers as lc keeps its counts: active
connections are picks (and affinity placements) minus releases, kept by endpoint
address, so an endpoint that stays across ``update()`` keeps its count (also while it is
quiesced or failed: its open connections still end); one that leaves takes its count
with it, and a later release of it is ignored.  ``update()`` builds a new `Loads` from the
old one and swaps it in whole.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded
Loads", arXiv:1608.01350; Envoy ``hash_balance_factor``, HAProxy
``hash-balance-factor``).  With ``A`` the active connections of the endpoints that may
take new ones and ``W`` the sum of their weights, an endpoint of weight ``w`` holding
``a`` connections has room for a new key while::

    a < max(1, ceil(c * (A + 1) * w / W))

The total counts the connection about to be placed (the ``+ 1``), so the bounds add up
to at least ``A + 1`` and some endpoint always has room (for c >= 1).  With ``c = p / 100``
(``p`` a whole percentage) and ``a`` an integer, ``a < ceil(x)`` is ``a < x``, so the test
is one integer comparison, ``a == 0 or a * 100 * W < p * (A + 1) * w``: no rounding, the
same answer in both twins and in every process.  Envoy rounds the total up before
sharing it by weight (``ceil(ceil((A + 1) * p / 100) * w / W)``); lbcore takes the
single ceiling above.

The bound holds at every placement: right after a key is placed, its endpoint holds at
most its bound.  A release elsewhere lowers ``A`` and so every bound; an endpoint can
then hold more than the new bound (open connections never move) and takes no new key
until it is below it again.

`probe` is the order a key tries endpoints in: the positions after its own in the
picker's table or ring, cyclically (Maglev: the next slots; ring: the successor points),
reading the fallback resolution, so unusable endpoints are skipped as for every key.
It depends on the key alone, so two processes with the same endpoints and loads agree,
and a key goes back to its first choice as soon as that has room.
"""

from __future__ import annotations

from typing import Sequence

from .._shared.endpoint_state import endpoint_key
from ..models import Endpoint
from .lc import MAX_ACTIVE

__all__ = ["Loads"]


class Loads:
    """Active connections by endpoint, the release lookup, and the bound's totals.

    ``active[i]`` counts the connections of ``endpoints[i]``; ``share[i]`` is its weight if
    it may take new connections (pickable), else 0; ``total`` is the active count and
    ``weight_sum`` the weight of the pickable endpoints.  O(n) to build.
    """

    __slots__ = ("scheduler", "endpoints", "index_of", "active", "share", "total", "weight_sum")

    def __init__(
        self, scheduler: str, endpoints: tuple[Endpoint, ...], pickable: Sequence[int],
        before: Loads | None,
    ) -> None:
        self.scheduler = scheduler
        self.endpoints = endpoints
        self.index_of = {endpoint_key(e): i for i, e in enumerate(endpoints)}
        # Counts follow the address; an endpoint new to the set starts at 0.
        self.active = [before.count_of(endpoint_key(e)) if before else 0 for e in endpoints]
        self.share = [0] * len(endpoints)
        for i in pickable:
            self.share[i] = endpoints[i].weight
        self.total = sum(self.active[i] for i in pickable)
        self.weight_sum = sum(self.share)

    def count_of(self, key: tuple[str, int]) -> int:
        """The active connections of the endpoint at address ``key`` (0 if unknown)."""
        index = self.index_of.get(key)
        return 0 if index is None else self.active[index]

    def find(self, endpoint: Endpoint) -> int:
        """The index of ``endpoint`` (by address), or -1 if it is not in the set; O(1)."""
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"release() takes an Endpoint, not {type(endpoint).__name__}")
        return self.index_of.get(endpoint_key(endpoint), -1)

    def add(self, index: int) -> None:
        """One connection more on ``endpoints[index]``; O(1)."""
        if self.active[index] == MAX_ACTIVE:
            raise OverflowError(
                f"{self.scheduler}: {self.endpoints[index].address} has {MAX_ACTIVE} active"
                " connections; release() the ones that ended"
            )
        self.active[index] += 1
        if self.share[index]:
            self.total += 1

    def remove(self, index: int) -> None:
        """One connection less on ``endpoints[index]``, never below zero; O(1)."""
        if self.active[index]:
            self.active[index] -= 1
            if self.share[index]:
                self.total -= 1

    def release(self, endpoint: Endpoint) -> None:
        """A balancer's ``release(endpoint)``: one connection less on it; an endpoint no
        longer in the set is ignored.  O(1)."""
        index = self.find(endpoint)
        if index >= 0:
            self.remove(index)

    def add_checked(self, index: int) -> None:
        """`add` for an index from outside (Affinity's sessions): IndexError if out of range."""
        if not 0 <= index < len(self.endpoints):
            raise IndexError(f"endpoint index {index} out of range")
        self.add(index)

    def has_room(self, index: int, percent: int) -> bool:
        """Whether ``endpoints[index]`` (pickable) is below its bound for a factor of
        ``percent`` / 100 (see the module docstring); O(1)."""
        active = self.active[index]
        return active == 0 or active * 100 * self.weight_sum < percent * (self.total + 1) * self.share[index]

    def probe(self, resolved: Sequence[int], position: int, percent: int) -> int:
        """The first endpoint with room from ``position`` on, cyclically, in ``resolved``
        (the endpoint each position picks); O(1) expected, O(len(resolved)) at worst.

        Some pickable endpoint always has room, and every one owns a position.
        """
        size = len(resolved)
        last = -1
        for step in range(size):
            index = resolved[position]
            if index != last:
                if self.has_room(index, percent):
                    return index
                last = index
            position = position + 1 if position + 1 < size else 0
        raise AssertionError("bounded loads: no endpoint below its bound")

    def counts(self) -> dict[tuple[str, int], int]:
        """Active connections by endpoint address (for tests and stats)."""
        return {endpoint_key(e): self.active[i] for i, e in enumerate(self.endpoints)}

    def check(self, endpoints: tuple[Endpoint, ...], pickable: Sequence[int]) -> None:
        """Assert the invariants: built from these endpoints, totals that add up."""
        assert self.endpoints is endpoints
        assert self.index_of == {endpoint_key(e): i for i, e in enumerate(endpoints)}
        assert all(0 <= a <= MAX_ACTIVE for a in self.active)
        usable = set(pickable)
        assert self.share == [e.weight if i in usable else 0 for i, e in enumerate(endpoints)]
        assert self.total == sum(self.active[i] for i in pickable)
        assert self.weight_sum == sum(self.share)
