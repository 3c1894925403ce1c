"""Ring hash (``ring``), pure-Python twin (compiled: lbcore/_fast/ring.pyx).

Consistent hashing on a ring (Karger et al. 1997; libketama; Envoy ``RING_HASH``): every
endpoint puts points on a ring of 64-bit values, as many as its share of the weight; a
key goes to the endpoint of the first point after the key's hash, wrapping around.
Removing an endpoint moves its keys alone, each to the next point's endpoint.

The ring, like Maglev's table, is built from the endpoints sorted by address with every
weight counted as at least 1, so it depends on the endpoint set alone: a quiesced,
failed or not-ready endpoint keeps its points and its keys go on to the next usable
point (the fallback resolution of lbcore._pure.hash_balancer, per point), so no other
key moves.  A key's point is the first point strictly above its hash (Python's
``bisect_right``, as uhashring looks it up; libketama takes the first point at or above,
which differs only for a key whose hash equals a point).  When two points share a value
the one of the endpoint whose address sorts last owns it (uhashring: the node written
last; here, listed in address order).

``hash="xxh64"`` (the default): lbcore's seeded XXH64 of the key, fleet-consistent and
fast.  An endpoint of weight w gets ``round(S * w / W)`` points (running-sum rounding,
as Envoy's ring, at least one), ``S = min(65536, max(1024, 160 * n))`` for n endpoints
(lbcore._shared.ring_layout): 160 points per endpoint of mean weight (libketama's and
nginx's 160 per server; the spread of an endpoint's share of the ring falls as one over
the square root of its points, about 8 % at 160), at least Envoy's minimum ring of 1024
so that a few endpoints still split evenly, and at most 65,536, a Maglev table's size,
so that a ring costs what a Maglev table costs to build and to hold.  Above 409
endpoints an endpoint gets fewer than 160 points (65 at 1000, a spread of about 12 %,
where Maglev keeps 1 %).  Point j of an endpoint is XXH64 of j (8 bytes,
little-endian) seeded with XXH64 of its address: one short hash per point.

``hash="ketama"``: libketama's continuum, as ``uhashring.HashRing(nodes,
hash_fn="ketama")`` builds it for node names ``ip:port``: an endpoint of weight w gets
``40 * n * w // W`` MD5 digests of ``"ip:port-k"`` (k = 0, 1, ...), each giving 4 points
(its four 32-bit little-endian words), and a key hashes to the first word of its own MD5
digest.  A service that placed keys with uhashring keeps that placement.  Keys: a str
hashes as its UTF-8, bytes as they are (libketama hashes the key's bytes; uhashring
hashes ``str(key)``, the repr), an int as the decimal text of its unsigned 64-bit value
(uhashring's ``str(key)`` for ints from 0 to 2**64 - 1).  An endpoint whose share gives
it no digest is an error, not an endpoint that is never picked.  Affinity cannot wrap a
ketama ring: sessions are keyed by XXH64, so a miss would not land where uhashring puts
the key.

``balance_factor`` bounds the loads (lbcore._pure.loads): a key whose endpoint is full
goes on along the ring to the next endpoint with room.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from hashlib import md5
from typing import Any, Iterable

from xxhash import xxh64_intdigest

from .._shared.endpoint_state import pickable_indices
from .._shared.ring_layout import check_ring_hash, ring_counts
from .._shared.table_invariants import check_resolution
from ..models import Endpoint, balance_percent, check_balance_factor
from .balancer import Balancer
from .hash_balancer import _resolve_fallback
from .hashing import key_hash
from .loads import Loads

__all__ = ["RingHash", "ring_points", "ketama_hash"]

_MASK64 = 2**64 - 1


def ketama_hash(key: str | bytes | int) -> int:
    """libketama's hash of a key: the first 32-bit little-endian word of its MD5.

    >>> ketama_hash("") == int.from_bytes(md5(b"").digest()[:4], "little")
    True
    """
    if isinstance(key, str):
        data = key.encode("utf-8")
    elif isinstance(key, bytes):
        data = key
    elif isinstance(key, int):
        if not -(2**63) <= key <= _MASK64:
            raise ValueError(f"int key {key} does not fit in 64 bits")
        data = str(key & _MASK64).encode()
    else:
        raise TypeError(f"key must be str, bytes or int, not {type(key).__name__}")
    return int.from_bytes(md5(data).digest()[:4], "little")


def ring_points(table_key: tuple) -> tuple[list[int], array]:
    """(points, owners): the ring for ``(hash, ((address, weight), ...))``, entries in
    address order.  ``points`` ascending, ``owners[p]`` the entry owning point p.

    O(P log P) for P points (`ring_counts` says how many).  Raises ConfigError if a
    ketama entry gets no digest.

    >>> points, owners = ring_points(("xxh64", (("10.0.0.1:80", 1), ("10.0.0.2:80", 3))))
    >>> len(points), list(owners).count(0), list(owners).count(1)
    (1024, 256, 768)
    """
    kind, entries = table_key
    placed = []
    for e, ((address, _), count) in enumerate(zip(entries, ring_counts(kind, entries))):
        if kind == "ketama":
            for k in range(count):
                digest = md5(f"{address}-{k}".encode()).digest()
                for word in range(4):
                    # 32-bit points in the top half of the 64-bit ring, as the keys' hashes.
                    placed.append((int.from_bytes(digest[4 * word:4 * word + 4], "little") << 32, e))
        else:
            seed = xxh64_intdigest(address.encode(), 0)
            placed.extend((xxh64_intdigest(j.to_bytes(8, "little"), seed), e) for j in range(count))
    placed.sort()
    points = [point for point, _ in placed]
    owners = array("i", [e for _, e in placed])
    # A shared value belongs to the entry sorting last, for every one of its copies.
    for p in range(len(points) - 2, -1, -1):
        if points[p] == points[p + 1]:
            owners[p] = owners[p + 1]
    return points, owners


class _Ring:
    """The immutable picker: the ring, its resolution, and what it was built from."""

    __slots__ = ("endpoints", "table_key", "entries", "points", "owners", "resolved")

    def __init__(self, endpoints: tuple[Endpoint, ...] | None, table_key: Any, entries: list[int],
                 points: list[int], owners: array, resolved: array) -> None:
        self.endpoints = endpoints
        self.table_key = table_key
        self.entries = entries
        self.points = points
        self.owners = owners
        self.resolved = resolved  # empty when nothing can be picked


class RingHash(Balancer):
    """Ring hash (``ring``): consistent hashing on a ring, points by weight.

    The same key gives the same endpoint in every process with the same endpoint set,
    in any list order; removing an endpoint moves only its own keys.  ``hash="ketama"``
    places keys exactly as ``uhashring.HashRing(nodes, hash_fn="ketama")`` does for
    nodes named ``ip:port``; the default, ``"xxh64"``, is faster.  ``balance_factor=c``
    (1..100) bounds every endpoint to ``ceil(c * (active + 1) * its weight share)``
    connections: a key whose endpoint is full goes on along the ring (then `release`
    must be called).  `pick` is O(1) expected (a bucketed search of the ring; O(log P)
    in the pure twin), `update` O(P log P) for P points (160 per endpoint, 1024 to
    65536 in all).

    ``panic_threshold`` (percent; None: off): while fewer endpoints than that are healthy,
    picks ignore the failure marks (`panic`).

    >>> from lbcore import Endpoint
    >>> endpoints = [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80)]
    >>> ring = RingHash(endpoints)
    >>> ring.pick("client-7") == RingHash(endpoints[::-1]).pick("client-7")
    True
    >>> mine = ring.pick("client-7")
    >>> ring.update([e for e in endpoints if e != mine])   # only mine's keys move
    >>> ring.pick("client-7") != mine
    True
    """

    scheduler = "ring"
    needs_key = True
    __slots__ = ("_hash", "_balance_factor", "_percent", "_ring", "_loads")

    def __init__(
        self, endpoints: Iterable[Endpoint] = (), *, hash: str = "xxh64",
        balance_factor: float | None = None, panic_threshold: float | None = None,
    ) -> None:
        self._hash = check_ring_hash(hash)
        self._balance_factor = None if balance_factor is None else check_balance_factor(balance_factor)
        self._percent = 0 if balance_factor is None else balance_percent(balance_factor)
        # No endpoints yet (None, not (): the first update must not look like a failure mark).
        self._ring = _Ring(None, None, [], [], array("i"), array("i"))
        self._loads = Loads("ring", (), (), None) if self._percent else None
        super().__init__(endpoints, panic_threshold=panic_threshold)

    @property
    def hash(self) -> str:
        """``"xxh64"`` or ``"ketama"``: how keys and points are hashed."""
        return self._hash

    @property
    def balance_factor(self) -> float | None:
        """The bound on loads (``None``: unbounded)."""
        return self._balance_factor

    @property
    def ring_size(self) -> int:
        """The number of points on the ring."""
        return len(self._ring.points)

    def _layout(self, endpoints: tuple[Endpoint, ...]) -> tuple[Any, list[int]]:
        addresses = [e.address for e in endpoints]
        entries = sorted(range(len(endpoints)), key=addresses.__getitem__)
        return (self._hash, tuple((addresses[i], max(endpoints[i].weight, 1)) for i in entries)), entries

    def _rebuild(self, endpoints: tuple[Endpoint, ...], pickable: list[int]) -> None:
        old = self._ring
        if endpoints is old.endpoints:  # a failure mark: same endpoints, same ring
            table_key, entries, points, owners = old.table_key, old.entries, old.points, old.owners
        else:
            table_key, entries = self._layout(endpoints)
            if table_key == old.table_key:
                points, owners = old.points, old.owners
            else:
                points, owners = ring_points(table_key)
        usable = set(pickable)
        resolved = _resolve_fallback(owners, [i if i in usable else -1 for i in entries])
        loads = Loads("ring", endpoints, pickable, self._loads) if self._percent else None
        self._ring = _Ring(endpoints, table_key, entries, points, owners, resolved)
        self._loads = loads

    def _hash_for_pick(self, key: Any) -> int:
        if key is None:
            raise TypeError("ring needs a key (a client address, a cookie value)")
        return ketama_hash(key) << 32 if self._hash == "ketama" else key_hash(key)

    def _pick_index(self, key_hash: int) -> int:
        if self._note_picks:
            self._note_pick()
        ring = self._ring
        if not ring.resolved:
            return -1
        position = bisect_right(ring.points, key_hash)
        if position == len(ring.points):
            position = 0
        loads = self._loads
        if loads is None:
            return ring.resolved[position]
        index = loads.probe(ring.resolved, position, self._percent)
        loads.add(index)
        return index

    def pick(self, key: Any = None) -> Endpoint:
        """The endpoint for ``key`` (str, bytes or int); O(log P) here, O(1) compiled.

        Raises TypeError without a key, NoEndpointsError when no endpoint can take a
        new connection.
        """
        index = self._pick_index(self._hash_for_pick(key))
        if index < 0:
            raise self._no_endpoints()
        return self._endpoints[index]

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
        ring = self._ring
        assert ring.endpoints is self._endpoints
        table_key, entries = self._layout(self._endpoints)
        assert ring.table_key == table_key and ring.entries == entries
        if entries:
            points, owners = ring_points(table_key)
            assert ring.points == points and list(ring.owners) == list(owners)
        else:
            assert not ring.points
        pickable = pickable_indices(self._endpoints, self._skipped)
        usable = set(pickable)
        check_resolution(ring.owners, [i if i in usable else -1 for i in entries], ring.resolved)
        assert (self._loads is None) == (self._percent == 0)
        if self._loads is not None:
            self._loads.check(self._endpoints, pickable)
