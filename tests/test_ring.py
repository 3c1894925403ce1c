"""Ring hash (ring): libketama/uhashring placement, the xxh64 ring, fallback, twins."""

from __future__ import annotations

import hashlib
import random
from array import array
from collections import Counter

import pytest
from uhashring import HashRing

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from lbcore._shared.ring_layout import ring_counts

KEYS = 100_000


def eps(n: int, **kw) -> list[Endpoint]:
    return [Endpoint(f"10.{i // 250}.0.{i % 250 + 1}", 8080, **kw) for i in range(n)]


def weighted(weights: list[int], ipv6: bool = False) -> list[Endpoint]:
    if ipv6:
        return [Endpoint(f"fd00::{i + 1:x}", 443, weight=w) for i, w in enumerate(weights)]
    return [Endpoint(f"192.168.{i % 7}.{i + 10}", 11211 + i % 3, weight=w) for i, w in enumerate(weights)]


# ---- ketama: the placement uhashring gives ------------------------------------------------

NODE_SETS = {
    "10 equal": [1] * 10,
    "weights 1-5": [1, 2, 3, 4, 5],
    "one heavy": [100, 1, 1, 3, 7],
    "100 equal": [1] * 100,
    "ipv6 mixed": [3, 1, 2, 2],
}


@pytest.mark.parametrize("name", list(NODE_SETS))
def test_ketama_places_keys_as_uhashring_does(impl, name):
    endpoints = weighted(NODE_SETS[name], ipv6=name.startswith("ipv6"))
    # uhashring: nodes named ip:port with their weights, listed in address order (a
    # shared point goes to the node written last, here the last address).
    nodes = {e.address: e.weight for e in sorted(endpoints, key=lambda e: e.address)}
    reference = HashRing(nodes=nodes, hash_fn="ketama")
    ring = impl.RingHash(endpoints[::-1], hash="ketama")
    keys = [f"user:{i}:session" for i in range(KEYS)]
    by_address = {e.address: i for i, e in enumerate(ring.endpoints)}
    expected = [by_address[reference.get_node(k)] for k in keys]
    assert list(ring.pick_many(keys)) == expected
    # Non-negative int keys: uhashring hashes str(key), the decimal text.
    rng = random.Random(1)
    ints = array("Q", [rng.getrandbits(64) for _ in range(2000)])
    assert list(ring.pick_many(ints)) == [by_address[reference.get_node(k)] for k in ints]
    assert [ring.pick(k) for k in ints[:50]] == [ring.endpoints[by_address[reference.get_node(k)]]
                                                 for k in ints[:50]]


def test_ketama_key_hash_is_md5_first_word(impl):
    # Every padding case of MD5 (0..300 bytes: one to six blocks), against hashlib.
    rng = random.Random(3)
    for length in range(301):
        data = bytes(rng.getrandbits(8) for _ in range(length))
        assert impl.ketama_hash(data) == int.from_bytes(hashlib.md5(data).digest()[:4], "little")
    assert impl.ketama_hash("ключ") == impl.ketama_hash("ключ".encode())
    assert impl.ketama_hash(42) == impl.ketama_hash("42")
    assert impl.ketama_hash(-1) == impl.ketama_hash(str(2**64 - 1))
    with pytest.raises(TypeError, match="key must be str, bytes or int, not float"):
        impl.ketama_hash(1.5)
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        impl.ketama_hash(2**64)


def test_ketama_refuses_an_endpoint_it_would_never_pick(impl):
    # 40 x 2 x 1 // 1001 = 0 digests: libketama leaves it off the ring.
    with pytest.raises(ConfigError, match=r"weight: 1 of 10.0.0.1:8080 gives it no point on a "
                                          r"ketama ring \(40 x 2 x 1 // 1001 = 0\)"):
        impl.RingHash([Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080, weight=1000)],
                      hash="ketama")
    b = impl.RingHash(eps(2), hash="ketama")
    before = b.endpoints
    with pytest.raises(ConfigError, match="gives it no point"):
        b.update([Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080, weight=1000)])
    assert b.endpoints == before
    b._check()


# ---- the xxh64 ring ----------------------------------------------------------------------

def test_ring_size_and_points_by_weight(impl):
    assert impl.RingHash(eps(100)).ring_size == 16_000
    assert impl.RingHash(eps(2)).ring_size == 1024  # Envoy's minimum ring
    assert impl.RingHash(eps(1000)).ring_size == 65_536  # a Maglev table's size
    assert impl.RingHash(eps(1000), hash="ketama").ring_size == 160_000  # libketama's, uncapped
    endpoints = weighted([1, 3, 6])
    b = impl.RingHash(endpoints)
    owners = Counter(b.endpoints[b._ring.entries[e]].weight for e in b._ring.owners)
    assert (owners[1], owners[3], owners[6]) == (102, 307, 615)
    # S = max(1024, 160 x 3) points, shared 1 : 3 : 6 with running-sum rounding.
    assert ring_counts("xxh64", b._ring.table_key[1]) == [102, 307, 615]
    picks = Counter(e.weight for e in (b.endpoints[i] for i in b.pick_many(array("Q", range(KEYS)))))
    for w in (1, 3, 6):
        assert abs(picks[w] / KEYS - w / 10) < 0.03


def test_spread_over_100_endpoints(impl):
    b = impl.RingHash(eps(100))
    counts = Counter(b.pick_many(array("Q", range(KEYS))))
    assert len(counts) == 100
    # 160 points each: an endpoint's arc is within about a quarter of the mean.
    assert max(counts.values()) / (KEYS / 100) < 1.3
    assert min(counts.values()) / (KEYS / 100) > 0.7


def test_ring_does_not_depend_on_list_order(impl):
    endpoints = eps(30)
    shuffled = endpoints[:]
    random.Random(5).shuffle(shuffled)
    a, b = impl.RingHash(endpoints), impl.RingHash(shuffled)
    keys = [f"client-{i}" for i in range(3000)]
    assert [a.pick(k) for k in keys] == [b.pick(k) for k in keys]
    points = b._ring.points
    b.update(endpoints)  # same set, another order: the ring is reused
    assert b._ring.points is points


@pytest.mark.parametrize("kind", ["xxh64", "ketama"])
def test_removing_an_endpoint_moves_only_its_keys(impl, kind):
    keys = array("Q", range(0, 20_000_000, 400))
    endpoints = eps(50)
    b = impl.RingHash(endpoints, hash=kind)
    before = [b.endpoints[i] for i in b.pick_many(keys)]
    removed = endpoints[17]
    b.update(endpoints[:17] + endpoints[18:])
    after = [b.endpoints[i] for i in b.pick_many(keys)]
    moved = [(x, y) for x, y in zip(before, after) if x != y]
    assert moved and all(x == removed for x, _ in moved)
    assert len(moved) == before.count(removed)


@pytest.mark.parametrize("kind", ["xxh64", "ketama"])
def test_failure_quiescing_and_readiness_move_exactly_that_endpoints_keys(impl, kind):
    keys = array("Q", range(20_000))
    endpoints = eps(20)
    b = impl.RingHash(endpoints, hash=kind)
    before = list(b.pick_many(keys))
    ring = b._ring.points
    changes = [
        lambda: b.mark_failed(endpoints[7]),
        lambda: b.update(endpoints[:7] + [Endpoint(endpoints[7].ip, 8080, weight=0)] + endpoints[8:]),
        lambda: b.update(endpoints[:7] + [Endpoint(endpoints[7].ip, 8080, ready=False)] + endpoints[8:]),
    ]
    for change in changes:
        b.update(endpoints)
        b.mark_healthy(endpoints[7])
        change()
        after = list(b.pick_many(keys))
        assert b._ring.points is ring  # the ring stays, only the fallback is redone
        moved = [(x, y) for x, y in zip(before, after) if x != y]
        assert moved and all(x == 7 and y != 7 for x, y in moved)
        assert len(moved) == before.count(7)
        b._check()
    b.update(endpoints)
    assert list(b.pick_many(keys)) == before


def test_a_key_is_required_and_errors(impl):
    b = impl.RingHash(eps(3))
    assert b.needs_key is True and b.scheduler == "ring" and b.hash == "xxh64"
    with pytest.raises(TypeError, match="ring needs a key"):
        b.pick()
    with pytest.raises(TypeError, match="ring needs a key"):
        b.pick_many(["a", None])
    assert b.pick("10.1.2.3") == b.pick(b"10.1.2.3")
    assert b.pick(-1) == b.pick(2**64 - 1)
    with pytest.raises(NoEndpointsError, match="ring: no endpoints"):
        impl.RingHash().pick("k")
    with pytest.raises(NoEndpointsError, match=r"ring: .*\(2 not ready, 1 quiesced \(weight 0\)\)"):
        impl.RingHash([Endpoint("10.0.0.1", 80, weight=0), Endpoint("10.0.0.2", 80, ready=False),
                       Endpoint("10.0.0.3", 80, ready=False)]).pick("k")
    with pytest.raises(ConfigError, match="hash: 'md5' is not one of xxh64, ketama"):
        impl.RingHash(eps(1), hash="md5")
    assert b.release(b.pick("k")) is None and b._active_counts() == {}  # unbounded: no counts


def test_affinity_refuses_a_ketama_ring(impl):
    with pytest.raises(ConfigError, match="hash: 'ketama' cannot be wrapped in Affinity"):
        impl.Affinity(impl.RingHash(eps(3), hash="ketama"), 60)
    with pytest.raises(ConfigError, match="hash: 'ketama' cannot be wrapped in Affinity"):
        lbcore.make_balancer("ring", eps(3), hash="ketama", affinity_timeout=60)
    sticky = impl.Affinity(impl.RingHash(eps(3)), 60)
    assert sticky.pick("k") == impl.RingHash(eps(3)).pick("k")  # a miss lands where the ring says


# Pinned once: if these move, every fleet's ring picks move.
PINNED = [1, 0, 0, 1, 0, 0, 2, 2, 0, 2]


def test_known_picks(impl):
    endpoints = [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.3", 80)]
    b = impl.RingHash(endpoints)
    assert [endpoints.index(b.pick(f"k{i}")) for i in range(10)] == PINNED


# ---- both twins ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["xxh64", "ketama"])
def test_twins_build_the_same_ring(both, kind):
    pure, fast = both
    entries = tuple((e.address, w) for e, w in zip(eps(40), [1, 2, 3, 5] * 10))
    points, owners = pure.ring_points((kind, entries))
    fast_points, fast_owners = fast.ring_points((kind, entries))
    assert list(fast_points) == points and list(fast_owners) == list(owners)
    assert points == sorted(points)


@pytest.mark.parametrize("seed", range(4))
def test_twins_pick_alike_through_changes(both, seed):
    rng = random.Random(seed)
    twins = None
    keys = [f"k{i}" for i in range(300)] + list(range(300))
    for _ in range(30):
        endpoints = [Endpoint(f"10.0.0.{i}", 80, weight=rng.choice([0, 1, 1, 2, 9]),
                              ready=rng.random() > 0.1)
                     for i in rng.sample(range(1, 60), rng.randrange(1, 25))]
        if twins is None:
            kind = rng.choice(["xxh64", "ketama"])
            twins = [impl.RingHash(endpoints, hash=kind) for impl in both]
        fail = rng.random() < 0.5
        for b in twins:
            b.update(endpoints)
            if fail:
                b.mark_failed(endpoints[0])
        outcomes = []
        for b in twins:
            try:
                outcomes.append((list(b.pick_many(keys)), list(b.pick_many(array("Q", range(200))))))
            except NoEndpointsError as error:
                outcomes.append(str(error))
            b._check()
        assert outcomes[0] == outcomes[1]
