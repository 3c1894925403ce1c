"""How many points each endpoint puts on a ``ring``, for both twins (the rule is in
lbcore/_pure/ring.py's docstring).  Off the hot path: ``update()`` calls it."""

from __future__ import annotations

from ..errors import ConfigError

__all__ = [
    "RING_HASHES",
    "POINTS_PER_ENDPOINT",
    "MIN_RING_SIZE",
    "MAX_RING_SIZE",
    "KETAMA_DIGESTS",
    "check_ring_hash",
    "ring_counts",
]

#: The key and point hashes a ring can use: lbcore's XXH64, or libketama's MD5.
RING_HASHES = ("xxh64", "ketama")
#: xxh64 ring: points per endpoint of mean weight (libketama's and nginx's 160 per server).
POINTS_PER_ENDPOINT = 160
#: xxh64 ring: at least this many points in all (Envoy's ``minimum_ring_size``).
MIN_RING_SIZE = 1024
#: xxh64 ring: at most this many in all (but one per endpoint): a Maglev table's size,
#: so a ring costs what a Maglev table costs to build and hold.
MAX_RING_SIZE = 65536
#: ketama: MD5 digests per endpoint of mean weight, 4 points each (libketama, uhashring).
KETAMA_DIGESTS = 40


def check_ring_hash(value: object) -> str:
    """``"xxh64"`` or ``"ketama"``, else ConfigError naming the option."""
    if value not in RING_HASHES:
        raise ConfigError("hash", value, f"is not one of {', '.join(RING_HASHES)}")
    return value  # type: ignore[return-value]


def ring_counts(kind: str, entries: tuple[tuple[str, int], ...]) -> list[int]:
    """Points (xxh64) or MD5 digests (ketama) per entry, for ``(address, weight)``
    entries in address order; O(n).

    xxh64: ``S = min(65536, max(1024, 160 * n))`` points shared by weight with running-sum
    rounding (as Envoy's ring), at least one each.  ketama: ``40 * n * w // W`` digests (uhashring's
    integer form of libketama's ``floor(40 * n * w / W)``); an entry left with none is a
    ConfigError, not an endpoint that is never picked.

    >>> ring_counts("xxh64", (("10.0.0.1:80", 1), ("10.0.0.2:80", 2)))
    [341, 683]
    >>> ring_counts("ketama", (("10.0.0.1:80", 1), ("10.0.0.2:80", 2)))
    [26, 53]
    """
    n = len(entries)
    total = sum(weight for _, weight in entries)
    if kind == "ketama":
        counts = [KETAMA_DIGESTS * n * weight // total for _, weight in entries]
        for (address, weight), count in zip(entries, counts):
            if count == 0:
                raise ConfigError(
                    "weight", weight,
                    f"of {address} gives it no point on a ketama ring ({KETAMA_DIGESTS} x {n} x "
                    f"{weight} // {total} = 0): libketama would never pick it; raise its weight "
                    "or use hash='xxh64'",
                )
        return counts
    size = min(MAX_RING_SIZE, max(MIN_RING_SIZE, POINTS_PER_ENDPOINT * n))
    counts, cumulative, placed = [], 0, 0
    for _, weight in entries:
        cumulative += weight
        upto = size * cumulative // total
        counts.append(max(1, upto - placed))
        placed = upto
    return counts
