"""Least request by two choices (p2c), run against both twins."""

from __future__ import annotations

import heapq
import random
import sys

import pytest

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from lbcore._shared.endpoint_state import endpoint_key

MASK64 = 2**64 - 1


def eps(*weights: int, **kw) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, weight=w, **kw) for i, w in enumerate(weights)]


class SplitMix:
    """SplitMix64 as the paper writes it (Steele, Lea, Flood 2014, Fig. 1), with the
    draw below n as Lemire's multiply-shift: the test's own copy of the generator."""

    def __init__(self, seed: int) -> None:
        self.state = seed

    def below(self, n: int) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) % 2**64
        z = self.state
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % 2**64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB % 2**64
        return (z ^ (z >> 31)) * n // 2**64


def chi_square(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((c - expected) ** 2 / expected for c in counts)


# Upper 0.1 % points of chi-square: a fair spread exceeds them once in a thousand runs.
CHI2_999 = {9: 27.88, 19: 43.82, 99: 148.23}


# ---- golden sequences: the rules restated plainly -----------------------------------------

def two_choices_model(seed: int, active: list[int], picks: int) -> list[int]:
    """Equal weights, choice_count 2: two distinct uniform draws, fewer active wins, a
    tie keeps the first drawn; nothing released."""
    rng = SplitMix(seed)
    n = len(active)
    out = []
    for _ in range(picks):
        first = rng.below(n)
        second = rng.below(n - 1)
        if second >= first:  # the n - 1 others, in order
            second += 1
        chosen = second if active[second] < active[first] else first
        active[chosen] += 1
        out.append(chosen)
    return out


def test_two_choices_follow_the_rule(impl):
    endpoints = eps(*[1] * 7)
    b = impl.LeastRequest(endpoints, rng=2024)
    picks = [endpoints.index(b.pick()) for _ in range(500)]
    assert picks == two_choices_model(2024, [0] * 7, 500)


def test_weighted_schedule_follows_envoys_edf(impl):
    # Unequal weights: EdfScheduler.  Each pick takes the earliest (deadline, order),
    # which comes back (active + 1) / weight later; counts before the pick; a random
    # number of uncounted picks (below n) first.
    weights = [1, 2, 3, 5]
    endpoints = eps(*weights)
    for seed in range(8):
        b = impl.LeastRequest(endpoints, rng=seed)
        active = [0] * 4
        heap = [((active[i] + 1) * (1.0 / w), i, i) for i, w in enumerate(weights)]
        heapq.heapify(heap)
        order = len(heap)

        def pop() -> int:
            nonlocal order
            deadline, _, i = heap[0]
            heapq.heapreplace(heap, (deadline + (active[i] + 1) * (1.0 / weights[i]), order, i))
            order += 1
            return i

        for _ in range(SplitMix(seed).below(4)):
            pop()
        expected = []
        for _ in range(300):
            i = pop()
            active[i] += 1
            expected.append(i)
            if len(expected) % 3 == 0:  # release a connection of the endpoint picked first
                held = expected[len(expected) // 3]
                if active[held]:
                    active[held] -= 1
        got = []
        for n in range(300):
            got.append(endpoints.index(b.pick()))
            if (n + 1) % 3 == 0:
                b.release(endpoints[got[(n + 1) // 3]])
        assert got == expected, seed


def test_bias_zero_is_weighted_round_robin_by_deadlines(impl):
    # a: 2, b: 1; deadlines a 0.5, 1, 1.5, ... b 1, 2, ...; at 1.0 b was added first.
    a, b_ = eps(2, 1)
    full = "ab" + "aab" * 20
    for seed in range(6):
        b = impl.LeastRequest([a, b_], rng=seed, active_request_bias=0)
        got = "".join("ab"[[a, b_].index(b.pick())] for _ in range(30))
        assert got in (full[:30], full[1:31])  # a random start, below the endpoint count


def test_full_scan_once_choice_count_reaches_the_endpoints(impl):
    endpoints = eps(1, 1, 1, 1)
    b = impl.LeastRequest(endpoints, choice_count=4, rng=1)
    picks = [b.pick() for _ in range(12)]
    # Every endpoint compared each time: the counts never differ by more than one.
    for k in range(1, 13):
        counts = [picks[:k].count(e) for e in endpoints]
        assert max(counts) - min(counts) <= 1
    b.release(endpoints[2])
    assert b.pick() == endpoints[2]
    b._check()


# ---- load ----------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [[1] * 10, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]])
def test_an_endpoint_holding_many_requests_gets_fewer(impl, weights):
    endpoints = eps(*weights)
    b = impl.LeastRequest(endpoints, rng=7)
    busy = endpoints[3]
    # Fifty requests on busy: picked while the others were marked failed.
    for e in endpoints:
        if e != busy:
            b.mark_failed(e)
    assert {b.pick() for _ in range(50)} == {busy}
    for e in endpoints:
        b.mark_healthy(e)
    assert b._active_counts()[endpoint_key(busy)] == 50
    new = []
    for _ in range(2000):  # each released at once: the others stay near zero
        new.append(b.pick())
        b.release(new[-1])
    share = new.count(busy) / len(new)
    fair = busy.weight / sum(weights)
    if len(set(weights)) == 1:
        # Two distinct draws: busy wins only against an endpoint holding more, and none does.
        assert share == 0
    else:
        # The schedule spaces its picks 51 / weight apart instead of 1 / weight.
        assert share < fair / 10
    b._check()


@pytest.mark.parametrize("choice_count", [2, 3, 10])
def test_equal_load_spreads_evenly(impl, choice_count):
    # Released at once, every pick sees equal counts: ties, taken by the first draw (or
    # by reservoir sampling in a full scan), so the spread is uniform.
    endpoints = eps(*[1] * 10)
    b = impl.LeastRequest(endpoints, choice_count=choice_count, rng=99)
    counts = dict.fromkeys(endpoints, 0)
    for _ in range(20_000):
        e = b.pick()
        counts[e] += 1
        b.release(e)
    assert chi_square(list(counts.values())) < CHI2_999[9]


def test_equal_load_with_connections_held_spreads_evenly(impl):
    endpoints = [Endpoint(f"10.0.{i // 250}.{i % 250 + 1}", 80) for i in range(100)]
    b = impl.LeastRequest(endpoints, rng=5)
    held = [b.pick() for _ in range(500)]  # five each on average
    counts = dict.fromkeys(endpoints, 0)
    rng = random.Random(5)
    for _ in range(50_000):
        e = b.pick()
        counts[e] += 1
        held.append(e)
        b.release(held.pop(rng.randrange(len(held))))
    assert chi_square(list(counts.values())) < CHI2_999[99]
    # Two choices keep the held load tight: the most loaded holds a few more than the mean.
    active = b._active_counts().values()
    assert max(active) <= 5 + 4


# ---- counts, errors, options ---------------------------------------------------------------

def test_counts_survive_update_and_leave_with_their_endpoint(impl):
    a, c = eps(1, 1)
    b = impl.LeastRequest([a, c], rng=1)
    held = [b.pick() for _ in range(4)]
    assert b._active_counts() == {("10.0.0.1", 80): 2, ("10.0.0.2", 80): 2}
    d = Endpoint("10.0.0.4", 80)
    b.update([Endpoint("10.0.0.1", 80, weight=3), c, d])  # a stays, with a new weight
    assert b._active_counts() == {("10.0.0.1", 80): 2, ("10.0.0.2", 80): 2, ("10.0.0.4", 80): 0}
    b.update([a, d])  # c leaves with its count ...
    b.release(held[held.index(c)])  # ... and a late release of it is ignored
    b.update([a, c, d])
    assert b._active_counts()[("10.0.0.2", 80)] == 0
    b.release(Endpoint("10.0.0.1", 80, weight=7))  # an equal object releases too
    assert b._active_counts()[("10.0.0.1", 80)] == 1
    b.release(Endpoint("10.9.9.9", 80))
    with pytest.raises(TypeError, match=r"release\(\) takes an Endpoint, not str"):
        b.release("10.0.0.1:80")
    b._check()


def test_quiesced_failed_and_not_ready_are_skipped(impl):
    endpoints = [Endpoint("10.0.0.1", 80, weight=0), Endpoint("10.0.0.2", 80),
                 Endpoint("10.0.0.3", 80, ready=False), Endpoint("10.0.0.4", 80)]
    b = impl.LeastRequest(endpoints, rng=3)
    b.mark_failed(endpoints[3])
    assert {b.pick() for _ in range(20)} == {endpoints[1]}
    b.mark_failed(endpoints[1])
    with pytest.raises(NoEndpointsError, match=r"p2c: .*\(1 not ready, 1 quiesced \(weight 0\), 2 failed\)"):
        b.pick()
    with pytest.raises(NoEndpointsError, match="p2c: no endpoints"):
        impl.LeastRequest([]).pick()
    b._check()


def test_pick_many_counts_each_pick(impl):
    b = impl.LeastRequest(eps(1, 1, 1), rng=4)
    assert sorted(b.pick_many([None] * 6)) == [0, 0, 1, 1, 2, 2]
    assert sum(b._active_counts().values()) == 6


def test_lease_releases(impl):
    endpoints = eps(1, 1)
    b = impl.LeastRequest(endpoints, rng=4)
    with b.lease() as e:
        assert b._active_counts()[endpoint_key(e)] == 1
    assert set(b._active_counts().values()) == {0}


def test_same_seed_same_sequence_and_seeds_differ(impl):
    endpoints = eps(*[1] * 20)
    runs = []
    for rng in (11, 11, random.Random(11), 12):
        b = impl.LeastRequest(endpoints, rng=rng)
        runs.append([b.pick() for _ in range(50)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[3]
    r = random.Random(11)
    assert runs[2] == [*map(endpoints.__getitem__, two_choices_model(r.getrandbits(64), [0] * 20, 50))]


@pytest.mark.parametrize(
    "options,message",
    [
        ({"choice_count": 1}, r"choice_count: 1 is out of range; valid: 2\.\.2147483647"),
        ({"choice_count": True}, r"choice_count: True must be an integer"),
        ({"active_request_bias": -0.5}, r"active_request_bias: -0.5 must be a number from 0 to 10"),
        ({"active_request_bias": 11}, r"active_request_bias: 11 must be a number from 0 to 10"),
        ({"active_request_bias": "1"}, r"active_request_bias: '1' must be a number"),
        ({"rng": "seed"}, r"rng: 'seed' must be None, a random.Random or an int seed"),
        ({"rng": -1}, r"rng: -1 is out of range; an int seed is 0\.\.2\*\*64-1"),
        ({"rng": 2**64}, r"rng: 18446744073709551616 is out of range"),
    ],
)
def test_bad_options_name_the_field(impl, options, message):
    with pytest.raises(ConfigError, match=message):
        impl.LeastRequest(eps(1), **options)


def test_properties_and_registry(impl):
    b = impl.LeastRequest(eps(1), choice_count=3, active_request_bias=0.5, rng=1)
    assert (b.scheduler, b.choice_count, b.active_request_bias) == ("p2c", 3, 0.5)
    assert lbcore.make_balancer("p2c", eps(1), choice_count=5).choice_count == 5
    assert isinstance(lbcore.make_balancer("p2c", eps(1)), lbcore.LeastRequest)
    with pytest.raises(ConfigError, match="table_size: 7 is not an option of p2c; it takes: "
                                          "choice_count, active_request_bias, rng"):
        lbcore.make_balancer("p2c", eps(1), table_size=7)


def test_overflow_is_refused():
    # 2**31 picks are too many for a test: the pure twin's count is set directly.
    from lbcore._pure.least_request import LeastRequest
    from lbcore._pure.lc import MAX_ACTIVE

    b = LeastRequest(eps(1), rng=1)
    b._loads.active[0] = MAX_ACTIVE - 1
    b._loads.total = MAX_ACTIVE - 1
    b.pick()
    with pytest.raises(OverflowError, match="p2c: 10.0.0.1:80 has 2147483647 active connections"):
        b.pick()
    b._check()


def test_generator_and_bounds_are_the_same_in_both_twins(both):
    pure, fast = both
    assert pure.splitmix64(0)[1] == 0xE220A8397B1DCDAF  # SplitMix64's first output from 0
    state = 12345
    for _ in range(1000):
        assert pure.splitmix64(state) == fast.splitmix64(state)
        state = pure.splitmix64(state)[0]
    assert pure.splitmix64(MASK64) == fast.splitmix64(MASK64)
    for name in ("MAX_CHOICE_COUNT", "MAX_ACTIVE_REQUEST_BIAS"):
        assert getattr(sys.modules[pure.LeastRequest.__module__], name) == \
            getattr(sys.modules[fast.LeastRequest.__module__], name)


# ---- both twins, step by step ------------------------------------------------------------

def _random_endpoints(rng: random.Random) -> list[Endpoint]:
    return [
        Endpoint(f"10.0.0.{i}", 80, weight=rng.choice([0, 1, 1, 1, 2, 5, 2**31 - 1]),
                 ready=rng.random() > 0.1, terminating=rng.random() < 0.1)
        for i in rng.sample(range(1, 40), rng.randrange(0, 14))
    ]


@pytest.mark.parametrize("choice_count", [2, 3, 6])
@pytest.mark.parametrize("bias", [1.0, 0.0, 0.5, 2])
@pytest.mark.parametrize("seed", range(4))
def test_twins_pick_alike_step_by_step(both, choice_count, bias, seed):
    rng = random.Random(seed)
    endpoints = _random_endpoints(rng)
    twins = [impl.LeastRequest(endpoints, choice_count=choice_count, active_request_bias=bias, rng=seed)
             for impl in both]
    held: list[Endpoint] = []
    for _ in range(400):
        op = rng.random()
        if op < 0.04:
            endpoints = _random_endpoints(rng)
            for b in twins:
                b.update(endpoints)
        elif op < 0.08 and endpoints:
            target, mark = rng.choice(endpoints), rng.choice(["mark_failed", "mark_healthy"])
            for b in twins:
                getattr(b, mark)(target)
        elif op < 0.45 and held:
            gone = held.pop(rng.randrange(len(held)))
            for b in twins:
                b.release(gone)
        else:
            outcomes = []
            for b in twins:
                try:
                    outcomes.append(b.pick())
                except NoEndpointsError as error:
                    outcomes.append(str(error))
            assert outcomes[0] == outcomes[1]
            if isinstance(outcomes[0], Endpoint):
                held.append(outcomes[0])
        for b in twins:
            b._check()
        assert twins[0]._active_counts() == twins[1]._active_counts()
