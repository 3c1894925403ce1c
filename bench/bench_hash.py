"""Benchmarks of the hash schedulers (dh, sh, mh); not part of the test run.

    python -m pytest bench/bench_hash.py --benchmark-enable -s   # record: bench/results/

Each speed figure is a ratio taken in one test: the subject and its reference (the
floor ``abs(k)``, uhashring, the pure twin) are timed in alternation, 15 times each, with
lbcore._floor (the helper ``lbcore demo`` uses too), and the median of the per-round
ratios taken, so load on a shared machine hits both sides alike.  A "call" is
one pre-bound call in a loop of many (``for _ in repeat(None, n): pick(key)``), as a
proxy would make it.  Figures print as ``FIGURE`` lines (with ``-s``) and go to
``extra_info`` in the JSON; targets are recorded beside them, not asserted.
"""

from __future__ import annotations

import os
import statistics
import time
from array import array

import pytest
from uhashring import HashRing

import lbcore
from lbcore import Endpoint
from lbcore._floor import Cost, call_loop, floor_loop, per_call
from lbcore._shared.endpoint_state import pickable_indices
from lbcore._twins import twin_namespace
from lbcore.models import check_endpoints

fast = twin_namespace("compiled")
pure = twin_namespace("pure")

KEY = "198.51.100.77:4"  # 15 characters, like a client ip:port
ENDPOINTS = [Endpoint(f"10.0.{i // 250}.{i % 250 + 1}", 8080) for i in range(100)]
ROUNDS = 15


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _cpu_timed(run) -> float:
    # CPU time of this process: time spent descheduled by a busy neighbour is left out.
    start = time.process_time()
    run()
    return time.process_time() - start


def _versus(subject, reference=None, calls: int = 100_000, reference_calls: int | None = None) -> Cost:
    """lbcore._floor's timing: subject and reference (the abs(k) floor unless given) in
    alternating rounds, the same method as lbcore demo."""
    return per_call(call_loop(subject, KEY), calls=calls, rounds=ROUNDS,
                    reference=None if reference is None else call_loop(reference, KEY),
                    reference_calls=reference_calls, timer=time.perf_counter)


def _record(benchmark, name: str, target: str, met: bool, **figures) -> None:
    benchmark.extra_info.update(figures, target=target, met=met)
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in figures.items() if not isinstance(v, list))
    print(f"\nFIGURE {name}: {shown} (target {target}: {'met' if met else 'MISSED'})")


def _bench(benchmark, call, calls: int) -> None:
    """pytest-benchmark's own timing of one loop, for its table and the record."""
    loop = call_loop(call, KEY) if call is not abs else floor_loop()
    benchmark.pedantic(loop, (calls,), rounds=ROUNDS, iterations=1)


def test_floor_abs(benchmark):
    _bench(benchmark, abs, 100_000)
    ns = benchmark.stats.stats.median / 100_000 * 1e9
    _record(benchmark, "floor abs(k)", "reference", True, ns_per_call=ns)


@pytest.mark.parametrize("name", ["DestinationHash", "SourceHash", "Maglev"])
def test_pick_str_key_100_endpoints(benchmark, name):
    pick = getattr(fast, name)(ENDPOINTS).pick
    cost = _versus(pick)
    _bench(benchmark, pick, 100_000)
    _record(benchmark, f"{name} pick", "<= 3x floor", cost.ratio <= 3,
            ns_per_call=cost.ns, floor_ns=cost.floor_ns, ratio=cost.ratio, rounds_s=cost.rounds)


def test_mh_pick_vs_uhashring(benchmark):
    pick = fast.Maglev(ENDPOINTS).pick
    ring = HashRing(nodes=[e.address for e in ENDPOINTS])
    cost = _versus(pick, ring.get_node, 100_000, 5_000)
    _bench(benchmark, ring.get_node, 5_000)
    speedup = 1 / cost.ratio
    _record(benchmark, "mh pick vs uhashring get_node", ">= 30x faster", speedup >= 30,
            ns_per_call=cost.ns, uhashring_ns=cost.floor_ns, speedup=speedup, rounds_s=cost.rounds)


def test_mh_pick_vs_pure_twin(benchmark):
    pick = fast.Maglev(ENDPOINTS).pick
    pure_pick = pure.Maglev(ENDPOINTS).pick
    cost = _versus(pick, pure_pick, 100_000, 20_000)
    _bench(benchmark, pure_pick, 20_000)
    speedup = 1 / cost.ratio
    _record(benchmark, "mh pick vs pure twin", ">= 3x faster", speedup >= 3,
            ns_per_call=cost.ns, pure_ns=cost.floor_ns, speedup=speedup, rounds_s=cost.rounds)


def test_mh_pick_many_1m_int_keys(benchmark):
    b = fast.Maglev(ENDPOINTS)
    keys = array("Q", range(1_000_000))
    benchmark.pedantic(b.pick_many, (keys,), rounds=ROUNDS, iterations=1)
    ns = benchmark.stats.stats.median / len(keys) * 1e9
    _record(benchmark, "mh pick_many 1M int keys", "<= 5 ns/key", ns <= 5, ns_per_key=ns)


def test_maglev_table_build_65537_x_1000(benchmark):
    endpoints = [Endpoint(f"10.{i // 250}.0.{i % 250 + 1}", 8080) for i in range(1000)]
    entries = fast.Maglev(endpoints)._picker.table_key  # (address, weight) in address order
    benchmark.pedantic(fast.maglev_table, (65537, entries), rounds=ROUNDS, iterations=1)
    ms = benchmark.stats.stats.median * 1e3
    pure_ms = _timed(lambda: pure.maglev_table(65537, entries)) * 1e3
    _record(benchmark, "Maglev table M=65537 N=1000", "<= 2 ms", ms <= 2, build_ms=ms,
            pure_build_ms=pure_ms)


def test_maglev_update_vs_table_build(benchmark):
    # What a user calls, update() (validation, sort by address, table, fallback), against
    # the bare table build, timed in alternation in process CPU time; the ratio is the
    # median of the rounds' ratios.  Each update swaps one endpoint for another, so the
    # table is rebuilt every time.  The parts say where the time goes: checking the list
    # (check_endpoints, pickable_indices), and an update whose table is reused (the same
    # set reordered: validation, layout and fallback without the build).
    base = [Endpoint(f"10.{i // 250}.0.{i % 250 + 1}", 8080) for i in range(1001)]
    sets = [base[:1000], base[1:]]
    reordered = [sets[0], sets[0][::-1]]
    entries = fast.Maglev(sets[0])._picker.table_key
    b, same_table = fast.Maglev(sets[1]), fast.Maglev(sets[0])
    turn = {"n": 0}

    def update():
        turn["n"] += 1
        b.update(sets[turn["n"] % 2])

    def update_same_table():
        same_table.update(reordered[turn["n"] % 2])

    parts = {
        "table_build": lambda: fast.maglev_table(65537, entries),
        "update": update,
        "constructor": lambda: fast.Maglev(sets[0]),
        "update_same_table": update_same_table,
        "check_endpoints": lambda: check_endpoints(sets[0]),
        "pickable_indices": lambda: pickable_indices(tuple(sets[0]), frozenset()),
    }
    for run in parts.values():
        run()
    times = {name: [] for name in parts}
    for _ in range(ROUNDS):
        for name, run in parts.items():
            times[name].append(_cpu_timed(run))
    ratios = [u / t for u, t in zip(times["update"], times["table_build"])]
    benchmark.pedantic(update, rounds=ROUNDS, iterations=1)
    ratio = statistics.median(ratios)
    _record(benchmark, "Maglev update() vs bare table build, M=65537 N=1000", "<= 1.3x", ratio <= 1.3,
            ratio=ratio, ratio_rounds=ratios,
            constructor_ratio=statistics.median(c / t for c, t in zip(times["constructor"], times["table_build"])),
            **{f"{name}_ms": statistics.median(taken) * 1e3 for name, taken in times.items()},
            rounds_ms={name: [round(t * 1e3, 4) for t in taken] for name, taken in times.items()},
            lbcore=os.path.dirname(lbcore.__file__))


def _moved(before: array, after: array, old: tuple, new: tuple) -> float:
    return sum(old[i] != new[j] for i, j in zip(before, after)) / len(before)


def test_maglev_quality(benchmark):
    # Balance: entries per endpoint, max over mean, with M >= 100 N and at the default M.
    balance = {}
    for n, size in ((100, 65537), (1000, 100003), (1000, 65537)):
        table = fast.Maglev(ENDPOINTS[:n] if n <= 100 else
                            [Endpoint(f"10.{i // 250}.0.{i % 250 + 1}", 80) for i in range(n)],
                            table_size=size)._picker.table
        counts = [0] * n
        for entry in table:
            counts[entry] += 1
        balance[f"max_over_mean_N{n}_M{size}"] = max(counts) / (size / n)
    # Disruption: keys moved when each one of 100 endpoints is removed in turn.
    keys = array("Q", range(0, 100_000_000, 100))  # 1,000,000 keys
    b = fast.Maglev(ENDPOINTS)
    before = b.pick_many(keys)
    moved = []
    for removed in range(100):
        b.update(ENDPOINTS[:removed] + ENDPOINTS[removed + 1:])
        moved.append(_moved(before, b.pick_many(keys), tuple(ENDPOINTS), b.endpoints))
    benchmark.pedantic(b.update, (ENDPOINTS,), rounds=ROUNDS, iterations=1)
    met = balance["max_over_mean_N100_M65537"] <= 1.01 and statistics.mean(moved) <= 0.016
    _record(benchmark, "Maglev quality", "max/mean <= 1.01 at M >= 100 N; moved <= 1.6 % (ideal 1 %)",
            met, **balance, moved_min=min(moved), moved_mean=statistics.mean(moved),
            moved_max=max(moved))


def test_sh_dh_spread(benchmark):
    # IPVS bucket tables cut the last cycle: with 100 endpoints in 256 buckets, 56 get 3.
    keys = array("Q", range(1_000_000))
    figures = {}
    for name in ("SourceHash", "DestinationHash"):
        for size in (256, 65536):
            b = getattr(fast, name)(ENDPOINTS, table_size=size)
            counts = [0] * len(ENDPOINTS)
            for index in b.pick_many(keys):
                counts[index] += 1
            figures[f"{name}_{size}_max_over_mean"] = max(counts) / (len(keys) / len(ENDPOINTS))
    benchmark.pedantic(fast.SourceHash, (ENDPOINTS,), rounds=ROUNDS, iterations=1)
    _record(benchmark, "sh/dh spread, 1M keys over 100 endpoints", "recorded", True, **figures)
