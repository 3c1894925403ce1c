"""Invariants of the hash schedulers' tables, asserted by `_check()` in both twins.

Where it can, a check restates a rule in a second, closed form rather than rerunning the
builder: the tiling by prefix sums, the fallback as a relation between neighbouring
slots.  The Maglev check holds the table to the slot counts of the weight rule.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Any, Sequence

from .._twins import pure_twin
from .endpoint_state import pickable_indices

__all__ = [
    "check_picker",
    "check_resolution",
    "check_tiling",
    "check_maglev_counts",
]


def check_picker(
    picker: Any, endpoints: tuple, failed: frozenset, layout: tuple, table_size: int
) -> None:
    """The picker was built from the balancer's endpoints, failure marks and layout."""
    assert picker.endpoints is endpoints
    table_key, entries = layout
    assert picker.table_key == table_key and picker.entries == entries
    assert sorted(entries) == list(range(len(endpoints)))
    assert len(picker.table) == (table_size if entries else 0)
    assert all(0 <= entry < len(entries) for entry in picker.table)
    usable = set(pickable_indices(endpoints, failed))
    check_resolution(picker.table, [i if i in usable else -1 for i in entries], picker.resolved)


def check_resolution(table: Sequence[int], targets: Sequence[int], resolved: Sequence[int]) -> None:
    """``resolved`` is the fallback of ``table``: each slot gives its owner's target if
    usable (>= 0), else what the next slot gives; empty exactly when nothing is usable."""
    if not any(targets[entry] >= 0 for entry in table):
        assert len(resolved) == 0
        return
    size = len(table)
    assert len(resolved) == size
    for s in range(size):
        target = targets[table[s]]
        expected = target if target >= 0 else resolved[s + 1 if s + 1 < size else 0]
        assert resolved[s] == expected, (s, resolved[s], expected)


def check_tiling(table: Sequence[int], turns: Sequence[int]) -> None:
    """IPVS ``ip_vs_sh_reassign``: entry e owns ``turns[e]`` consecutive buckets, entries
    in order, cycling until the table is full."""
    if not turns:
        assert len(table) == 0
        return
    ends = list(accumulate(turns))
    for s, entry in enumerate(table):
        assert entry == bisect_right(ends, s % ends[-1]), (s, entry)


def check_maglev_counts(table: Sequence[int], weights: Sequence[int]) -> None:
    """Every entry owns exactly the number of slots the weight rule gives it."""
    counts = [0] * len(weights)
    for entry in table:
        counts[entry] += 1
    # The pure twin's rule, whichever twin built the table: a second opinion on the compiled one.
    expected = pure_twin("maglev_table").maglev_counts(len(table), weights)
    assert counts == expected, "Maglev slot counts break the weight rule"
