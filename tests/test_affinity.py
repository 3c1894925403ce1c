"""Affinity: sticky sessions with a TTL over any balancer, run against both twins."""

from __future__ import annotations

import random
import sys
import time
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from lbcore import balancers as registry
from lbcore.hashing import key_hash
from twins import outcome, twin_modules

# The schedulers Affinity is tested over: every one, each built by its registry entry in
# the twin under test.
SCHEDULERS = list(lbcore.SCHEDULERS)


def make_inner(impl, scheduler: str, endpoints, seed: int = 0):
    """The ``scheduler`` balancer of twin ``impl``, seeded where it takes an rng."""
    cls, accepted = registry._REGISTRY[scheduler]
    options = {"rng": random.Random(seed)} if "rng" in accepted else {}
    if "table_size" in accepted:
        # Small tables: the pure twin rebuilds (and _check() walks) the whole table at every
        # step of the random sequences; a 65537-slot Maglev table there costs seconds.
        options["table_size"] = 251 if scheduler == "mh" else 64
    return getattr(impl, cls.__name__)(endpoints, **options)


def eps(n: int, **kw) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, **kw) for i in range(n)]


class Clock:
    """A clock the test moves by hand; both twins of a differential test share one."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=SCHEDULERS)
def scheduler(request) -> str:
    return request.param


def sticky(impl, endpoints, timeout=60, max_entries=1000, scheduler="rr", seed=0):
    clock = Clock()
    inner = make_inner(impl, scheduler, endpoints, seed)
    return impl.Affinity(inner, timeout, max_entries, clock=clock), clock


def session_keys(a) -> list[int]:
    return [key for key, _, _ in a._sessions()]


# ---- TTL --------------------------------------------------------------------------------

def test_hit_within_timeout_sticks_and_refreshes(impl):
    a, clock = sticky(impl, eps(5))
    first = a.pick("192.0.2.1")
    for _ in range(5):
        clock.now += 59.5  # each use refreshes the TTL: 5 x 59.5 s apart, never idle 60 s
        assert a.pick("192.0.2.1") == first
    assert a._sessions() == [(key_hash("192.0.2.1"), first, clock.now)]
    a._check()


def test_expires_when_idle_for_timeout(impl):
    # kube-proxy: a hit needs int(time.Since(lastUsed).Seconds()) < ttl, i.e. age < ttl.
    a, clock = sticky(impl, eps(5), timeout=10)
    first = a.pick("k")
    clock.now += 9.999
    assert a.pick("k") == first
    clock.now += 10
    second = a.pick("k")  # expired: round robin moves on
    assert second != first
    assert a._sessions() == [(key_hash("k"), second, clock.now)]
    a._check()


def test_a_rebuild_reclaims_expired_sessions(impl):
    # No timer and no order of last use: an expired session stays until a lookup finds
    # it, the eviction window passes it, or the table is rebuilt at its load limit (16
    # sessions in a new table's 8 buckets, lbcore._pure.session_table.INITIAL_BUCKETS).
    a, clock = sticky(impl, eps(3), timeout=10)
    for i in range(16):
        a.pick(i)
        clock.now += 1
    clock.now += 0.5  # sessions 0..6 idle >= 10 s, 7..15 not
    a._check()
    assert len(a._sessions()) == 16  # lazily: nothing runs until the load limit
    a.pick("new")
    assert session_keys(a) == [key_hash(i) for i in range(7, 16)] + [key_hash("new")]
    a._check()


def test_default_clock_is_the_coarse_monotonic_clock(impl):
    if not sys.platform.startswith("linux"):
        pytest.skip("CLOCK_MONOTONIC_COARSE is Linux's")
    a = impl.Affinity(impl.RoundRobin(eps(3)))
    read = lambda: time.clock_gettime(6)  # CLOCK_MONOTONIC_COARSE (linux/time.h)
    before = read()
    first = a.pick("k")
    assert a.pick("k") == first
    after = read()
    [(_, _, last_use)] = a._sessions()
    assert before <= last_use <= after
    assert a.timeout == 10800  # Kubernetes DefaultClientIPServiceAffinitySeconds


# ---- the bound --------------------------------------------------------------------------

def test_full_table_evicts_the_least_recently_used(impl):
    # Up to 8 sessions the eviction window holds them all: exact LRU.  The clock moves
    # between picks because no order of use is kept: sessions with the same last use
    # are told apart by slot, not by which was used first.
    a, clock = sticky(impl, eps(10), max_entries=3)
    picked = {}
    for key in ("a", "b", "c"):
        picked[key] = a.pick(key)
        clock.now += 1
    assert a.pick("a") == picked["a"]  # a is now the most recent; b the stalest
    clock.now += 1
    a.pick("d")
    assert session_keys(a) == [key_hash(k) for k in ("c", "a", "d")]
    clock.now += 1
    a.pick("e")
    assert session_keys(a) == [key_hash(k) for k in ("a", "d", "e")]
    assert a.pick("a") == picked["a"]
    assert a.pick("c") != picked["c"]  # evicted: round robin moved on
    a._check()


def test_a_full_table_never_evicts_a_client_that_keeps_coming_back(impl):
    # A flood of new keys against 100 sessions: each eviction takes the stalest of the 8
    # sessions the window passes, and a key used at every step is never the stalest.
    a, clock = sticky(impl, eps(10), max_entries=100)
    mine = a.pick("regular")
    for i in range(1000):
        clock.now += 1
        a.pick(f"flood-{i}")
        assert a.pick("regular") == mine
    sessions = a._sessions()
    assert len(sessions) == 100 and sessions[-1] == (key_hash("regular"), mine, clock.now)
    a._check()


def test_eviction_takes_the_stalest_of_eight_sessions(impl):
    # Never one of the 7 most recently used: each of them is newer than the victim.
    a, clock = sticky(impl, eps(10), max_entries=50)
    for i in range(50):
        a.pick(i)
        clock.now += 1
    for i in range(50, 300):
        before = {key: last_use for key, _, last_use in a._sessions()}
        a.pick(i)
        (victim,) = set(before) - {key for key, _, _ in a._sessions()}
        assert sum(last_use > before[victim] for last_use in before.values()) >= 7
        clock.now += 1
    a._check()


def test_table_grows_and_keeps_every_session(impl):
    a, clock = sticky(impl, eps(7), max_entries=5000)
    keys = [f"client-{i}" for i in range(3000)]
    first = {key: a.pick(key) for key in keys}
    a._check()
    random.Random(1).shuffle(keys)
    for key in keys:
        assert a.pick(key) == first[key]
    assert len(a._sessions()) == 3000
    a._check()


# ---- death and survival -----------------------------------------------------------------

def _one_session_per_endpoint(a, n):
    """Keys that landed on each of the n endpoints (round robin: one per pick)."""
    by_endpoint = {}
    for i in range(n):
        by_endpoint[a.pick(f"key-{i}")] = f"key-{i}"
    assert len(by_endpoint) == n
    return by_endpoint


@pytest.mark.parametrize(
    "change",
    ["removed", "weight 0", "not ready", "terminating", "marked failed"],
)
def test_session_dies_with_its_endpoint_and_only_its_own(impl, change):
    endpoints = eps(4)
    a, clock = sticky(impl, endpoints)
    by_endpoint = _one_session_per_endpoint(a, 4)
    victim = endpoints[1]
    if change == "marked failed":
        a.mark_failed(victim)
    else:
        replacement = {
            "removed": [],
            "weight 0": [Endpoint(victim.ip, 80, weight=0)],
            "not ready": [Endpoint(victim.ip, 80, ready=False)],
            "terminating": [Endpoint(victim.ip, 80, ready=False, serving=True, terminating=True)],
        }[change]
        a.update(endpoints[:1] + replacement + endpoints[2:])
    a._check()
    assert victim not in {e for _, e, _ in a._sessions()}
    assert len(a._sessions()) == 3
    for endpoint, key in by_endpoint.items():
        if endpoint != victim:
            assert a.pick(key) == endpoint
    assert a.pick(by_endpoint[victim]) != victim


def test_mark_healthy_does_not_revive_sessions(impl):
    endpoints = eps(3)
    a, clock = sticky(impl, endpoints)
    key = _one_session_per_endpoint(a, 3)[endpoints[0]]
    a.mark_failed(endpoints[0])
    a.mark_healthy(endpoints[0])
    a._check()
    assert len(a._sessions()) == 2
    assert key_hash(key) not in session_keys(a)


def test_survivors_keep_their_sessions_when_the_list_is_reordered(impl):
    endpoints = eps(4)
    a, clock = sticky(impl, endpoints)
    by_endpoint = _one_session_per_endpoint(a, 4)
    # New endpoints in front, the old ones reversed, one with a new weight: every
    # index changes, every session must follow its endpoint's address.
    moved = [Endpoint("10.0.1.1", 80), Endpoint("10.0.1.2", 80)] + endpoints[:0:-1]
    moved.append(Endpoint(endpoints[0].ip, 80, weight=3))
    a.update(moved)
    a._check()
    assert len(a._sessions()) == 4
    for endpoint, key in by_endpoint.items():
        assert a.pick(key).address == endpoint.address


def test_only_the_removed_endpoints_sessions_move(impl, scheduler):
    # With Affinity(Maglev) this is "consistent-hash affinity with a TTL": live sessions
    # keep their endpoint across endpoint-set changes; only the removed one's move.
    endpoints = [Endpoint(f"10.0.{i}.{j}", 80) for i in range(2) for j in range(1, 11)]
    a, clock = sticky(impl, endpoints, max_entries=5000, scheduler=scheduler)
    keys = [f"198.51.100.{i % 250}:{i}" for i in range(2000)]
    before = {key: a.pick(key) for key in keys}
    removed = endpoints[7]
    assert removed in before.values()
    a.update(endpoints[:7] + endpoints[8:])
    clock.now += 30
    after = {key: a.pick(key) for key in keys}
    moved = {key for key in keys if after[key] != before[key]}
    assert moved == {key for key in keys if before[key] == removed}
    assert removed not in after.values()
    a._check()


def test_inner_balancer_changed_directly_is_noticed_at_the_next_pick(impl):
    endpoints = eps(3)
    a, clock = sticky(impl, endpoints)
    by_endpoint = _one_session_per_endpoint(a, 3)
    a.balancer.update(endpoints[1:])
    a.balancer.mark_failed(endpoints[2])
    assert a.endpoints == tuple(endpoints[1:])
    assert a.pick(by_endpoint[endpoints[1]]) == endpoints[1]
    a._check()
    assert [e for _, e, _ in a._sessions()] == [endpoints[1]]


def test_a_clock_that_changes_the_balancer_is_caught_up_with(impl):
    # The clock is read before the catch-up: a pick never uses an index from one
    # endpoint list with another (in C that read is not bounds-checked).
    old, grown = eps(2), eps(6)
    inner = impl.RoundRobin(old, rng=random.Random(0))
    changes = iter([old[1:], grown])

    def clock():
        inner.update(next(changes, inner.endpoints))
        return 0.0

    a = impl.Affinity(inner, 60, clock=clock)
    assert a.pick("k") == old[1]  # the clock shrank the set before the pick
    picks = [a.pick(f"new-{i}") for i in range(12)]  # ... then grew it to six
    assert set(picks) == set(grown)
    assert a.pick("k") == old[1]  # old[1] stayed: so did its session
    a._check()


# ---- the wrapped balancer's counts ------------------------------------------------------

@pytest.mark.parametrize("scheduler", ["lc", "wlc"])
def test_a_hit_is_counted_by_least_connection(impl, scheduler):
    first, second = eps(2)
    a = impl.Affinity(make_inner(impl, scheduler, [first, second]), 60, clock=Clock())
    assert a.pick("k") == first  # IPVS lc: ties go to the first endpoint
    assert a.pick("k") == first  # a hit: placed without a pick, counted (2 on first)
    # Counted: second gets two new keys before first ties.  Uncounted it would alternate.
    assert [a.pick(f"new-{i}") for i in range(3)] == [second, second, first]
    for _ in range(3):
        a.release(first)  # 3 -> 0 on first, 2 on second
    assert a.pick("after-release") == first


def test_hits_count_and_releases_reach_the_wrapped_balancer():
    # The hook lc/wlc rely on, observed on a pure round robin that records its calls.
    from lbcore._pure.affinity import Affinity
    from lbcore._pure.rr import RoundRobin

    class Recording(RoundRobin):
        __slots__ = ("counted", "released")

        def __init__(self, endpoints):
            self.counted, self.released = [], []
            super().__init__(endpoints, rng=random.Random(0))

        def _count(self, index):
            self.counted.append(index)

        def release(self, endpoint):
            self.released.append(endpoint)

    endpoints = eps(3)
    inner = Recording(endpoints)
    a = Affinity(inner, 60, clock=Clock())
    endpoint = a.pick("k")
    assert inner.counted == []  # a miss: the wrapped balancer picked (and counted) itself
    assert a.pick("k") == endpoint
    assert a.pick("k") == endpoint
    assert inner.counted == [endpoints.index(endpoint)] * 2
    with a.lease("k") as leased:
        assert leased == endpoint
    a.release(endpoint)
    assert inner.released == [endpoint, endpoint]


# ---- the face ---------------------------------------------------------------------------

def test_a_key_is_required(impl):
    a, clock = sticky(impl, eps(2))
    for call in (a.pick, lambda: a.pick(None), a.lease, lambda: a.pick_many([None, "k"])):
        with pytest.raises(TypeError, match="Affinity needs a key"):
            call()
    assert a._sessions() == []
    assert a.needs_key is True
    assert a.balancer.pick() in eps(2)  # a pick without a session goes to the balancer


def test_keys_are_sessions_by_their_hash(impl):
    a, clock = sticky(impl, eps(10))
    assert a.pick("10.1.2.3") == a.pick(b"10.1.2.3")  # same UTF-8 bytes, same key hash
    assert a.pick(-1) == a.pick(2**64 - 1)  # the same 64-bit value
    assert len(a._sessions()) == 2
    with pytest.raises(TypeError, match="key must be str, bytes or int"):
        a.pick(1.5)
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        a.pick(2**64)


def test_pick_many_is_sticky_and_matches_pick(impl):
    endpoints = eps(5)
    a, _ = sticky(impl, endpoints, seed=3)
    b, _ = sticky(impl, endpoints, seed=3)
    keys = ["x", "y", "x", 7, "z", 7, "y"]
    indices = a.pick_many(keys)
    assert isinstance(indices, array) and indices.typecode == "i"
    assert [endpoints[i] for i in indices] == [b.pick(k) for k in keys]
    assert indices[0] == indices[2] and indices[3] == indices[5] and indices[1] == indices[6]
    assert list(a.pick_many(array("Q", [7, 8, 8]))) == [endpoints.index(b.pick(k)) for k in (7, 8, 8)]
    assert a._sessions() == b._sessions()


def test_no_endpoints(impl):
    a, clock = sticky(impl, [])
    with pytest.raises(NoEndpointsError, match="rr: no endpoints"):
        a.pick("k")
    a.update([Endpoint("10.0.0.1", 80, weight=0)])
    with pytest.raises(NoEndpointsError, match=r"1 quiesced \(weight 0\)"):
        a.pick("k")
    assert a._sessions() == []
    a._check()


def test_bad_update_changes_nothing(impl):
    endpoints = eps(3)
    a, clock = sticky(impl, endpoints)
    _one_session_per_endpoint(a, 3)
    before = a._sessions()
    with pytest.raises(ConfigError, match=r"endpoints\[1\]: '10.0.0.1:80' is listed twice"):
        a.update([endpoints[0], endpoints[0]])
    assert a.endpoints == tuple(endpoints)
    assert a._sessions() == before
    a._check()


def test_properties_and_repr(impl):
    inner = impl.RoundRobin(eps(2))
    a = impl.Affinity(inner, 30, max_entries=7)
    assert a.balancer is inner
    assert (a.scheduler, a.timeout, a.max_entries, a.endpoints) == ("rr", 30, 7, tuple(eps(2)))
    assert repr(a) == f"Affinity({inner!r}, timeout=30, max_entries=7)"
    assert impl.Affinity(inner).max_entries == 262144  # lbcore._shared.affinity_options.DEFAULT_MAX_ENTRIES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout: 0 is out of range; valid: 1..86400"),
        ({"timeout": 86401}, "timeout: 86401 is out of range; valid: 1..86400"),
        ({"timeout": 10.5}, "timeout: 10.5 must be an integer in 1..86400"),
        ({"timeout": True}, "timeout: True must be an integer"),
        ({"max_entries": 0}, "max_entries: 0 is out of range; valid: 1..2147483647"),
        ({"max_entries": 2**31}, "max_entries: 2147483648 is out of range"),
        ({"max_entries": "big"}, "max_entries: 'big' must be an integer"),
        ({"clock": 5}, "clock: 5 must be None or a callable returning seconds"),
    ],
)
def test_bad_options(impl, kwargs, message):
    with pytest.raises(ConfigError) as info:
        impl.Affinity(impl.RoundRobin(eps(1)), **kwargs)
    assert str(info.value).startswith(message)


def test_balancer_must_be_of_the_same_twin(both):
    pure, fast = both
    for twin, other in ((pure, fast), (fast, pure)):
        with pytest.raises(ConfigError, match=rf"balancer: .* is not a balancer of {twin.__name__}"):
            twin.Affinity(other.RoundRobin(eps(1)))
    with pytest.raises(ConfigError, match="balancer: 'rr' is not a balancer"):
        pure.Affinity("rr")


def test_clock_errors_surface_at_pick(impl):
    def broken():
        raise RuntimeError("clock broke")

    a = impl.Affinity(impl.RoundRobin(eps(1)), clock=broken)
    with pytest.raises(RuntimeError, match="clock broke"):
        a.pick("k")
    assert a._sessions() == []


def test_make_balancer_with_affinity_timeout():
    a = lbcore.make_balancer("rr", eps(3), affinity_timeout=600, rng=random.Random(0))
    assert isinstance(a, lbcore.Affinity) and isinstance(a.balancer, lbcore.RoundRobin)
    assert (a.scheduler, a.timeout) == ("rr", 600)
    assert a.pick("client") == a.pick("client")
    with pytest.raises(ConfigError, match="affinity_timeout: 0 is out of range; valid: 1..86400"):
        lbcore.make_balancer("rr", eps(1), affinity_timeout=0)
    service = lbcore.Service("ns/web:http", "10.96.0.1", 80, endpoints=eps(2), affinity_timeout=60)
    from_service = lbcore.make_balancer_for(service)
    assert isinstance(from_service, lbcore.Affinity) and from_service.timeout == 60
    assert not isinstance(lbcore.make_balancer("rr", eps(1)), lbcore.Affinity)


# ---- differential: both twins, seeded random operations, identical picks ---------------

def _random_endpoints(rng: random.Random) -> list[Endpoint]:
    return [
        Endpoint(f"10.0.0.{i}", 80, weight=rng.choice([0, 1, 1, 1, 2, 5]),
                 ready=rng.random() > 0.15, terminating=rng.random() < 0.15)
        for i in rng.sample(range(1, 20), rng.randrange(0, 9))
    ]


@pytest.mark.parametrize("seed", range(30))
def test_twins_agree_on_random_sequences(both, scheduler, seed):
    pure, fast = both
    rng = random.Random(seed)
    endpoints = _random_endpoints(rng)
    clock = Clock()
    timeout = rng.choice([1, 3, 10])
    max_entries = rng.choice([1, 2, 5, 12, 1000])
    twins = [
        twin.Affinity(make_inner(twin, scheduler, endpoints, seed), timeout, max_entries, clock=clock)
        for twin in (pure, fast)
    ]
    keys = [f"10.9.0.{i}" for i in range(8)] + [b"cookie-a", b"cookie-b"] + list(range(6))
    for _ in range(500):
        op = rng.random()
        if op < 0.25:
            clock.now += rng.choice([0.0, 0.1, 0.5, 1.0, timeout - 0.25, timeout, 3 * timeout])
            outcomes = [None, None]
        elif op < 0.30:
            endpoints = _random_endpoints(rng)
            outcomes = [twin.update(endpoints) for twin in twins]
        elif op < 0.36 and endpoints:
            target = rng.choice(endpoints)
            mark = rng.choice(["mark_failed", "mark_healthy"])
            outcomes = [getattr(twin, mark)(target) for twin in twins]
        elif op < 0.40 and endpoints:
            target = rng.choice(endpoints)
            outcomes = [twin.release(target) for twin in twins]
        elif op < 0.45:
            batch = [rng.choice(keys) for _ in range(rng.randrange(6))]
            outcomes = [outcome(lambda: twin.pick_many(batch)) for twin in twins]
        else:
            key = rng.choice(keys)
            outcomes = [outcome(lambda: twin.pick(key)) for twin in twins]
        assert outcomes[0] == outcomes[1]
        assert twins[0]._sessions() == twins[1]._sessions()
        for twin in twins:
            twin._check()


# ---- properties ------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 12),
    keys=st.lists(st.one_of(st.integers(0, 40), st.sampled_from(["a", "b", "c", "d"])), max_size=150),
    scheduler=st.sampled_from(sorted(registry._REGISTRY)),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_a_key_keeps_its_endpoint(n, keys, scheduler, seed):
    # For a fixed endpoint set and no expiry, the same key always gets the same endpoint.
    endpoints = eps(n)
    for twin in twin_modules():
        clock = Clock()
        a = twin.Affinity(make_inner(twin, scheduler, endpoints, seed), 86400, clock=clock)
        first = {}
        for key in keys:
            clock.now += 1.0
            assert first.setdefault(key, a.pick(key)) == a.pick(key)
        a._check()
