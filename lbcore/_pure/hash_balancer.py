"""What the hash schedulers (dh, sh, mh) share, pure-Python twin (compiled:
lbcore/_fast/hash_balancer.pyx).

A key's 64-bit hash picks one of the ``size`` slots of a table; the slot names an
endpoint.  The picker holds two layers:

- the *table*: which endpoint owns each slot.  It depends only on the endpoint set and
  the weights (tiled for dh/sh, Maglev-populated for mh), never on readiness, passive
  health or weight 0: every listed endpoint owns slots, with its weight counted as at
  least 1.  So marking an endpoint failed, quiescing it or a ready flip never rebuilds it;
- the *resolution*: per slot, the endpoint a pick returns — the owner if it may take a
  new connection, else the owner of the next slot (cyclically) that may.  This is IPVS's
  ``sh-fallback``/``mh-fallback`` (loop around the table to the next available
  destination), applied by dh as well, and computed in O(size) at update time so a pick is O(1) however many endpoints are
  down.  Keys of the endpoints that stay usable never move.

The slot of a key is Lemire's multiply-shift reduction on the top 32 bits of its hash,
``((h >> 32) * size) >> 32``: each slot gets floor or ceil of 2**32 / size of the
hash values (a relative bias below size / 2**32, 1.5e-5 at 65537), without the 64-bit
division of ``h % size`` (D. Lemire, "A fast alternative to the modulo reduction", 2016).  For a power-of-two size it is simply the top bits of the hash.  The
hash is lbcore's XXH64 key hash, not IPVS's ``hash_32`` of the address: keys are not only
addresses, and every process of a fleet must agree.

With ``balance_factor`` (mh takes it), loads are bounded (lbcore._pure.loads): picks and
releases are counted, and a key whose endpoint is at its bound goes to the owner of the
next slot with room.  This *next preference* of a key is its slot's successors in table
order, ``slot + 1, slot + 2, ...`` cyclically, read through the resolution (so the
unusable are skipped as for every key): the same walk the fallback takes for an
unusable owner.  Maglev interleaves the endpoints' slots, so the slots after the hot
endpoint's many slots belong to many endpoints, and its overflow spreads over them
rather than onto one neighbour.
"""

from __future__ import annotations

from array import array
from typing import Any

from .._shared.endpoint_state import pickable_indices
from .._shared.table_invariants import check_picker
from ..models import Endpoint, balance_percent, check_balance_factor
from .balancer import Balancer
from .loads import Loads

__all__ = ["HashBalancer"]


def _resolve_fallback(table: array, targets: list[int]) -> array:
    """Per slot, the endpoint index a pick returns; O(size).

    ``table[slot]`` is the owning entry; ``targets[entry]`` is its endpoint index, or -1
    if it cannot take new connections.  An unusable owner hands its slot to the owner of
    the next usable slot, wrapping around.  Empty when nothing is usable.

    >>> list(_resolve_fallback(array("i", [0, 1, 2, 1]), [5, -1, 7]))
    [5, 7, 7, 5]
    """
    size = len(table)
    resolved = array("i", bytes(4 * size))
    nearest = -1
    # Walk backwards twice around the ring: by the second lap every slot has seen the
    # first usable slot after it, wrapping.
    for s in range(2 * size - 1, -1, -1):
        target = targets[table[s - size if s >= size else s]]
        if target >= 0:
            nearest = target
        if s < size:
            resolved[s] = nearest
    return resolved if nearest >= 0 else array("i")


class _HashPicker:
    """The immutable picker: the table, its resolution, and what it was built from."""

    __slots__ = ("endpoints", "table_key", "table", "entries", "resolved", "size")

    def __init__(
        self, endpoints: tuple[Endpoint, ...] | None, table_key: Any, table: array,
        entries: list[int], resolved: array,
    ) -> None:
        self.endpoints = endpoints
        self.table_key = table_key
        self.table = table
        self.entries = entries
        self.resolved = resolved
        self.size = len(resolved)  # 0 when nothing can be picked


class HashBalancer(Balancer):
    """Base of dh, sh and mh; not used on its own.

    Subclasses say how endpoints become table entries (`_layout`) and how entries fill
    the table (`_populate`).  ``balance_factor`` bounds the loads (see the module).
    """

    needs_key = True
    __slots__ = ("_table_size", "_picker", "_balance_factor", "_percent", "_loads")

    def __init__(
        self, endpoints: Any, table_size: int, balance_factor: float | None = None,
        panic_threshold: float | None = None,
    ) -> None:
        self._table_size = table_size
        self._balance_factor = None if balance_factor is None else check_balance_factor(balance_factor)
        self._percent = 0 if balance_factor is None else balance_percent(balance_factor)
        self._loads = Loads(self.scheduler, (), (), None) if self._percent else None
        # No endpoints yet (None, not (): the first update must not look like a failure mark).
        self._picker = _HashPicker(None, None, array("i"), [], array("i"))
        super().__init__(endpoints, panic_threshold=panic_threshold)

    @property
    def table_size(self) -> int:
        """The number of slots of the table."""
        return self._table_size

    @property
    def balance_factor(self) -> float | None:
        """The bound on loads (``None``: unbounded)."""
        return self._balance_factor

    def _layout(self, endpoints: tuple[Endpoint, ...]) -> tuple[Any, list[int]]:
        """(table key, entries): what the table is built from (equal keys, equal tables)
        and the endpoint index of each table entry.  Raises ConfigError if they do not fit."""
        raise NotImplementedError

    def _populate(self, table_key: Any) -> array:
        """The table for ``table_key``: the entry owning each slot."""
        raise NotImplementedError

    def _rebuild(self, endpoints: tuple[Endpoint, ...], pickable: list[int]) -> None:
        old = self._picker
        if endpoints is old.endpoints:  # a failure mark: same endpoints, same table
            table_key, entries, table = old.table_key, old.entries, old.table
        else:
            table_key, entries = self._layout(endpoints)
            table = old.table if old.table_key == table_key else self._populate(table_key)
        usable = set(pickable)
        targets = [i if i in usable else -1 for i in entries]
        loads = Loads(self.scheduler, endpoints, pickable, self._loads) if self._percent else None
        self._picker = _HashPicker(endpoints, table_key, table, entries,
                                   _resolve_fallback(table, targets))
        self._loads = loads

    def pick(self, key: Any = None) -> Endpoint:
        """The endpoint for ``key`` (str, bytes or int); O(1) after hashing the key.

        The same key gives the same endpoint in every process while the endpoint set
        stays the same.  Raises TypeError without a key, NoEndpointsError when no
        endpoint can take a new connection.

        >>> from lbcore import Endpoint, Maglev
        >>> b = Maglev([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)], table_size=251)
        >>> b.pick("198.51.100.7") == b.pick(b"198.51.100.7")
        True
        >>> b.pick()
        Traceback (most recent call last):
        ...
        TypeError: mh needs a key (a client address, a cookie value)
        """
        key_hash = self._hash_for_pick(key)
        picker = self._picker
        if not picker.size:
            raise self._no_endpoints()
        if self._loads is None and not self._note_picks:
            return picker.endpoints[picker.resolved[((key_hash >> 32) * picker.size) >> 32]]
        return picker.endpoints[self._pick_index(key_hash)]

    def _pick_index(self, key_hash: int) -> int:
        if self._note_picks:
            self._note_pick()
        picker = self._picker
        if not picker.size:
            return -1
        slot = ((key_hash >> 32) * picker.size) >> 32
        loads = self._loads
        if loads is None:
            return picker.resolved[slot]
        index = loads.probe(picker.resolved, slot, self._percent)
        loads.add(index)
        return index

    def release(self, endpoint: Endpoint) -> None:
        """A connection picked earlier has ended: counted with ``balance_factor``, else
        a no-op."""
        if self._loads is not None:
            self._loads.release(endpoint)

    def _count(self, index: int) -> None:
        if self._loads is not None:
            self._loads.add_checked(index)

    def _active_counts(self) -> dict[tuple[str, int], int]:
        """Active connections by endpoint address (with ``balance_factor``; tests, stats)."""
        return {} if self._loads is None else self._loads.counts()

    def _check(self) -> None:
        super()._check()
        check_picker(self._picker, self._endpoints, self._skipped, self._layout(self._endpoints),
                     self._table_size)
        assert (self._loads is None) == (self._percent == 0)
        if self._loads is not None:
            self._loads.check(self._endpoints, pickable_indices(self._endpoints, self._skipped))
