"""IPVS bucket tables for dh and sh, pure-Python twin (compiled: lbcore/_fast/buckets.pyx).

IPVS ``ip_vs_sh_reassign`` (net/netfilter/ipvs/ip_vs_sh.c) walks the destination list
and hands out the buckets in order: a destination keeps taking consecutive buckets until
it has ``weight`` of them, then the next one starts, cycling through the list until all
buckets are taken.  dh does the same with one bucket each (``ip_vs_dh_reassign``).

As in IPVS the table follows the list order: every process must list the endpoints in
the same order to agree on picks (Maglev does not need that).  Unlike IPVS:

- a weight-0 endpoint occupies one bucket per cycle (IPVS sh does too: its
  ``++d_count >= weight`` moves on after one) and so does any endpoint that is not ready
  or failed; the fallback skips them (see lbcore._pure.hash_balancer);
- a table too small for every endpoint's buckets is a ConfigError, not a silent cut.
"""

from __future__ import annotations

from array import array
from typing import Any

from .._shared.table_invariants import check_tiling
from .._shared.table_size import (
    BUCKETS_DEFAULT,
    check_bucket_table_size,
    check_buckets_fit,
)
from ..models import Endpoint
from .hash_balancer import HashBalancer

__all__ = ["BucketHash", "tile_buckets"]


def tile_buckets(turns: tuple[int, ...], size: int) -> array:
    """The entry owning each of ``size`` buckets: entry e takes ``turns[e]`` in a row,
    entries in order, cycling until full; O(size).  Empty when there are no entries.

    >>> list(tile_buckets((2, 1), 8))
    [0, 0, 1, 0, 0, 1, 0, 0]
    """
    table = array("i", bytes(4 * size)) if turns else array("i")
    entry, taken = 0, 0
    for bucket in range(len(table)):
        table[bucket] = entry
        taken += 1
        if taken >= turns[entry]:
            entry = entry + 1 if entry + 1 < len(turns) else 0
            taken = 0
    return table


class BucketHash(HashBalancer):
    """Base of dh and sh: a power-of-two bucket table tiled in list order."""

    __slots__ = ()

    def __init__(
        self, endpoints: Any = (), *, table_size: int = BUCKETS_DEFAULT, panic_threshold: float | None = None
    ) -> None:
        super().__init__(endpoints, check_bucket_table_size(table_size), panic_threshold=panic_threshold)

    def _turns(self, endpoints: tuple[Endpoint, ...]) -> tuple[int, ...]:
        """How many consecutive buckets each endpoint takes per cycle."""
        raise NotImplementedError

    def _layout(self, endpoints: tuple[Endpoint, ...]) -> tuple[Any, list[int]]:
        turns = self._turns(endpoints)
        check_buckets_fit(self.scheduler, self._table_size, turns)
        return turns, list(range(len(endpoints)))

    def _populate(self, table_key: Any) -> array:
        return tile_buckets(table_key, self._table_size)

    def _check(self) -> None:
        super()._check()
        check_tiling(self._picker.table, self._picker.table_key)
