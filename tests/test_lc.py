"""Least connection (lc) and weighted least connection (wlc), run against both twins."""

from __future__ import annotations

import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from lbcore._shared.endpoint_state import endpoint_key
from twins import twin_modules


def weighted(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, weight=w) for i, w in enumerate(weights)]


def names(picks, endpoints) -> str:
    return "".join("abcdefgh"[endpoints.index(e)] for e in picks)


class IpvsModel:
    """The rule of ip_vs_lc.c / ip_vs_wlc.c as a linear scan, with lbcore's bookkeeping.

    Counts are picks minus releases per address, never below zero, kept across updates
    for addresses that stay; failure marks likewise.
    """

    def __init__(self, endpoints: list[Endpoint], weighted: bool) -> None:
        self.weighted = weighted
        self.active: dict[tuple[str, int], int] = {}
        self.failed: set[tuple[str, int]] = set()
        self.update(endpoints)

    def update(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = list(endpoints)
        keys = {endpoint_key(e) for e in endpoints}
        self.active = {k: self.active.get(k, 0) for k in keys}
        self.failed &= keys

    def pickable(self, e: Endpoint) -> bool:
        usable = lbcore.usable_endpoints(self.endpoints)
        return e in usable and e.weight > 0 and endpoint_key(e) not in self.failed

    def pick(self) -> Endpoint | None:
        least = None
        for e in self.endpoints:
            if not self.pickable(e):
                continue
            if least is None:
                least = e
                continue
            doh, loh = self.active[endpoint_key(e)], self.active[endpoint_key(least)]
            if self.weighted:
                # ip_vs_wlc.c: if ((__s64)loh * atomic_read(&dest->weight) >
                #                  (__s64)doh * atomic_read(&least->weight)) least = dest;
                if loh * e.weight > doh * least.weight:
                    least = e
            elif doh < loh:  # ip_vs_lc.c: strict, so ties keep the first
                least = e
        if least is not None:
            self.active[endpoint_key(least)] += 1
        return least

    def release(self, e: Endpoint) -> None:
        key = endpoint_key(e)
        if self.active.get(key):
            self.active[key] -= 1

    def mark(self, e: Endpoint, failed: bool) -> None:
        key = endpoint_key(e)
        if key in self.active:
            (self.failed.add if failed else self.failed.discard)(key)


def make(impl, scheduler: str, endpoints):
    if scheduler == "wlc":
        return impl.WeightedLeastConnection(endpoints)
    return impl.LeastConnection(endpoints)


# ---- golden sequences --------------------------------------------------------------------

def test_lc_fewest_active_ties_to_the_first(impl):
    endpoints = weighted(1, 5, 1)  # lc ignores weights (other than 0)
    b = impl.LeastConnection(endpoints)
    assert names([b.pick() for _ in range(7)], endpoints) == "abcabca"
    b.release(endpoints[1])
    b.release(endpoints[1])  # a: 3, b: 2 -> 0, c: 2
    assert names([b.pick() for _ in range(4)], endpoints) == "bbbc"  # the tie at 2 goes to b


def test_ties_follow_list_order_not_address(impl):
    endpoints = [Endpoint("10.0.0.9", 80), Endpoint("10.0.0.1", 80)]
    assert impl.LeastConnection(endpoints).pick() == endpoints[0]
    assert impl.WeightedLeastConnection(endpoints).pick() == endpoints[0]


def test_wlc_golden(impl):
    # a:1, b:3: 0=0 tie -> a; then b while b/3 < 1; at a 1/1 = b 3/3 the tie goes to a.
    endpoints = weighted(1, 3)
    b = impl.WeightedLeastConnection(endpoints)
    assert names([b.pick() for _ in range(8)], endpoints) == "abbbabbb"


def test_wlc_cross_multiplication(impl):
    endpoints = weighted(3, 2, 2)
    b = impl.WeightedLeastConnection(endpoints)
    picks = names([b.pick() for _ in range(7)], endpoints)
    # loads a/3, b/2, c/2: 0 0 0 -> a; 1/3 0 0 -> b; 1/3 1/2 0 -> c; 1/3 < 1/2 -> a;
    # 2/3 1/2 1/2 -> b (the tie with c goes to b); 2/3 1 1/2 -> c; 2/3 1 1 -> a.
    assert picks == "abcabca"


def test_wlc_exact_with_the_largest_weights(impl):
    # 1/(2**31 - 2) and 1/(2**31 - 1) differ by about 2**-62: still ordered exactly.
    endpoints = weighted(2**31 - 2, 2**31 - 1)
    b = impl.WeightedLeastConnection(endpoints)
    assert names([b.pick() for _ in range(4)], endpoints) == "abba"
    b._check()


def test_weight_zero_never_picked_but_keeps_its_count(impl):
    a, c = weighted(1, 1)
    b = impl.WeightedLeastConnection([a, c])
    assert [b.pick(), b.pick(), b.pick()] == [a, c, a]
    quiesced = Endpoint("10.0.0.1", 80, weight=0)
    b.update([quiesced, c])
    assert {b.pick() for _ in range(3)} == {c}
    # a's open connections still end, and are counted down while it is quiesced.
    b.release(a)
    assert b._active_counts() == {("10.0.0.1", 80): 1, ("10.0.0.2", 80): 4}
    b.update([a, c])
    assert [b.pick() for _ in range(3)] == [a, a, a]
    b._check()


# ---- counts --------------------------------------------------------------------------

def test_counts_survive_update(impl):
    a, c = weighted(1, 1)
    b = impl.LeastConnection([a, c])
    assert [b.pick() for _ in range(3)] == [a, c, a]  # a: 2, c: 1
    d = Endpoint("10.0.0.4", 80)
    b.update([Endpoint("10.0.0.1", 80, weight=7), c, d])  # a stays with a new weight
    assert b._active_counts() == {("10.0.0.1", 80): 2, ("10.0.0.2", 80): 1, ("10.0.0.4", 80): 0}
    assert [b.pick().ip for _ in range(3)] == ["10.0.0.4", "10.0.0.2", "10.0.0.4"]
    b._check()


def test_leaving_takes_the_count_and_release_is_ignored(impl):
    a, c = weighted(1, 1)
    b = impl.LeastConnection([a, c])
    held = [b.pick(), b.pick()]
    b.update([c])
    b.release(held[0])  # a left: ignored
    b.update([a, c])  # a came back: a fresh count
    assert b._active_counts() == {("10.0.0.1", 80): 0, ("10.0.0.2", 80): 1}
    b._check()


def test_release_of_unknown_or_idle_endpoint_is_ignored(impl):
    a, c = weighted(1, 1)
    b = impl.LeastConnection([a, c])
    b.release(Endpoint("10.9.9.9", 80))
    b.release(a)  # never below zero
    assert b._active_counts() == {("10.0.0.1", 80): 0, ("10.0.0.2", 80): 0}
    assert b.pick() == a
    with pytest.raises(TypeError, match="release\\(\\) takes an Endpoint, not str"):
        b.release("10.0.0.1:80")
    b._check()


def test_release_by_an_equal_object(impl):
    # The endpoint a caller releases need not be the object pick returned.
    a, c = weighted(1, 1)
    b = impl.LeastConnection([a, c])
    assert b.pick() == a
    b.release(Endpoint("10.0.0.1", 80, weight=3))  # same address, other object
    assert b._active_counts()[("10.0.0.1", 80)] == 0


def test_lease_releases(impl):
    a, c = weighted(1, 1)
    b = impl.WeightedLeastConnection([a, c])
    with b.lease() as endpoint:
        assert endpoint == a
        assert b.pick() == c
    assert b._active_counts() == {("10.0.0.1", 80): 0, ("10.0.0.2", 80): 1}


def test_failed_endpoint_skipped_and_counted(impl):
    endpoints = weighted(1, 1, 1)
    b = impl.LeastConnection(endpoints)
    held = b.pick()
    b.mark_failed(endpoints[1])
    assert {b.pick() for _ in range(4)} == {endpoints[0], endpoints[2]}
    b.release(held)
    b.mark_healthy(endpoints[1])
    assert b.pick() == endpoints[1]
    b._check()


def test_pick_many_counts_each_key(impl):
    endpoints = weighted(1, 2)
    b = impl.WeightedLeastConnection(endpoints)
    assert list(b.pick_many([1, 2, 3, 4])) == [0, 1, 1, 0]
    assert b._active_counts() == {("10.0.0.1", 80): 2, ("10.0.0.2", 80): 2}


def test_count_hook_counts_without_a_pick():
    # Affinity calls _count from C in the compiled twin; the pure twin's is a method.
    from lbcore._pure.lc import LeastConnection

    a, c = weighted(1, 1)
    b = LeastConnection([a, c])
    b._count(0)
    assert b.pick() == c
    b.release(a)
    assert b.pick() == a
    with pytest.raises(IndexError):
        b._count(2)


def test_overflow_is_refused():
    # IPVS counts in an atomic_t; lbcore refuses to wrap.  (2**31 picks are too many for
    # a test: the pure twin's count is set directly.)
    from lbcore._pure.lc import MAX_ACTIVE, LeastConnection

    a = Endpoint("10.0.0.1", 80)
    b = LeastConnection([a])
    b._loads.active[("10.0.0.1", 80)] = MAX_ACTIVE - 1
    b._loads.order.clear()
    b._loads.order.add((MAX_ACTIVE - 1, 0))
    b.pick()
    with pytest.raises(OverflowError, match="lc: 10.0.0.1:80 has 2147483647 active connections"):
        b.pick()
    b._check()


def test_no_endpoints_error_says_why(impl):
    with pytest.raises(NoEndpointsError, match="lc: no endpoints"):
        impl.LeastConnection([]).pick()
    with pytest.raises(NoEndpointsError, match=r"wlc: .*\(1 quiesced \(weight 0\), 1 failed\)"):
        b = impl.WeightedLeastConnection(weighted(0, 1))
        b.mark_failed(b.endpoints[1])
        b.pick()


def test_scheduler_names_options_and_registry(impl):
    assert impl.LeastConnection(weighted(1)).scheduler == "lc"
    assert impl.LeastConnection(weighted(1), weighted=True).scheduler == "wlc"
    assert impl.WeightedLeastConnection(weighted(1)).scheduler == "wlc"
    assert isinstance(impl.WeightedLeastConnection(weighted(1)), impl.LeastConnection)
    with pytest.raises(ConfigError, match="weighted: 'yes' must be true or false"):
        impl.LeastConnection(weighted(1), weighted="yes")


def test_make_balancer():
    assert lbcore.make_balancer("lc", weighted(1)).scheduler == "lc"
    b = lbcore.make_balancer("wlc", weighted(1))
    assert isinstance(b, lbcore.WeightedLeastConnection) and b.scheduler == "wlc"
    with pytest.raises(ConfigError, match="rng: 1 is not an option of lc; it takes: slow_start, slow_start_aggression, "
                       "slow_start_min_weight, clock, panic_threshold$"):
        lbcore.make_balancer("lc", weighted(1), rng=1)


def test_twins_share_the_bound(both):
    pure, fast = both
    assert sys.modules[pure.LeastConnection.__module__].MAX_ACTIVE == 2**31 - 1
    assert sys.modules[fast.LeastConnection.__module__].MAX_ACTIVE == 2**31 - 1


# ---- both twins against the linear-scan model ------------------------------------------

def _random_endpoints(rng: random.Random) -> list[Endpoint]:
    out = []
    for i in rng.sample(range(1, 40), rng.randrange(0, 10)):
        weight = rng.choice([0, 1, 1, 2, 3, 5, 2**31 - 1, 2**31 - 2, rng.randrange(1, 2**31)])
        out.append(Endpoint(f"10.0.0.{i}", 80, weight=weight, ready=rng.random() > 0.15,
                            terminating=rng.random() < 0.2))
    return out


@pytest.mark.parametrize("scheduler", ["lc", "wlc"])
@pytest.mark.parametrize("seed", range(20))
def test_twins_follow_the_ipvs_model(both, scheduler, seed):
    rng = random.Random(seed)
    endpoints = _random_endpoints(rng)
    model = IpvsModel(endpoints, weighted=scheduler == "wlc")
    twins = [make(impl, scheduler, endpoints) for impl in both]
    held: list[Endpoint] = []
    for _ in range(600):
        op = rng.random()
        if op < 0.05:
            endpoints = _random_endpoints(rng)
            model.update(endpoints)
            for b in twins:
                b.update(endpoints)
        elif op < 0.1 and endpoints:
            target = rng.choice(endpoints)
            failed = rng.random() < 0.6
            model.mark(target, failed)
            for b in twins:
                (b.mark_failed if failed else b.mark_healthy)(target)
        elif op < 0.45 and held:
            gone = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.2:  # an equal object, not the one pick returned
                gone = Endpoint(gone.ip, gone.port, weight=0 if gone.weight else 1)
            model.release(gone)
            for b in twins:
                b.release(gone)
        elif op < 0.5:
            stranger = Endpoint("10.9.9.9", rng.randrange(1, 100))
            for b in twins:
                b.release(stranger)
        else:
            expected = model.pick()
            for b in twins:
                if expected is None:
                    with pytest.raises(NoEndpointsError):
                        b.pick()
                else:
                    assert b.pick() == expected
            if expected is not None:
                held.append(expected)
        for b in twins:
            b._check()
            assert b._active_counts() == model.active


# ---- properties ------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(
    weights=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    picks=st.integers(0, 60),
)
def test_property_wlc_spreads_by_weight(weights, picks):
    # After any number of picks from idle, no endpoint could take one more connection
    # and still be below another's load: active/weight differ by at most one connection.
    endpoints = weighted(*weights)
    for module in twin_modules():
        b = module.WeightedLeastConnection(endpoints)
        for _ in range(picks):
            b.pick()
        active = b._active_counts()
        loads = [(active[endpoint_key(e)], e.weight) for e in endpoints]
        assert sum(a for a, _ in loads) == picks
        for a1, w1 in loads:
            for a2, w2 in loads:
                assert (a1 - 1) * w2 <= a2 * w1  # (a1 - 1)/w1 <= a2/w2
