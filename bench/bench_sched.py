"""Benchmarks of p2c (LeastRequest), ring (RingHash) and bounded loads; not part of the
test run (issue 14).

    python -m pytest bench/bench_sched.py --benchmark-enable -s

Each speed figure is a ratio taken in one test: the subject, its reference (the floor
``abs(k)`` of lbcore._floor, uhashring, plain Maglev) and the floor are timed in
alternation, round after round, in process CPU time, and the ratio is the median of the
per-round ratios, so load on a shared machine hits all sides alike.  Every round is kept
in ``extra_info`` (and so in the committed record under bench/results/).

Two key streams for the keyed pickers: the *hot key* (one 15-character str key, again
and again: the key's bytes, its table slot or ring bucket stay in cache) and the
*stream* (1,000,000 distinct 15-character keys in shuffled order, each used once per
round: the key objects and the picker's memory are read cold, as for real clients).
Targets are recorded beside the figures, not asserted.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from itertools import accumulate, repeat

import pytest
from uhashring import HashRing

from lbcore import Endpoint
from lbcore._floor import FLOOR_KEY
from lbcore._twins import twin_namespace

fast = twin_namespace("compiled")

KEY = "198.51.100.77:4"  # 15 characters, like a client ip:port
ROUNDS = 15
CALLS = 100_000
STREAM = 1_000_000


def endpoints(n: int, weights=None) -> list[Endpoint]:
    return [Endpoint(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 8080,
                     weight=1 if weights is None else weights(i)) for i in range(n)]


def _stream_keys() -> list[str]:
    keys = [f"c{i:014d}" for i in range(STREAM)]  # distinct, 15 characters each
    random.Random(20261207).shuffle(keys)
    return keys


STREAM_KEYS = _stream_keys()
FLOOR_INTS = list(range(-STREAM, 0))  # one int per stream key: the floor walks a list as long
random.Random(1).shuffle(FLOOR_INTS)


# ---- loops: the leanest Python can run, bound to locals ---------------------------------

def call_loop(fn, arg, calls=CALLS):
    def run(fn=fn, arg=arg, calls=calls):
        for _ in repeat(None, calls):
            fn(arg)
    return run, calls


def pair_loop(pick, release, arg=None, calls=CALLS):
    def run(pick=pick, release=release, arg=arg, calls=calls):
        for _ in repeat(None, calls):
            release(pick(arg))
    return run, calls


def stream_loop(fn, keys):
    def run(fn=fn, keys=keys):
        for k in keys:
            fn(k)
    return run, len(keys)


def stream_pair(pick, release, keys):
    def run(pick=pick, release=release, keys=keys):
        for k in keys:
            release(pick(k))
    return run, len(keys)


FLOOR = call_loop(abs, FLOOR_KEY)
STREAM_FLOOR = stream_loop(abs, FLOOR_INTS)


def alternate(*loops, rounds=ROUNDS) -> list[list[float]]:
    """Seconds per call of each loop, every round, the loops timed in alternation."""
    for run, _ in loops:  # warm up
        run()
    taken: list[list[float]] = [[] for _ in loops]
    for _ in range(rounds):
        for (run, calls), times in zip(loops, taken):
            start = time.process_time()
            run()
            times.append((time.process_time() - start) / calls)
    return taken


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _record(benchmark, name: str, target: str, met: bool | None, rounds=None, **figures) -> None:
    benchmark.extra_info.update(figures, target=target, met=met)
    if rounds is not None:
        benchmark.extra_info["rounds_s_per_call"] = rounds
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    verdict = "recorded" if met is None else ("met" if met else "MISSED")
    print(f"\nFIGURE {name}: {shown} (target {target}: {verdict})")


def test_floor_abs(benchmark):
    run, calls = FLOOR
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    _record(benchmark, "floor abs(k)", "reference", None,
            ns_per_call=benchmark.stats.stats.median / calls * 1e9)


# ---- p2c ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [100, 10_000])
@pytest.mark.parametrize("weights", ["equal", "1-7"])
def test_p2c_pick_release(benchmark, weights, n):
    # Ten connections held per endpoint, so the draws compare real counts; unequal
    # weights run Envoy's deadline schedule instead of the two choices.
    b = fast.LeastRequest(endpoints(n, None if weights == "equal" else lambda i: 1 + i % 7), rng=n)
    for _ in range(10 * n):
        b.pick()
    subject = pair_loop(b.pick, b.release)
    times, floor = alternate(subject, FLOOR)
    benchmark.pedantic(subject[0], rounds=ROUNDS, iterations=1)
    ratio = median_ratio(times, floor)
    _record(benchmark, f"p2c pick+release, {n} endpoints, weights {weights}", "<= 4x floor", ratio <= 4,
            rounds={"subject": times, "floor": floor}, ns_per_pair=statistics.median(times) * 1e9,
            floor_ns=statistics.median(floor) * 1e9, ratio=ratio)


# ---- wrr, lc, wlc: the pick with slow start and panic off (issue 15) -----------------------

@pytest.mark.parametrize("scheduler", ["wrr", "lc", "wlc"])
def test_pick_release_100_endpoints(benchmark, scheduler):
    # Weights 1-7, ten connections held per endpoint for lc/wlc: the path every pick
    # takes when no endpoint ramps up and no panic is on, to compare before and after.
    eps = endpoints(100, lambda i: 1 + i % 7)
    if scheduler == "wrr":
        b = fast.WeightedRoundRobin(eps, rng=random.Random(100))
    else:
        b = fast.LeastConnection(eps, weighted=scheduler == "wlc")
        for _ in range(1000):
            b.pick()
    subject = pair_loop(b.pick, b.release)
    times, floor = alternate(subject, FLOOR)
    benchmark.pedantic(subject[0], rounds=ROUNDS, iterations=1)
    ratio = median_ratio(times, floor)
    _record(benchmark, f"{scheduler} pick+release, 100 endpoints, weights 1-7", "recorded", None,
            rounds={"subject": times, "floor": floor}, ns_per_pair=statistics.median(times) * 1e9,
            floor_ns=statistics.median(floor) * 1e9, ratio=ratio)


# ---- ring -----------------------------------------------------------------------------------

@pytest.mark.parametrize("keys", ["hot key", "stream"])
def test_ring_pick_100_endpoints(benchmark, keys):
    b = fast.RingHash(endpoints(100))
    assert b.ring_size == 16_000
    if keys == "hot key":
        subject, floor_loop = call_loop(b.pick, KEY), FLOOR
    else:
        subject, floor_loop = stream_loop(b.pick, STREAM_KEYS), STREAM_FLOOR
    times, floor = alternate(subject, floor_loop, rounds=ROUNDS if keys == "hot key" else 7)
    benchmark.pedantic(subject[0], rounds=3, iterations=1)
    ratio = median_ratio(times, floor)
    _record(benchmark, f"ring pick, 100 endpoints x 160 points, {keys}", "<= 3x floor", ratio <= 3,
            rounds={"subject": times, "floor": floor}, ns_per_call=statistics.median(times) * 1e9,
            floor_ns=statistics.median(floor) * 1e9, ratio=ratio)


def test_ring_pick_vs_uhashring(benchmark):
    # uhashring is pure Python: md5 from hashlib per key, bisect over its sorted points.
    nodes = [e.address for e in endpoints(100)]
    reference = HashRing(nodes=nodes, hash_fn="ketama")
    ring = fast.RingHash(endpoints(100))
    ketama = fast.RingHash(endpoints(100), hash="ketama")
    assert ketama.pick(KEY).address == reference.get_node(KEY)
    peer = call_loop(reference.get_node, KEY, calls=5_000)
    times, ketama_times, peer_times = alternate(call_loop(ring.pick, KEY), call_loop(ketama.pick, KEY), peer)
    benchmark.pedantic(peer[0], rounds=ROUNDS, iterations=1)
    speedup = median_ratio(peer_times, times)
    _record(benchmark, "ring pick vs uhashring get_node (ketama)", ">= 30x faster", speedup >= 30,
            rounds={"ring": times, "ring_ketama": ketama_times, "uhashring": peer_times},
            ns_per_call=statistics.median(times) * 1e9,
            ketama_ns_per_call=statistics.median(ketama_times) * 1e9,
            uhashring_ns=statistics.median(peer_times) * 1e9, speedup=speedup,
            ketama_speedup=median_ratio(peer_times, ketama_times))


def test_ring_build_1000_vs_maglev(benchmark):
    # Like for like: the ring (points, sort, bucket index) against the Maglev table
    # (M = 65537), both from the same (address, weight) entries; then whole constructors.
    many = endpoints(1000)
    entries = fast.Maglev(many)._picker.table_key
    table_key = ("xxh64", entries)

    def loop(fn, *args):
        def run():
            fn(*args)
        return run, 1

    ring, maglev = alternate(loop(fast.ring_points, table_key), loop(fast.maglev_table, 65537, entries))
    ring_new, maglev_new = alternate(loop(fast.RingHash, many), loop(fast.Maglev, many), rounds=7)
    benchmark.pedantic(fast.ring_points, (table_key,), rounds=ROUNDS, iterations=1)
    ratio = median_ratio(ring, maglev)
    _record(benchmark, "ring build (65,536 points) vs Maglev table (65537), 1000 endpoints",
            "<= 2x Maglev's build", ratio <= 2,
            rounds={"ring_points": ring, "maglev_table": maglev, "RingHash()": ring_new, "Maglev()": maglev_new},
            ring_ms=statistics.median(ring) * 1e3, maglev_ms=statistics.median(maglev) * 1e3, ratio=ratio,
            ring_constructor_ms=statistics.median(ring_new) * 1e3,
            maglev_constructor_ms=statistics.median(maglev_new) * 1e3)


# ---- bounded loads --------------------------------------------------------------------------

@pytest.mark.parametrize("keys", ["hot key", "stream"])
def test_bounded_mh_pick_release_vs_plain(benchmark, keys):
    # Ten connections held per endpoint, none full (the bound is ceil(1.25 * 1001 / 100)
    # = 13): the bounded pick checks its bound, counts, and release finds and uncounts.
    many = endpoints(100)
    plain = fast.Maglev(many)
    bounded = fast.Maglev(many, balance_factor=1.25)
    wanted = dict.fromkeys(many, 10)
    for key in (f"hold-{i}" for i in range(100_000)):  # keys that put exactly ten on each
        if wanted[plain.pick(key)]:
            wanted[bounded.pick(key)] -= 1
    assert set(bounded._active_counts().values()) == {10}
    if keys == "hot key":
        loops = pair_loop(bounded.pick, bounded.release, KEY), pair_loop(plain.pick, plain.release, KEY), FLOOR
    else:
        loops = (stream_pair(bounded.pick, bounded.release, STREAM_KEYS),
                 stream_pair(plain.pick, plain.release, STREAM_KEYS), STREAM_FLOOR)
    times, plain_times, floor = alternate(*loops, rounds=ROUNDS if keys == "hot key" else 7)
    benchmark.pedantic(loops[0][0], rounds=3, iterations=1)
    ratio = median_ratio(times, plain_times)
    _record(benchmark, f"bounded mh (c=1.25) pick+release vs plain mh pick+release, {keys}",
            "<= 1.3x plain", ratio <= 1.3,
            rounds={"bounded": times, "plain": plain_times, "floor": floor},
            ns_per_pair=statistics.median(times) * 1e9, plain_ns_per_pair=statistics.median(plain_times) * 1e9,
            ratio=ratio, ratio_to_floor=median_ratio(times, floor))


def _zipf_stream(universe: int, s: float, length: int, seed: int) -> list[str]:
    keys = [f"client-{k}" for k in range(universe)]
    cumulative = list(accumulate(1 / (k + 1) ** s for k in range(universe)))
    return random.Random(seed).choices(keys, cum_weights=cumulative, k=length)


def _steady_state(b, stream: list[str], in_flight: int, n: int, seed: int) -> dict:
    """Keys of the stream picked one by one while ``in_flight`` connections are held: each
    pick past that releases one held connection at random.  Samples max/mean active
    every 100 picks; counts picks on the key's first choice (plain Maglev's pick)."""
    rng = random.Random(seed)
    plain = fast.Maglev(b.endpoints) if b.scheduler == "mh" else fast.RingHash(b.endpoints)
    active = dict.fromkeys(b.endpoints, 0)
    held: list[Endpoint] = []
    samples, first = [], 0
    for step, key in enumerate(stream):
        e = b.pick(key)
        first += e == plain.pick(key)
        active[e] += 1
        held.append(e)
        if len(held) > in_flight:
            i = rng.randrange(len(held))
            held[i], held[-1] = held[-1], held[i]
            gone = held.pop()
            active[gone] -= 1
            b.release(gone)
        if step % 100 == 99 and step > in_flight:
            samples.append(max(active.values()) / (len(held) / n))
    return {"max_over_mean_median": statistics.median(samples), "max_over_mean_p99":
            sorted(samples)[int(0.99 * len(samples))], "max_over_mean_worst": max(samples),
            "first_choice_share": first / len(stream)}


def test_quality_zipf_bounded_vs_plain(benchmark):
    # Zipf(1.1) over 100,000 client keys, 1000 connections in flight over 100 endpoints
    # (10 each on average): how far the busiest endpoint is above the mean.
    stream = _zipf_stream(100_000, 1.1, 200_000, seed=11)
    many = endpoints(100)
    figures = {}
    for name, make in (("mh", lambda: fast.Maglev(many)),
                       ("mh c=1.25", lambda: fast.Maglev(many, balance_factor=1.25)),
                       ("ring", lambda: fast.RingHash(many)),
                       ("ring c=1.25", lambda: fast.RingHash(many, balance_factor=1.25))):
        figures[name] = _steady_state(make(), stream, 1000, len(many), seed=12)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    bound = math.ceil(1.25 * 1001 / 100) / 10
    _record(benchmark, "quality: max/mean active, Zipf(1.1), 1000 in flight over 100 endpoints",
            f"report bounded and plain (the bound at 1000 in flight is {bound:.2f}x the mean)", None,
            **{f"{name}: {k}": v for name, f in figures.items() for k, v in f.items()})


def test_quality_removing_one_of_100(benchmark):
    # Zipf(1.1) connections held (2500 picked, 500 of them ended), then 100,000 probe
    # keys placed (picked and released at once, so the loads stay), before and after
    # one endpoint of 100 leaves: keys moved by the bounded balancer against the plain
    # hash's, and the share of probes that overflow (land off their first choice).
    many = endpoints(100)
    probes = [f"probe-{i}" for i in range(100_000)]
    figures = {}
    for name, make in (("mh", lambda **kw: fast.Maglev(many, **kw)),
                       ("ring", lambda **kw: fast.RingHash(many, **kw))):
        bounded, plain = make(balance_factor=1.25), make()
        stream = _zipf_stream(10_000, 1.1, 2500, seed=4)
        held = [bounded.pick(key) for key in stream]
        rng = random.Random(4)
        for _ in range(500):
            bounded.release(held.pop(rng.randrange(len(held))))

        def placements():
            out = []
            for key in probes:
                out.append(bounded.pick(key))
                bounded.release(out[-1])
            return out, [plain.pick(key) for key in probes]

        before, plain_before = placements()
        for b in (bounded, plain):
            b.update(many[:37] + many[38:])
        after, plain_after = placements()
        n = len(probes)
        figures[f"{name}: moved"] = sum(x != y for x, y in zip(before, after)) / n
        figures[f"{name}: plain moved"] = sum(x != y for x, y in zip(plain_before, plain_after)) / n
        figures[f"{name}: overflow before"] = sum(x != y for x, y in zip(before, plain_before)) / n
        figures[f"{name}: overflow after"] = sum(x != y for x, y in zip(after, plain_after)) / n
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    _record(benchmark, "quality: keys moved when 1 of 100 endpoints leaves, c=1.25 vs plain",
            "report (the plain hash's moves plus the overflow's)", None, **figures)
