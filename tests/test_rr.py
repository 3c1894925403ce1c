"""Round robin, run against both twins."""

from __future__ import annotations

import random
from array import array
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from twins import assert_twins_agree, twin_modules


def eps(n: int, **kw) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, **kw) for i in range(n)]


def test_cycles_in_list_order_from_a_random_start(impl):
    endpoints = eps(4)
    b = impl.RoundRobin(endpoints, rng=random.Random(3))
    first = b.pick()
    start = endpoints.index(first)
    picks = [first] + [b.pick() for _ in range(7)]
    assert picks == [endpoints[(start + i) % 4] for i in range(8)]


def test_start_offset_comes_from_the_rng(impl):
    starts = {impl.RoundRobin(eps(10), rng=random.Random(seed)).pick() for seed in range(40)}
    assert len(starts) > 5  # a fleet does not move in step


def test_same_rng_seed_same_sequence(impl):
    a = impl.RoundRobin(eps(5), rng=random.Random(9))
    b = impl.RoundRobin(eps(5), rng=random.Random(9))
    assert [a.pick() for _ in range(12)] == [b.pick() for _ in range(12)]


def test_skips_weight_zero_not_ready_and_failed(impl):
    endpoints = [
        Endpoint("10.0.0.1", 80),
        Endpoint("10.0.0.2", 80, weight=0),
        Endpoint("10.0.0.3", 80, ready=False),
        Endpoint("10.0.0.4", 80),
        Endpoint("10.0.0.5", 80),
    ]
    b = impl.RoundRobin(endpoints, rng=random.Random(1))
    b.mark_failed(endpoints[4])
    assert {b.pick().ip for _ in range(10)} == {"10.0.0.1", "10.0.0.4"}
    b.mark_healthy(endpoints[4])
    assert {b.pick().ip for _ in range(10)} == {"10.0.0.1", "10.0.0.4", "10.0.0.5"}


def test_terminating_fallback(impl):
    draining = Endpoint("10.0.0.2", 80, ready=False, serving=True, terminating=True)
    b = impl.RoundRobin([Endpoint("10.0.0.1", 80, ready=False), draining])
    assert b.pick() == draining
    b.update([Endpoint("10.0.0.3", 80), draining])
    assert {b.pick().ip for _ in range(4)} == {"10.0.0.3"}


def test_no_endpoints_error_says_why(impl):
    with pytest.raises(NoEndpointsError, match="rr: no endpoints"):
        impl.RoundRobin([]).pick()
    endpoints = [Endpoint("10.0.0.1", 80, weight=0), Endpoint("10.0.0.2", 80),
                 Endpoint("10.0.0.3", 80, ready=False)]
    b = impl.RoundRobin(endpoints)
    b.mark_failed(endpoints[1])
    with pytest.raises(NoEndpointsError) as info:
        b.pick()
    assert "3 endpoints (1 not ready, 1 quiesced (weight 0), 1 failed)" in str(info.value)


def test_update_keeps_failure_marks_of_survivors_only(impl):
    a, c = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.3", 80)
    b = impl.RoundRobin([a, c])
    b.mark_failed(a)
    b.update([Endpoint("10.0.0.1", 80, weight=2), c])  # a stays (new weight): still failed
    assert {b.pick() for _ in range(4)} == {c}
    b.update([c])
    b.update([a, c])  # a left and came back: the mark was forgotten
    assert {b.pick() for _ in range(4)} == {a, c}
    b._check()


def test_mark_unknown_endpoint_is_ignored(impl):
    b = impl.RoundRobin(eps(2))
    b.mark_failed(Endpoint("10.9.9.9", 80))
    b.mark_healthy(Endpoint("10.9.9.9", 80))
    assert len({b.pick() for _ in range(2)}) == 2


def test_bad_update_changes_nothing(impl):
    b = impl.RoundRobin(eps(2), rng=random.Random(0))
    before = b.endpoints
    with pytest.raises(ConfigError, match=r"endpoints\[1\]: '10.0.0.1:80' is listed twice"):
        b.update([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.1", 80, weight=3)])
    with pytest.raises(ConfigError, match=r"endpoints\[0\]"):
        b.update(["10.0.0.1:80"])
    assert b.endpoints == before
    b._check()


def test_release_and_lease(impl):
    b = impl.RoundRobin(eps(1))
    with b.lease() as endpoint:
        assert endpoint == eps(1)[0]
    b.release(endpoint)  # a no-op for rr, but part of the face
    # ... that leaves the cycle where it was: a twin that never released picks alike.
    a = impl.RoundRobin(eps(3), rng=random.Random(5))
    c = impl.RoundRobin(eps(3), rng=random.Random(5))
    for endpoint in [a.pick() for _ in range(2)]:
        a.release(endpoint)
    assert [a.pick() for _ in range(4)] == [c.pick() for _ in range(6)][2:]


def test_pick_many(impl):
    endpoints = eps(3)
    a = impl.RoundRobin(endpoints, rng=random.Random(4))
    b = impl.RoundRobin(endpoints, rng=random.Random(4))
    indices = a.pick_many(["k"] * 7)
    assert isinstance(indices, array) and indices.typecode == "i"
    assert [endpoints[i] for i in indices] == [b.pick() for _ in range(7)]
    assert list(a.pick_many(array("Q", [1, 2, 3]))) == [endpoints.index(b.pick()) for _ in range(3)]
    with pytest.raises(TypeError, match="64-bit integers"):
        a.pick_many(array("i", [1]))
    with pytest.raises(NoEndpointsError):
        impl.RoundRobin([]).pick_many([1])


def test_scheduler_and_endpoints(impl):
    b = impl.RoundRobin(eps(2))
    assert b.scheduler == "rr"
    assert b.endpoints == tuple(eps(2))
    assert b.needs_key is False


def test_make_balancer():
    b = lbcore.make_balancer("rr", eps(2), rng=random.Random(0))
    assert isinstance(b, lbcore.RoundRobin)
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        lbcore.make_balancer("nope", eps(1))
    with pytest.raises(ConfigError, match="table_size: 5 is not an option of rr; it takes: rng"):
        lbcore.make_balancer("rr", eps(1), table_size=5)
    service = lbcore.Service("ns/web:http", "10.96.0.1", 80, endpoints=eps(2))
    assert lbcore.make_balancer_for(service).endpoints == tuple(eps(2))


@pytest.mark.parametrize("scheduler", lbcore.SCHEDULERS)
def test_make_balancer_builds_every_scheduler(scheduler):
    # Every name a Service accepts has a balancer: the registry and SCHEDULERS agree.
    b = lbcore.make_balancer(scheduler, eps(2))
    assert b.scheduler == scheduler
    assert b.endpoints == tuple(eps(2))


# ---- differential: both twins, seeded random operations, identical picks -----------------

def _random_endpoints(rng: random.Random) -> list[Endpoint]:
    out = []
    for i in rng.sample(range(1, 30), rng.randrange(0, 8)):
        out.append(Endpoint(f"10.0.0.{i}", 80, weight=rng.choice([0, 1, 1, 2, 5]),
                            ready=rng.random() > 0.2, terminating=rng.random() < 0.2))
    return out


@pytest.mark.parametrize("seed", range(25))
def test_twins_pick_the_same_sequence(both, seed):
    pure, fast = both
    rng = random.Random(seed)
    endpoints = _random_endpoints(rng)
    a = pure.RoundRobin(endpoints, rng=random.Random(seed))
    b = fast.RoundRobin(endpoints, rng=random.Random(seed))
    assert_twins_agree(a, b, rng, _random_endpoints, steps=300)


# ---- properties ------------------------------------------------------------------------

endpoint_lists = st.lists(
    st.builds(
        Endpoint,
        ip=st.integers(1, 250).map(lambda i: f"10.1.0.{i}"),
        port=st.integers(1, 65535),
        weight=st.integers(0, 3),
        ready=st.booleans(),
        terminating=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda e: (e.ip, e.port),
)


@settings(max_examples=150, deadline=None)
@given(endpoints=endpoint_lists, seed=st.integers(0, 2**32 - 1), k=st.integers(1, 4))
def test_property_fair_and_usable(endpoints, seed, k):
    for module in twin_modules():
        b = module.RoundRobin(endpoints, rng=random.Random(seed))
        usable = [e for e in lbcore.usable_endpoints(endpoints) if e.weight > 0]
        if not usable:
            with pytest.raises(NoEndpointsError):
                b.pick()
            continue
        counts = Counter(b.pick() for _ in range(len(usable) * k))
        # Over n*k picks every usable endpoint gets exactly k, and nothing else is picked.
        assert counts == Counter({e: k for e in usable})
