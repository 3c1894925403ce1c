"""Affinity benchmarks: hit and miss cost against the floor, memory per session, the table's map.

Run (the figures and their reading are in bench/README.md, section "Affinity"):

    python -m pytest bench/bench_affinity.py --benchmark-enable -q

Per-call costs are medians over rounds of ``CALLS`` calls made by the same Python loop
(``for arg in args: call(arg)``), so the floor -- a pre-bound ``abs`` over int keys --
carries the same loop overhead as the pick it is compared with.  Ratios are taken
within one run; the module prints them at the end.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from array import array

import pytest

import lbcore
from lbcore import Endpoint
from lbcore import balancers as registry
from lbcore._twins import twin_namespace

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CALLS = 10_000
ROUNDS = 30
KEY = "192.168.100.200"  # 15 characters, like the str key
# Inner balancers measured under Affinity.
SCHEDULERS = ["rr", "mh", "wlc"]
ENDPOINTS = [Endpoint(f"10.{i // 250}.0.{i % 250 + 1}", 8080) for i in range(100)]

_results: dict[str, float] = {}


def ip_key(i: int) -> str:
    """A distinct 15-character dotted key for every i < 2**24 (172.016.000.000 on)."""
    return f"172.{16 + (i >> 16):03d}.{(i >> 8) & 255:03d}.{i & 255:03d}"


def _calls(call, args) -> None:
    for arg in args:
        call(arg)


def _per_call(benchmark, name: str, call, args=None, setup=None) -> None:
    """Median ns per call of ``call`` over ``args`` (or fresh args from ``setup`` per round)."""
    if setup is None:
        benchmark.pedantic(_calls, args=(call, args), rounds=ROUNDS, warmup_rounds=2)
    else:
        benchmark.pedantic(_calls, setup=lambda: ((call, setup()), {}), rounds=ROUNDS)
    if benchmark.disabled:  # without --benchmark-enable: a smoke run, no figures
        return
    ns = benchmark.stats.stats.median / CALLS * 1e9
    benchmark.extra_info["ns_per_call"] = round(ns, 2)
    if "floor" in _results:
        benchmark.extra_info["x_floor"] = round(ns / _results["floor"], 2)
    _results[name] = ns


def _compiled():
    try:
        fast = twin_namespace("compiled")
    except ImportError:
        pytest.skip("compiled twins not built")
    return fast


def _affinity(twin, scheduler: str, **kwargs):
    cls = getattr(twin, registry._REGISTRY[scheduler][0].__name__)
    return twin.Affinity(cls(ENDPOINTS), **kwargs)


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    """Print every figure of the run, with its ratio to the floor, once at the end."""
    yield
    if not _results:
        return
    floor = _results.get("floor")
    lines = ["", f"Affinity figures (implementation: {lbcore.IMPLEMENTATION})"]
    for name, value in _results.items():
        if name.startswith(("bytes", "map")):
            lines.append(f"  {name:<52} {value:8.1f}")
        else:
            ratio = f"{value / floor:5.2f}x floor" if floor else ""
            lines.append(f"  {name:<52} {value:8.1f} ns   {ratio}")
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print("\n".join(lines))


# ---- pick cost ---------------------------------------------------------------------------

def test_floor(benchmark):
    # DESIGN: floor = a pre-bound C builtin with the same argument count.
    _per_call(benchmark, "floor", abs, [-12345] * CALLS)


def test_floor_fresh_keys(benchmark):
    # The miss benchmarks call with keys made just before each round; a builtin over the
    # same kind of keys shows what touching each new key object costs by itself.
    fresh = iter(range(2**24))
    _per_call(benchmark, "len(k) over fresh keys", len, setup=lambda: [ip_key(next(fresh)) for _ in range(CALLS)])


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_hit(benchmark, scheduler):
    a = _affinity(_compiled(), scheduler)
    endpoint = a.pick(KEY)
    _per_call(benchmark, f"hit Affinity({scheduler}) one key", a.pick, [KEY] * CALLS)
    assert a.pick(KEY) == endpoint and len(a._sessions()) == 1


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_hit_among_100k_sessions(benchmark, scheduler):
    # Hits spread over a table bigger than the CPU caches: the slot and session reads miss.
    a = _affinity(_compiled(), scheduler)
    keys = [ip_key(i) for i in range(100_000)]
    a.pick_many(keys)
    random.Random(1).shuffle(keys)
    chunks = iter([keys[i:i + CALLS] for i in range(0, len(keys), CALLS)] * (ROUNDS + 1))
    _per_call(benchmark, f"hit Affinity({scheduler}) 100k sessions", a.pick, setup=lambda: next(chunks))
    assert len(a._sessions()) == 100_000


@pytest.mark.parametrize("sessions", [1_000, 100_000])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_miss_into_a_full_table(benchmark, scheduler, sessions):
    # Every pick is a new key: the wrapped balancer picks, the stalest session is evicted.
    # 1,000 sessions stay in the CPU caches; 100,000 do not.
    a = _affinity(_compiled(), scheduler, max_entries=sessions)
    a.pick_many([ip_key(i) for i in range(sessions)])
    fresh = iter(range(sessions, 2**24))
    _per_call(
        benchmark, f"miss Affinity({scheduler}) full, {sessions:,} sessions", a.pick,
        setup=lambda: [ip_key(next(fresh)) for _ in range(CALLS)],
    )
    assert len(a._sessions()) == sessions


@pytest.mark.parametrize("sessions", [1_000, 100_000])
@pytest.mark.parametrize("kind", ["hit", "miss"])
def test_in_c(benchmark, kind, sessions):
    # pick_many over a buffer of int keys: the Affinity path with no Python call per key.
    a = _affinity(_compiled(), "rr", max_entries=sessions)
    a.pick_many(array("Q", range(sessions)))
    first = iter(range(sessions, 2**62, sessions))
    batch = {"next": array("Q", range(sessions))}

    def keys():  # hits: the batch stored last round; misses: a batch never seen
        if kind == "miss":
            start = next(first)
            batch["next"] = array("Q", range(start, start + sessions))
        return batch["next"]

    benchmark.pedantic(a.pick_many, setup=lambda: ((keys(),), {}), rounds=ROUNDS)
    if not benchmark.disabled:
        ns = benchmark.stats.stats.median / sessions * 1e9
        benchmark.extra_info["ns_per_key"] = round(ns, 2)
        _results[f"{kind} in C (pick_many), {sessions:,} sessions"] = ns


def test_hit_pure_twin(benchmark):
    pure = twin_namespace("pure")

    a = _affinity(pure, "rr")
    a.pick(KEY)
    _per_call(benchmark, "hit pure Affinity(rr) one key", a.pick, [KEY] * CALLS)


# ---- memory ------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
import array, os, sys
from lbcore import Endpoint
from lbcore._twins import twin_namespace
twin = twin_namespace(sys.argv[1])
n = int(sys.argv[2])

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

endpoints = [Endpoint(f"10.{i // 250}.0.{i % 250 + 1}", 8080) for i in range(100)]
a = twin.Affinity(twin.RoundRobin(endpoints), 10800, max_entries=n)
keys = array.array("Q", range(n))
before = rss()
first = a.pick_many(keys).tobytes()
after = rss() - len(first)  # the result array is not the table's
assert a.pick_many(keys).tobytes() == first  # every key still has its session
print((after - before) / n)
"""


@pytest.mark.parametrize("twin", ["compiled", "pure"])
def test_memory_per_session(benchmark, twin):
    # RSS growth of a fresh process while 1,000,000 sessions are stored (target <= 40 B).
    # Run through the benchmark fixture once, so that the figure lands in the record.
    if twin == "compiled":
        _compiled()
    out = benchmark.pedantic(
        subprocess.run, ([sys.executable, "-c", _MEMORY_SCRIPT, twin, "1000000"],),
        {"capture_output": True, "text": True, "check": True}, rounds=1, iterations=1,
    )
    benchmark.extra_info["bytes_per_session"] = float(out.stdout)
    _results[f"bytes per session, {twin}, 1M sessions"] = float(out.stdout)


# ---- the table's map: hand-written vs the Cython libraries with .pxd files ----------------

@pytest.fixture(scope="module")
def candidates():
    """bench/_table_candidates.pyx, compiled for this run (needs cykhash and preshed)."""
    pytest.importorskip("cykhash")
    pytest.importorskip("preshed")
    import pyximport

    importers = pyximport.install(build_dir=tempfile.mkdtemp(prefix="lbcore-bench-"), language_level=3)
    sys.path.insert(0, BENCH_DIR)
    try:
        import _table_candidates
    finally:
        sys.path.remove(BENCH_DIR)
        pyximport.uninstall(*importers)
    return _table_candidates


MAP_OPS = 200_000
MAP_KINDS = ("lbcore", "cykhash", "preshed")


@pytest.mark.parametrize("size", [1_000, 1_000_000])
@pytest.mark.parametrize("operation", ["hit", "chained hit", "churn"])
def test_table_choice(benchmark, candidates, operation, size):
    # hit: find a present key's session, refresh its last use; chained hit: the same,
    # each waiting for the one before (latency, as a pick from Python sees it); churn:
    # delete the oldest key, insert a new one (an insertion into a full table).  Bytes:
    # the map and its sessions, after all the churn.  The candidates take turns within
    # every round, in a rotating order, so that all three see the same machine load;
    # pytest-benchmark times the whole round.
    tables = {kind: candidates.Candidate(kind, size) for kind in MAP_KINDS}
    seconds = {kind: [] for kind in MAP_KINDS}
    turn = iter(range(10**6))

    def one_round():
        first = next(turn) % len(MAP_KINDS)
        for kind in MAP_KINDS[first:] + MAP_KINDS[:first]:
            table = tables[kind]
            start = time.perf_counter()
            if operation == "churn":
                table.churn(MAP_OPS)
            else:
                table.hits(MAP_OPS, operation == "chained hit")
            seconds[kind].append(time.perf_counter() - start)

    benchmark.pedantic(one_round, rounds=15, warmup_rounds=1)
    for kind, table in tables.items():
        table.check()
        ns = statistics.median(seconds[kind]) / MAP_OPS * 1e9
        benchmark.extra_info[f"{kind}_ns_per_op"] = round(ns, 2)
        benchmark.extra_info[f"{kind}_rounds_ns"] = [round(t / MAP_OPS * 1e9, 2) for t in seconds[kind]]
        _results[f"map {kind} {operation} n={size:,} ns/op"] = ns
        if operation == "churn":
            _results[f"map {kind} n={size:,} bytes/entry, map and sessions, after churn"] = table.map_bytes() / size
