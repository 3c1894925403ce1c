"""The Maglev lookup table, pure-Python twin (compiled: lbcore/_fast/maglev_table.pyx).

Maglev (Eisenbud et al., NSDI 2016, §3.4, Pseudocode 1): each entry has a preference
list over the M slots, ``permutation[j] = (offset + j * skip) mod M`` with M prime, and
the entries take turns claiming their next preferred free slot until all M are taken.

- ``offset``/``skip`` come from the endpoint's address (``ip:port``, IPv6 in brackets)
  hashed with XXH64 under two seeds, 0 and 1, as Envoy's maglev_lb does:
  ``offset = h0 % M``, ``skip = h1 % (M - 1) + 1``.
- Weights: Envoy's rule (``iteration * w >= target_weight``, then ``target_weight +=
  max_w``) in integers.  Entry e makes its k-th claim (k = 0, 1, ...) in round
  ``ceil(k * top / w_e)``, top being the largest weight: a top-weight entry claims every
  round, one of a third of that weight every third round; within a round entries claim
  in order.  Slot counts are then proportional to the weights to within one slot (A:1,
  B:2 gives 21846 and 43691 of 65537, as in Envoy) for any weights, where IPVS's
  ``turns`` (weight / gcd, then shifted right to cap them) distorts large ratios.  With
  equal weights this is the paper's plain round robin of turns.

Since every claim takes a slot, how many claims each entry makes before the table is
full follows from the weights alone (`maglev_counts`); the builder lists those claims in
(round, entry) order and plays them.
"""

from __future__ import annotations

from array import array
from typing import Sequence

from xxhash import xxh64_intdigest

from .._shared.table_size import is_prime

__all__ = ["maglev_permutation", "maglev_counts", "maglev_populate", "maglev_table"]

#: Envoy's seeds: ``HashUtil::xxHash64(key)`` for the offset, ``xxHash64(key, 1)`` for the skip.
OFFSET_SEED = 0
SKIP_SEED = 1


def maglev_permutation(address: str, size: int) -> tuple[int, int]:
    """(offset, skip) of an endpoint's preference list in a table of ``size`` slots.

    >>> offset, skip = maglev_permutation("10.0.0.1:80", 65537)
    >>> 0 <= offset < 65537 and 1 <= skip < 65537
    True
    """
    data = address.encode("utf-8")
    return (xxh64_intdigest(data, OFFSET_SEED) % size,
            xxh64_intdigest(data, SKIP_SEED) % (size - 1) + 1)


def maglev_counts(size: int, weights: Sequence[int]) -> list[int]:
    """How many slots each entry claims in a table of ``size`` (> number of entries).

    Through round r, an entry of weight w has made ``r * w // top + 1`` claims; the last
    round r the table has room for completely is found by bisection, and the slots left
    go to the first entries due in round r + 1.  O(n log size).

    >>> maglev_counts(65537, [1, 2])  # Envoy's A:1, B:2 example
    [21846, 43691]
    """
    if not weights:
        return []
    if len(weights) >= size or min(weights) < 1:
        raise ValueError(f"weights must be at least 1, fewer than the table size {size}")
    top = max(weights)

    def claims_through(r: int) -> int:
        return sum(r * w // top + 1 for w in weights)

    low, high = 0, size  # claims_through(0) <= size < claims_through(size)
    while high - low > 1:
        middle = (low + high) // 2
        if claims_through(middle) <= size:
            low = middle
        else:
            high = middle
    counts = [low * w // top + 1 for w in weights]
    left = size - sum(counts)
    for e, w in enumerate(weights):
        if left and (low + 1) * w // top > low * w // top:
            counts[e] += 1
            left -= 1
    return counts


def _check_entries(
    size: int, offsets: Sequence[int], skips: Sequence[int], weights: Sequence[int]
) -> None:
    # A skip must walk all M slots (M prime), or a probe could circle a full cycle forever.
    if not len(offsets) == len(skips) == len(weights):
        raise ValueError("offsets, skips and weights must have one item per entry")
    if offsets and (len(offsets) >= size or not is_prime(size)):
        raise ValueError(f"table size {size} must be a prime above the {len(offsets)} entries")
    for e, (offset, skip, weight) in enumerate(zip(offsets, skips, weights)):
        if not (0 <= offset < size and 0 < skip < size and weight >= 1):
            raise ValueError(f"entry {e}: offset {offset}, skip {skip}, weight {weight} "
                             f"out of range for table size {size}")


def maglev_populate(
    size: int, offsets: Sequence[int], skips: Sequence[int], weights: Sequence[int]
) -> array:
    """The entry owning each of ``size`` slots (``size`` prime, > number of entries).

    Average O(size log size) probes (paper §3.4).  The paper's Table 1 (M = 7;
    B1 (3, 4), B2 (0, 2), B3 (3, 1) as entries 0, 1, 2):

    >>> list(maglev_populate(7, [3, 0, 3], [4, 2, 1], [1, 1, 1]))
    [1, 0, 1, 0, 2, 2, 0]
    """
    _check_entries(size, offsets, skips, weights)
    table = array("i", [-1]) * size if offsets else array("i")
    top = max(weights, default=1)
    claims = sorted(
        (-(-k * top // w), e)  # (round, entry): ceil(k * top / w) is the round of claim k
        for e, (w, count) in enumerate(zip(weights, maglev_counts(size, weights)))
        for k in range(count)
    )
    preferred = list(offsets)  # each entry's next slot to try
    for _, e in claims:
        slot, skip = preferred[e], skips[e]
        while table[slot] >= 0:
            slot += skip
            if slot >= size:
                slot -= size
        table[slot] = e
        preferred[e] = slot + skip - size if slot + skip >= size else slot + skip
    return table


def maglev_table(size: int, entries: Sequence[tuple[str, int]]) -> array:
    """The table for ``entries``, (address, weight) pairs in claiming order.

    >>> table = maglev_table(251, [("10.0.0.1:80", 1), ("10.0.0.2:80", 2)])
    >>> table.count(0), table.count(1)
    (84, 167)
    """
    permutations = [maglev_permutation(address, size) for address, _ in entries]
    return maglev_populate(
        size,
        [offset for offset, _ in permutations],
        [skip for _, skip in permutations],
        [weight for _, weight in entries],
    )
