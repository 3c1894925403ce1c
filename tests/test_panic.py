"""The panic threshold on every balancer (issue 15), run against both twins.

Below ``panic_threshold`` percent of healthy endpoints (among those that take new
connections), picks ignore the failure marks; at or above it, marks count again.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from lbcore._shared.panic import in_panic
from twins import assert_twins_agree

CLASSES = {
    "rr": "RoundRobin", "wrr": "WeightedRoundRobin", "lc": "LeastConnection",
    "wlc": "WeightedLeastConnection", "dh": "DestinationHash", "sh": "SourceHash",
    "mh": "Maglev", "p2c": "LeastRequest", "ring": "RingHash",
}
KEYED = ("dh", "sh", "mh", "ring")


def make(impl, scheduler, endpoints, **options):
    if scheduler == "mh":
        options.setdefault("table_size", 251)
    return getattr(impl, CLASSES[scheduler])(endpoints, **options)


def ten() -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, weight=1 + i % 3) for i in range(10)]


def picked(b, scheduler, n=400) -> Counter:
    """Which endpoints n picks reach (keyed schedulers: n distinct keys); lc/wlc hold
    their connections, so that the least loaded moves on."""
    tally = Counter()
    for i in range(n):
        e = b.pick(f"client-{i}") if scheduler in KEYED else b.pick()
        tally[e.ip] += 1
        if scheduler not in ("lc", "wlc"):
            b.release(e)
    return tally


@pytest.mark.parametrize("scheduler", list(CLASSES))
def test_panic_engages_below_the_threshold_and_releases(impl, scheduler):
    endpoints = ten()
    b = make(impl, scheduler, endpoints, panic_threshold=50)
    failed = {e.ip for e in endpoints[:5]}
    for e in endpoints[:5]:
        b.mark_failed(e)
    # 5 of 10 healthy: 50 % is not below 50 %: marks count.
    assert not b.panic and b.panic_picks == 0
    assert not set(picked(b, scheduler)) & failed
    assert b.panic_picks == 0
    b.mark_failed(endpoints[5])
    # 4 of 10: panic, and picks reach the endpoints failed all along (lc/wlc: only they,
    # until their counts catch up with the 400 the others hold).
    assert b.panic
    reached = picked(b, scheduler)
    assert failed <= set(reached)
    assert b.panic_picks == 400
    b._check()
    b.mark_healthy(endpoints[5])
    assert not b.panic
    assert not set(picked(b, scheduler)) & failed
    assert b.panic_picks == 400  # no more picks in panic
    b._check()


@pytest.mark.parametrize("scheduler", list(CLASSES))
def test_everything_failed_is_panic_not_an_error(impl, scheduler):
    endpoints = ten()
    b = make(impl, scheduler, endpoints, panic_threshold=1)
    off = make(impl, scheduler, endpoints)
    for e in endpoints:
        b.mark_failed(e)
        off.mark_failed(e)
    assert b.panic and not off.panic
    assert len(picked(b, scheduler, 100)) > 1
    with pytest.raises(NoEndpointsError):
        off.pick("k") if scheduler in KEYED else off.pick()
    assert off.panic_threshold is None and off.panic_picks == 0


def test_only_endpoints_taking_connections_count(impl):
    # Two quiesced (weight 0) and one not ready: 7 take connections.  3 failed of 7
    # (57 % healthy) is no panic at 50; 4 failed (43 %) is.  Panic never reaches the
    # quiesced or the not-ready ones.
    endpoints = [Endpoint(f"10.0.0.{i + 1}", 80) for i in range(7)] + [
        Endpoint("10.0.0.8", 80, weight=0), Endpoint("10.0.0.9", 80, weight=0),
        Endpoint("10.0.0.10", 80, ready=False),
    ]
    rr = impl.RoundRobin(endpoints, panic_threshold=50)
    for e in endpoints[:3]:
        rr.mark_failed(e)
    assert not rr.panic
    rr.mark_failed(endpoints[3])
    assert rr.panic
    assert set(picked(rr, "rr", 70)) == {e.ip for e in endpoints[:7]}


def test_panic_follows_update(impl):
    endpoints = ten()
    rr = impl.RoundRobin(endpoints, panic_threshold=50)
    for e in endpoints[:5]:
        rr.mark_failed(e)
    assert not rr.panic
    rr.update(endpoints[:8])   # 3 of 8 healthy: below 50 %
    assert rr.panic
    rr.update(endpoints)       # marks survive; 5 of 10 again
    assert not rr.panic
    rr._check()


@pytest.mark.parametrize("threshold, panic", [(70, False), (70.5, True)])
def test_threshold_may_be_a_fraction_of_a_percent(threshold, panic):
    endpoints = tuple(ten())
    failed = frozenset((e.ip, 80) for e in endpoints[:3])
    assert in_panic(endpoints, failed, threshold) is panic


@pytest.mark.parametrize("value", [0, -5, 100.5, "50", True, float("nan")])
def test_bad_threshold_names_the_field(impl, value):
    for scheduler in CLASSES:
        with pytest.raises(ConfigError) as error:
            make(impl, scheduler, ten(), panic_threshold=value)
        assert error.value.field == "panic_threshold"


def test_affinity_reports_its_balancer_and_drops_sessions_on_mark_failed(impl):
    endpoints = ten()
    sticky = impl.Affinity(impl.RoundRobin(endpoints, panic_threshold=50), timeout=60,
                           clock=lambda: 0.0)
    assert sticky.panic_threshold == 50 and not sticky.panic
    for e in endpoints[:6]:
        sticky.mark_failed(e)
    assert sticky.panic
    # New sessions in panic may land on failed endpoints ...
    sessions = {f"client-{i}": sticky.pick(f"client-{i}") for i in range(40)}
    on_failed = {k for k, e in sessions.items() if e in endpoints[:6]}
    assert on_failed and sticky.panic_picks == 40
    sticky._check()
    # ... a session still dies when its endpoint is marked failed, even in panic ...
    victim = endpoints[6]
    mine = [k for k, e in sessions.items() if e == victim]
    sticky.mark_failed(victim)
    assert sticky.panic
    assert mine
    assert not any(e == victim for _, e, _ in sticky._sessions())
    # ... and those on failed endpoints die when the panic ends.
    for e in endpoints[:6]:
        sticky.mark_healthy(e)
    assert not sticky.panic
    assert not any(e == victim for _, e, _ in sticky._sessions())
    sticky._check()


def test_affinity_sessions_in_panic_on_failed_endpoints_die_at_release(impl):
    endpoints = ten()
    sticky = impl.Affinity(impl.RoundRobin(endpoints, panic_threshold=50), timeout=60,
                           clock=lambda: 0.0)
    for e in endpoints[:6]:
        sticky.mark_failed(e)
    for i in range(40):
        sticky.pick(f"client-{i}")
    assert any(e in endpoints[:6] for _, e, _ in sticky._sessions())
    sticky.mark_healthy(endpoints[0])  # 5 of 10 healthy: panic over
    assert not sticky.panic
    assert not any(e in endpoints[1:6] for _, e, _ in sticky._sessions())
    sticky._check()


def _random_endpoints(rng: random.Random) -> list[Endpoint]:
    return [Endpoint(f"10.0.2.{i}", 80, weight=rng.choice([0, 1, 2, 3]), ready=rng.random() > 0.1)
            for i in rng.sample(range(1, 40), rng.randrange(1, 12))]


@pytest.mark.parametrize("scheduler", list(CLASSES))
def test_twins_agree_with_panic(both, scheduler):
    pure, fast = both
    rng = random.Random(1500)
    endpoints = _random_endpoints(rng)
    a, b = (make(twin, scheduler, endpoints, panic_threshold=60, **_seed(scheduler)) for twin in (pure, fast))
    if scheduler in KEYED:
        a, b = _Keyed(a), _Keyed(b)
    assert_twins_agree(a, b, rng, _random_endpoints, 800)
    assert a.panic_picks == b.panic_picks > 0  # the walk went through panic


def _seed(scheduler: str) -> dict:
    return {"rr": {"rng": random.Random(3)}, "wrr": {"rng": random.Random(3)}, "p2c": {"rng": 3}}.get(scheduler, {})


class _Keyed:
    """A keyed balancer driven by assert_twins_agree: each pick takes the next key."""

    def __init__(self, balancer) -> None:
        self._b = balancer
        self._n = 0

    def pick(self):
        self._n += 1
        return self._b.pick(f"k{self._n}")

    def __getattr__(self, name):
        return getattr(self._b, name)


def test_make_balancer_and_service_carry_the_options():
    eps = ten()
    for scheduler in CLASSES:
        b = lbcore.make_balancer(scheduler, eps, panic_threshold=40)
        assert b.panic_threshold == 40 and b.slow_start is None
    ramp = lbcore.make_balancer("p2c", eps, slow_start=20, panic_threshold=50)
    assert ramp.slow_start == 20
    service = lbcore.Service("s", "10.96.0.1", 80, scheduler="wlc", slow_start=15, panic_threshold=60,
                             affinity_timeout=60, endpoints=eps)
    sticky = lbcore.make_balancer_for(service)
    assert (sticky.slow_start, sticky.panic_threshold) == (15, 60)
    assert (sticky.balancer.slow_start, sticky.balancer.panic_threshold) == (15, 60)
    assert lbcore.make_balancer("rr", eps, slow_start=0).slow_start is None  # off is off anywhere
    with pytest.raises(ConfigError) as error:
        lbcore.make_balancer("ring", eps, slow_start=30)
    assert error.value.field == "slow_start"
    assert str(error.value) == "slow_start: 30 does not apply to scheduler 'ring'; slow start ramps wrr, lc, wlc, p2c"
    with pytest.raises(ConfigError, match="slow_start_aggression: 2 is not an option of rr"):
        lbcore.make_balancer("rr", eps, slow_start_aggression=2)
