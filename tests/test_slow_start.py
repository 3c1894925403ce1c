"""Slow start on wrr, lc, wlc and p2c (issue 15), run against both twins.

Time is an injected clock (``Clock``); nothing sleeps.  Envoy's rule, which the
expected figures below are worked out from by hand: weight times
``max((t / window) ** (1 / aggression), min_weight / 100)``, every weight times 1024
while something ramps (lbcore/_shared/slow_start.py).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from lbcore import ConfigError, Endpoint
from lbcore._shared.slow_start import ramp_factor

WINDOW = 100.0


class Clock:
    """Monotonic seconds set by the test; counts how often it was read."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def endpoints(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, weight=w) for i, w in enumerate(weights)]


def counts(b, picks: int) -> dict[str, int]:
    tally = Counter(b.pick().ip for _ in range(picks))
    return {ip: tally[ip] for ip in sorted(tally)}


def test_ramp_factor_follows_envoys_rule():
    assert ramp_factor(10, WINDOW, 1.0, 10) == pytest.approx(0.1)
    assert ramp_factor(25, WINDOW, 1.0, 10) == pytest.approx(0.25)
    assert ramp_factor(25, WINDOW, 2.0, 10) == pytest.approx(0.5)
    assert ramp_factor(2, WINDOW, 1.0, 10) == pytest.approx(0.1)  # the floor
    assert ramp_factor(2, WINDOW, 1.0, 0) == pytest.approx(0.02)
    assert ramp_factor(0, WINDOW, 1.0, 0) == pytest.approx(0.001 / WINDOW)  # Envoy's 1 ms
    assert ramp_factor(WINDOW, WINDOW, 1.0, 10) == 1.0


# wrr: a ramping endpoint of weight 1 beside two of weight 1 takes round(1024 * factor)
# of every 2048 + that many picks, exactly (the cycle is smooth WRR over those weights).
# aggression 1: factor t/window; aggression 2: sqrt(t/window) (0.316 -> 324, 0.707 -> 724).
@pytest.mark.parametrize(
    "aggression, fraction, share",
    [
        (1.0, 0.1, 102), (1.0, 0.25, 256), (1.0, 0.5, 512), (1.0, 1.0, None),
        (2.0, 0.1, 324), (2.0, 0.25, 512), (2.0, 0.5, 724), (2.0, 1.0, None),
    ],
)
def test_wrr_shares_over_the_window(impl, aggression, fraction, share):
    clock = Clock()
    a, b, c = endpoints(1, 1, 1)
    wrr = impl.WeightedRoundRobin([a, b], rng=random.Random(7), slow_start=WINDOW,
                                  slow_start_aggression=aggression, clock=clock)
    wrr.update([a, b, c])  # c starts its ramp at t = 0
    clock.now = fraction * WINDOW
    if share is None:  # the ramp is over: plain weights 1, 1, 1
        assert counts(wrr, 3) == {a.ip: 1, b.ip: 1, c.ip: 1}
        assert wrr._ramp_factors() == {}
    else:
        assert counts(wrr, 2048 + share) == {a.ip: 1024, b.ip: 1024, c.ip: share}
    wrr._check()


@pytest.mark.parametrize("min_weight, share", [(10, 102), (0, 20), (30, 307)])
def test_wrr_floor_is_min_weight_percent(impl, min_weight, share):
    # At 2 % of the window the rule's factor is 0.02: the floor decides.
    clock = Clock()
    a, b, c = endpoints(1, 1, 1)
    wrr = impl.WeightedRoundRobin([a, b], slow_start=WINDOW, slow_start_min_weight=min_weight,
                                  clock=clock)
    wrr.update([a, b, c])
    clock.now = 2.0
    assert counts(wrr, 2048 + share) == {a.ip: 1024, b.ip: 1024, c.ip: share}


def test_weights_refresh_at_most_every_percent_of_the_window(impl):
    clock = Clock()
    a, b, c = endpoints(1, 1, 1)
    wrr = impl.WeightedRoundRobin([a, b], slow_start=WINDOW, clock=clock)
    wrr.update([a, b, c])
    clock.now = 20.0
    assert counts(wrr, 2048 + 205)[c.ip] == 205   # 0.20 * 1024 = 204.8
    clock.now = 20.9                               # less than 1 % later: unchanged
    assert counts(wrr, 2048 + 205)[c.ip] == 205
    clock.now = 21.0                               # 1 % later: 0.21 * 1024 = 215.04
    assert counts(wrr, 2048 + 215)[c.ip] == 215


def test_no_clock_read_per_pick_unless_something_ramps(impl):
    clock = Clock()
    a, b, c = endpoints(1, 2, 3)
    wrr = impl.WeightedRoundRobin([a, b], slow_start=WINDOW, clock=clock)
    for _ in range(1000):
        wrr.pick()
    assert clock.reads == 0  # construction endpoints do not ramp
    wrr.update([a, b, c])
    reads = clock.reads
    for _ in range(10):
        wrr.pick()
    assert clock.reads == reads + 10  # ramping: one read per pick, to see if it is time
    clock.now = WINDOW
    wrr.pick()  # the refresh finds the ramp over
    reads = clock.reads
    for _ in range(1000):
        wrr.pick()
    assert clock.reads == reads


def test_construction_endpoints_do_not_ramp(impl):
    clock = Clock()
    a, b, c = endpoints(1, 1, 1)
    for scheduler in ("wrr", "lc", "wlc", "p2c"):
        balancer = getattr(impl, {"wrr": "WeightedRoundRobin", "lc": "LeastConnection",
                                  "wlc": "WeightedLeastConnection", "p2c": "LeastRequest"}[scheduler])
        b_ = balancer([a, b, c], slow_start=WINDOW, clock=clock)
        assert b_._ramp_factors() == {}
        picks = sorted(b_.pick().ip for _ in range(3))
        if scheduler != "p2c":  # p2c's two random choices need not split 3 picks evenly
            assert picks == [a.ip, b.ip, c.ip]
    assert clock.reads == 0


def test_ramp_after_mark_healthy(impl):
    clock = Clock()
    a, b, c = endpoints(1, 1, 1)
    wrr = impl.WeightedRoundRobin([a, b, c], slow_start=WINDOW, clock=clock)
    wrr.mark_healthy(c)  # never failed: no ramp
    assert wrr._ramp_factors() == {}
    clock.now = 500.0
    wrr.mark_failed(c)
    assert c.ip not in counts(wrr, 10)
    wrr.mark_healthy(c)  # back: ramps from t = 500
    assert wrr._ramp_factors() == {(c.ip, 80): 0.1}
    clock.now = 525.0
    assert counts(wrr, 2048 + 256) == {a.ip: 1024, b.ip: 1024, c.ip: 256}
    wrr._check()


def test_ramp_state_kept_across_update(impl):
    clock = Clock()
    a, b, c, d = endpoints(1, 1, 1, 1)
    wrr = impl.WeightedRoundRobin([a, b], slow_start=WINDOW, clock=clock)
    wrr.update([a, b, c])              # c ramps from 0
    clock.now = 50.0
    wrr.update([a, b, c, d])           # c keeps its ramp (0.5); d starts at the 10 % floor
    assert counts(wrr, 3 * 1024 + 512 - 1024 + 102) == {a.ip: 1024, b.ip: 1024, c.ip: 512, d.ip: 102}
    wrr.update([a, b, d])              # c leaves: its ramp is forgotten
    clock.now = 60.0
    wrr.update([a, b, c, d])           # c is new again: it ramps from 60, at the floor
    assert wrr._ramp_factors() == {(c.ip, 80): 0.1, (d.ip, 80): pytest.approx(0.1)}
    clock.now = 80.0                   # c: 0.2 (205), d: 0.3 (307)
    assert counts(wrr, 2048 + 205 + 307) == {a.ip: 1024, b.ip: 1024, c.ip: 205, d.ip: 307}
    wrr._check()


# lc, wlc: connections are held (never released), so the least loaded rule fills the
# ramping endpoint until active / ramped weight is level with the others': with a and
# b of weight wa holding x each, c of weight wc at factor f ends at f * x * wc / wa,
# within one connection (integer counts, ties to the first).
@pytest.mark.parametrize("scheduler", ["lc", "wlc"])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_least_connection_share_follows_the_ramp(impl, scheduler, fraction):
    clock = Clock()
    weights = (2, 2, 1) if scheduler == "wlc" else (1, 1, 1)
    a, b, c = endpoints(*weights)
    lb = make_balancer_twin(impl, scheduler, [a, b], clock)
    for _ in range(200):
        lb.pick()  # a and b hold 100 each
    lb.update([a, b, c])
    clock.now = fraction * WINDOW
    for _ in range(300):
        lb.pick()
    active = lb._active_counts()
    x = (active[(a.ip, 80)] + active[(b.ip, 80)]) / 2
    expected = fraction * x * weights[2] / weights[0]
    assert abs(active[(c.ip, 80)] - expected) <= 1, (active, expected)
    assert active[(c.ip, 80)] + 2 * x == 500
    lb._check()


# p2c: a and b hold 100 connections each; c, new, holds none; every further pick is
# released at once, so the counts stand still and Envoy's schedule shares the picks by
# ramped weight / (active + 1): 1024/101 : 1024/101 : 1024 f.  Tolerance: one pick per
# endpoint (the schedule's random start, rounding of the deadlines).
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_p2c_share_follows_the_ramp_and_the_counts(impl, fraction):
    clock = Clock()
    a, b, c = endpoints(1, 1, 1)
    p2c = make_balancer_twin(impl, "p2c", [a, b], clock, rng=5)
    for _ in range(200):
        p2c.pick()
    assert p2c._active_counts() == {(a.ip, 80): 100, (b.ip, 80): 100}
    p2c.update([a, b, c])
    clock.now = fraction * WINDOW
    tally = Counter()
    for _ in range(2000):
        e = p2c.pick()
        tally[e.ip] += 1
        p2c.release(e)
    ramped = {a.ip: 1024 / 101, b.ip: 1024 / 101, c.ip: round(1024 * fraction) / 1}
    total = sum(ramped.values())
    for ip, weight in ramped.items():
        assert abs(tally[ip] - 2000 * weight / total) <= 1, (tally, ip)
    p2c._check()


def make_balancer_twin(impl, scheduler, eps, clock, **options):
    cls = {"lc": impl.LeastConnection, "wlc": impl.WeightedLeastConnection,
           "p2c": impl.LeastRequest, "wrr": impl.WeightedRoundRobin}[scheduler]
    return cls(eps, slow_start=WINDOW, clock=clock, **options)


def test_p2c_ramps_on_the_deadline_schedule_with_equal_weights(impl):
    # Each pick released at once: every count stays 0, so the schedule shares by the
    # ramped weights alone: 1024 : 1024 : 512 at half the window, within one pick.
    clock = Clock()
    a, b, c = endpoints(1, 1, 1)
    p2c = impl.LeastRequest([a, b], rng=3, slow_start=WINDOW, clock=clock)
    p2c.update([a, b, c])
    clock.now = 50.0
    tally = Counter()
    for _ in range(2560):
        e = p2c.pick()
        tally[e.ip] += 1
        p2c.release(e)
    assert abs(tally[c.ip] - 512) <= 1 and abs(tally[a.ip] - 1024) <= 1, tally
    p2c._check()


def test_twins_agree_while_ramping(both):
    pure, fast = both
    rng = random.Random(15)
    for scheduler in ("wrr", "lc", "wlc", "p2c"):
        clock = Clock()
        pool = [Endpoint(f"10.0.1.{i}", 80, weight=1 + i % 3) for i in range(12)]
        twins = []
        for module in (pure, fast):
            seed = {"wrr": {"rng": random.Random(99)}, "p2c": {"rng": 99}}.get(scheduler, {})
            twins.append(make_balancer_twin(module, scheduler, pool[:4], clock, panic_threshold=50, **seed))
        current = pool[:4]
        for step in range(600):
            clock.now += rng.random() * 3
            op = rng.random()
            if op < 0.05:
                current = rng.sample(pool, rng.randrange(1, len(pool)))
                for t in twins:
                    t.update(current)
            elif op < 0.12:
                target = rng.choice(current)
                mark = rng.choice(["mark_failed", "mark_healthy"])
                for t in twins:
                    getattr(t, mark)(target)
            elif op < 0.3:
                released = rng.choice(current)
                for t in twins:
                    t.release(released)
            else:
                picked = [outcome(t.pick) for t in twins]
                assert picked[0] == picked[1], (scheduler, step)
            for t in twins:
                t._check()
            assert twins[0]._ramp_factors() == twins[1]._ramp_factors()
            assert twins[0].panic == twins[1].panic
            if scheduler != "wrr":
                assert twins[0]._active_counts() == twins[1]._active_counts()


def outcome(call):
    try:
        return call()
    except Exception as error:  # NoEndpointsError when everything failed
        return type(error).__name__, str(error)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"slow_start": -1}, "slow_start"),
        ({"slow_start": "30s"}, "slow_start"),
        ({"slow_start": 10, "slow_start_aggression": 0}, "slow_start_aggression"),
        ({"slow_start": 10, "slow_start_aggression": True}, "slow_start_aggression"),
        ({"slow_start": 10, "slow_start_min_weight": 101}, "slow_start_min_weight"),
        ({"slow_start": 10, "clock": 5}, "clock"),
    ],
)
def test_bad_options_name_the_field(impl, options, field):
    for cls in (impl.WeightedRoundRobin, impl.LeastConnection, impl.LeastRequest):
        with pytest.raises(ConfigError) as error:
            cls(endpoints(1, 1), **options)
        assert error.value.field == field


def test_slow_start_off_takes_no_clock(impl):
    for off in (None, 0):
        wrr = impl.WeightedRoundRobin(endpoints(1, 1), slow_start=off, clock=lambda: 1 / 0)
        wrr.update(endpoints(1, 1, 1))
        wrr.pick()
        assert wrr.slow_start is None
