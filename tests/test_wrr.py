"""Smooth weighted round robin, run against both twins."""

from __future__ import annotations

import random
import sys
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from lbcore._pure import wrr as _wrr_py
from twins import assert_twins_agree, twin_modules


def module_of(impl):
    """The module that holds impl's WeightedRoundRobin (and its swrr_cycle)."""
    return sys.modules[impl.WeightedRoundRobin.__module__]


def weighted(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, weight=w) for i, w in enumerate(weights)]


def nginx_swrr(weights: list[int], picks: int) -> list[int]:
    """The model: nginx's ngx_http_upstream_get_peer loop, as written there."""
    current = [0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(picks):
        best = -1
        for i, w in enumerate(weights):
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return out


def start_of(seed: int, period: int) -> int:
    # The balancer draws 32 random bits for its cursor and reduces them modulo the period.
    return random.Random(seed).getrandbits(32) % period


def windows_hold_weights(picks: list[Endpoint], endpoints: list[Endpoint]) -> bool:
    """Every window of sum(weights) consecutive picks holds each endpoint weight times."""
    expected = {e: e.weight for e in endpoints if e.weight}
    size = sum(expected.values())
    assert len(picks) >= size
    window = Counter(picks[:size])
    if window != Counter(expected):
        return False
    # Sliding by one pick keeps the window exact iff the pick leaving it is the pick
    # entering the next one.
    return all(old == new for old, new in zip(picks, picks[size:]))


# ---- golden sequences --------------------------------------------------------------------

def test_nginx_golden_5_1_1(impl):
    # nginx commit 52327e06: weights {a: 5, b: 1, c: 1} give a a b a c a a.
    endpoints = weighted(5, 1, 1)
    names = {e: "abc"[i] for i, e in enumerate(endpoints)}
    b = impl.WeightedRoundRobin(endpoints, rng=random.Random(7))
    start = start_of(7, 7)
    golden = "aabacaa"
    assert "".join(names[b.pick()] for _ in range(14)) == (golden * 3)[start:start + 14]


def test_swrr_cycle_golden(impl):
    assert module_of(impl).swrr_cycle([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
    assert module_of(impl).swrr_cycle([1, 1, 1]) == [0, 1, 2]
    assert module_of(impl).swrr_cycle([4, 3, 2]) == nginx_swrr([4, 3, 2], 9)


def test_deadline_schedule_golden():
    # The long-cycle schedule: deadlines at (k + 1/2) / w, ties to the first endpoint.
    deadlines = _wrr_py._Deadlines((), (), [5, 1, 1], 0)
    assert "".join("abc"[deadlines.pop()] for _ in range(14)) == "aaabcaa" * 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=9))
def test_cycle_is_nginx_sequence(weights):
    # Grouping equal weights and dividing by the gcd changes nothing nginx would pick.
    reduced = _wrr_py.reduced_weights(weights)
    for module in _cycle_modules():
        cycle = module.swrr_cycle(reduced)
        assert len(cycle) == sum(reduced)
        assert cycle * (sum(weights) // len(cycle)) == nginx_swrr(weights, sum(weights))


def _cycle_modules():
    for twin in twin_modules():
        yield sys.modules[twin.WeightedRoundRobin.__module__]


# ---- behaviour ---------------------------------------------------------------------------

def test_zero_weight_not_ready_and_failed_are_skipped(impl):
    endpoints = [
        Endpoint("10.0.0.1", 80, weight=3),
        Endpoint("10.0.0.2", 80, weight=0),
        Endpoint("10.0.0.3", 80, ready=False),
        Endpoint("10.0.0.4", 80, weight=1),
        Endpoint("10.0.0.5", 80, weight=2),
    ]
    b = impl.WeightedRoundRobin(endpoints, rng=random.Random(1))
    b.mark_failed(endpoints[4])
    assert Counter(b.pick().ip for _ in range(8)) == {"10.0.0.1": 6, "10.0.0.4": 2}
    b.mark_healthy(endpoints[4])
    assert Counter(b.pick().ip for _ in range(12)) == {"10.0.0.1": 6, "10.0.0.4": 2, "10.0.0.5": 4}
    b._check()


def test_no_endpoints_error_says_why(impl):
    with pytest.raises(NoEndpointsError, match="wrr: no endpoints"):
        impl.WeightedRoundRobin([]).pick()
    with pytest.raises(NoEndpointsError, match=r"2 endpoints \(2 quiesced \(weight 0\)\)"):
        impl.WeightedRoundRobin(weighted(0, 0)).pick()
    with pytest.raises(NoEndpointsError):
        impl.WeightedRoundRobin([]).pick_many([1])


def test_start_offset_comes_from_the_rng(impl):
    endpoints = weighted(*range(1, 11))
    starts = {impl.WeightedRoundRobin(endpoints, rng=random.Random(seed)).pick() for seed in range(40)}
    assert len(starts) > 4  # a fleet does not move in step


def test_cursor_survives_update(impl):
    endpoints = weighted(5, 1, 1)
    names = {(e.ip, e.port): "abc"[i] for i, e in enumerate(endpoints)}
    b = impl.WeightedRoundRobin(endpoints, rng=random.Random(3))
    start = start_of(3, 7)
    first = [names[(b.pick().ip, 80)] for _ in range(3)]
    # The same addresses, new objects: the cycle goes on where it was, not from the top.
    b.update(weighted(5, 1, 1))
    rest = [names[(b.pick().ip, 80)] for _ in range(11)]
    assert "".join(first + rest) == ("aabacaa" * 3)[start:start + 14]
    # A new period: the position is kept modulo its length.
    b.update(weighted(2, 1))
    position = (start + 14) % 7 % 3
    cycle = nginx_swrr([2, 1], 3)
    assert [b.pick().ip for _ in range(5)] == [f"10.0.0.{cycle[(position + i) % 3] + 1}" for i in range(5)]
    b._check()


def test_update_keeps_failure_marks_of_survivors_only(impl):
    a, c = weighted(2, 1)
    b = impl.WeightedRoundRobin([a, c])
    b.mark_failed(a)
    b.update([Endpoint("10.0.0.1", 80, weight=4), c])
    assert {b.pick() for _ in range(4)} == {c}
    b.update([c])
    b.update([a, c])
    assert Counter(b.pick() for _ in range(6)) == {a: 4, c: 2}
    b._check()


def test_bad_update_changes_nothing(impl):
    b = impl.WeightedRoundRobin(weighted(3, 1), rng=random.Random(0))
    before = b.endpoints
    with pytest.raises(ConfigError, match=r"endpoints\[1\]: '10.0.0.1:80' is listed twice"):
        b.update([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.1", 80, weight=3)])
    assert b.endpoints == before
    assert Counter(b.pick() for _ in range(4)) == Counter({before[0]: 3, before[1]: 1})
    b._check()


def test_pick_many_follows_the_cycle(impl):
    endpoints = weighted(3, 2, 1)
    a = impl.WeightedRoundRobin(endpoints, rng=random.Random(4))
    b = impl.WeightedRoundRobin(endpoints, rng=random.Random(4))
    assert [endpoints[i] for i in a.pick_many(["k"] * 9)] == [b.pick() for _ in range(9)]


def test_scheduler_and_make_balancer(impl):
    b = impl.WeightedRoundRobin(weighted(1))
    assert b.scheduler == "wrr" and b.needs_key is False
    made = lbcore.make_balancer("wrr", weighted(2, 1), rng=random.Random(0))
    assert isinstance(made, lbcore.WeightedRoundRobin)
    with pytest.raises(ConfigError, match="seed: 1 is not an option of wrr; it takes: rng"):
        lbcore.make_balancer("wrr", weighted(1), seed=1)


def test_twins_share_the_bounds(both):
    pure, fast = both
    assert module_of(pure).MAX_CYCLE == module_of(fast).MAX_CYCLE == 1 << 16
    assert module_of(pure).MAX_CYCLE_WORK == module_of(fast).MAX_CYCLE_WORK == 1 << 20


# ---- the long-cycle schedule (earliest deadline first) ----------------------------------

def long_cycle_endpoints() -> list[Endpoint]:
    # 150 distinct weights: a period of 11,325 picks, 1.7M steps to compute ahead > MAX_CYCLE_WORK.
    return [Endpoint(f"10.1.{i // 250}.{i % 250 + 1}", 80, weight=i + 1) for i in range(150)]


def test_long_cycle_uses_deadlines_and_keeps_windows(impl):
    endpoints = long_cycle_endpoints()
    b = impl.WeightedRoundRobin(endpoints, rng=random.Random(5))
    picks = [b.pick() for _ in range(3 * 11325)]  # crosses two period boundaries
    b._check()
    assert windows_hold_weights(picks, endpoints)


def test_long_cycle_period_too_long(impl):
    # {65536, 1}: a period of 65,537 picks, longer than MAX_CYCLE.
    a, c = weighted(65536, 1)
    b = impl.WeightedRoundRobin([a, c], rng=random.Random(2))
    picks = [b.pick() for _ in range(2 * 65537 + 5)]
    assert Counter(picks[:65537]) == {a: 65536, c: 1}
    assert windows_hold_weights(picks, [a, c])
    b._check()


def test_long_cycle_position_survives_update(impl):
    endpoints = long_cycle_endpoints()
    b = impl.WeightedRoundRobin(endpoints, rng=random.Random(8))
    picks = [b.pick() for _ in range(5000)]
    b.update(long_cycle_endpoints())  # same addresses, new objects
    picks += [b.pick() for _ in range(2 * 11325)]
    b._check()
    # Restarting at the top would break the window property across the update.
    assert windows_hold_weights(picks, endpoints)


# ---- differential: both twins, seeded random operations, identical picks ---------------

def _random_endpoints(rng: random.Random) -> list[Endpoint]:
    out = []
    huge = rng.random() < 0.3  # weights that force the deadline schedule
    for i in rng.sample(range(1, 40), rng.randrange(0, 9)):
        weight = rng.choice([0, 1, 2, 3, 5, 8]) if not huge else rng.choice([0, 1, 7, 2**31 - 1, rng.randrange(2**31)])
        out.append(Endpoint(f"10.0.0.{i}", 80, weight=weight, ready=rng.random() > 0.15,
                            terminating=rng.random() < 0.2))
    return out


@pytest.mark.parametrize("seed", range(30))
def test_twins_pick_the_same_sequence(both, seed):
    pure, fast = both
    rng = random.Random(seed)
    endpoints = _random_endpoints(rng)
    a = pure.WeightedRoundRobin(endpoints, rng=random.Random(seed))
    b = fast.WeightedRoundRobin(endpoints, rng=random.Random(seed))
    assert_twins_agree(a, b, rng, _random_endpoints, 400)


def test_twins_agree_across_deadline_periods(both):
    pure, fast = both
    endpoints = long_cycle_endpoints()[:120]  # 7,260 picks a period, 120 distinct weights
    a = pure.WeightedRoundRobin(endpoints, rng=random.Random(11))
    b = fast.WeightedRoundRobin(endpoints, rng=random.Random(11))
    assert [a.pick() for _ in range(16000)] == [b.pick() for _ in range(16000)]
    a._check()
    b._check()


# ---- properties ------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(
    weights=st.lists(st.integers(0, 12), min_size=1, max_size=10),
    seed=st.integers(0, 2**32 - 1),
    rounds=st.integers(1, 3),
)
def test_property_every_window_holds_the_weights(weights, seed, rounds):
    endpoints = weighted(*weights)
    for module in twin_modules():
        b = module.WeightedRoundRobin(endpoints, rng=random.Random(seed))
        if not any(weights):
            with pytest.raises(NoEndpointsError):
                b.pick()
            continue
        picks = [b.pick() for _ in range(sum(weights) * rounds + 7)]
        assert windows_hold_weights(picks, endpoints)
