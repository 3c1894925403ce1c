"""Picks on real key streams: a million distinct keys, not one key in L1 (issue 13).

    python bench/key_streams.py               # 7 rounds, about a minute
    python bench/key_streams.py --rounds 3    # a quick look

The pick benchmarks in bench_hash.py and bench_affinity.py call with one key, so the
key, its hash input and its table slot stay in L1.  Here every pick takes the next key
of a stream of 1,000,000, each a distinct 15-character str like a client address:

- ``shuffled``: the 1,000,000 distinct keys in random order;
- ``zipf``: 1,000,000 draws from a Zipf(s = 1.1) law over the 1,000,000 keys (a few hot
  clients, a long tail), ranks given to keys at random;
- ``memory order``: the keys in the order they were made, so reading each key object is
  a sequential walk the prefetcher hides: what is left is the pick's own memory traffic
  (a diagnostic for the two streams above).

For each stream the subjects are: the floor, a loop that only touches each key
(``len(k)``, the same loop shape as a pick); ``dh``, ``sh`` and ``mh`` over 100
endpoints (default tables); ``Affinity(Maglev)`` holding a live session for every one
of the 1,000,000 keys, so every pick is a hit.  Then ``lc`` and ``wlc`` over 10,000
endpoints, half of them holding a connection: each step picks (a new connection) and
releases one of the held connections chosen at random, so the active count stays at
5,000 and releases come in random order, not as ``release(pick())``; their floor is the
same loop with builtins, ``(12345).bit_length()`` for the pick and ``id`` for the release.

Each round times every subject once, in an order that rotates from round to round, in
process CPU time; ratios are taken within a round and the median over rounds is the
figure.  Every round goes into the record (bench/_results.py), nothing is dropped.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from itertools import accumulate

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import lbcore  # noqa: E402
from lbcore import Endpoint  # noqa: E402
from lbcore._twins import twin_namespace  # noqa: E402
from _results import record  # noqa: E402

KEYS = 1_000_000
ZIPF_S = 1.1
ENDPOINTS = [Endpoint(f"10.{i // 250}.0.{i % 250 + 1}", 8080) for i in range(100)]
ORDERED_ENDPOINTS = 10_000
HELD = ORDERED_ENDPOINTS // 2
CHURN_STEPS = 200_000


def ip_key(i: int) -> str:
    """A distinct 15-character dotted key for every i < 2**24 (172.016.000.000 on)."""
    return f"172.{16 + (i >> 16):03d}.{(i >> 8) & 255:03d}.{i & 255:03d}"


def streams(keys: list[str]) -> dict[str, list[str]]:
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    by_rank = keys[:]
    random.Random(2).shuffle(by_rank)  # rank r is by_rank[r]: hot keys lie anywhere in memory
    cumulative = list(accumulate((r + 1) ** -ZIPF_S for r in range(len(keys))))
    zipf = random.Random(3).choices(by_rank, cum_weights=cumulative, k=len(keys))
    return {"shuffled": shuffled, "zipf": zipf, "memory order": keys}


def key_loop(call):
    def run(keys, call=call):  # locals, not closure cells: the leanest loop
        for key in keys:
            call(key)
    return run


def churn_loop(pick, release, held, slots):
    def run(pick=pick, release=release, held=held, slots=slots):
        for j in slots:
            endpoint = pick()
            release(held[j])
            held[j] = endpoint
    return run


def timed(run, *args) -> float:
    start = time.process_time()
    run(*args)
    return time.process_time() - start


def measure(subjects: dict, rounds: int, args: tuple = ()) -> dict[str, list[float]]:
    """Seconds per round of every subject, each round in a rotated order."""
    names = list(subjects)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm up
        subjects[name](*args)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds[name].append(timed(subjects[name], *args))
    return seconds


def ordered_subjects(fast, rng: random.Random) -> dict:
    slots = [rng.randrange(HELD) for _ in range(CHURN_STEPS)]
    subjects = {"floor": churn_loop((12345).bit_length, id, list(range(HELD)), slots)}
    for name, weights in (("lc", [1] * ORDERED_ENDPOINTS),
                          ("wlc", [1 + i % 7 for i in range(ORDERED_ENDPOINTS)])):
        endpoints = [Endpoint(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 8080, weight=w)
                     for i, w in enumerate(weights)]
        cls = fast.LeastConnection if name == "lc" else fast.WeightedLeastConnection
        b = cls(endpoints)
        held = [b.pick() for _ in range(HELD)]  # ties go to the first: endpoints 0..4999
        assert len(set(held)) == HELD
        subjects[name] = churn_loop(b.pick, b.release, held, slots)
    return subjects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    fast = twin_namespace("compiled")
    keys = [ip_key(i) for i in range(KEYS)]
    sticky = fast.Affinity(fast.Maglev(ENDPOINTS), max_entries=KEYS)
    for key in keys:
        sticky.pick(key)
    assert len(sticky._sessions()) == KEYS
    hash_subjects = {
        "floor": key_loop(len),
        "dh": key_loop(fast.DestinationHash(ENDPOINTS).pick),
        "sh": key_loop(fast.SourceHash(ENDPOINTS).pick),
        "mh": key_loop(fast.Maglev(ENDPOINTS).pick),
        "Affinity(mh)": key_loop(sticky.pick),
    }
    rounds: list[dict] = []
    summary: dict[str, dict] = {}
    for stream, stream_keys in streams(keys).items():
        seconds = measure(hash_subjects, options.rounds, (stream_keys,))
        assert len(sticky._sessions()) == KEYS  # every pick was a hit: nothing added
        summary[stream] = figures(seconds, len(stream_keys), "Affinity(mh)")
        rounds.append({"stream": stream, "seconds": seconds})
    seconds = measure(ordered_subjects(fast, random.Random(4)), options.rounds)
    summary["lc/wlc, 10,000 endpoints, 5,000 held, random releases"] = figures(seconds, CHURN_STEPS)
    rounds.append({"stream": "lc/wlc pick + random release", "seconds": seconds})
    summary["setup"] = {"keys": KEYS, "zipf_s": ZIPF_S, "endpoints": len(ENDPOINTS),
                        "affinity_sessions": KEYS, "ordered_endpoints": ORDERED_ENDPOINTS,
                        "held": HELD, "churn_steps": CHURN_STEPS, "rounds": options.rounds,
                        "lbcore": os.path.dirname(lbcore.__file__)}
    summary["target"] = "Affinity(mh) hit <= 1.5x the mh pick on the shuffled stream"
    show(summary)
    record("key_streams", rounds=rounds, summary=summary,
           command=" ".join(["python", "bench/key_streams.py", *sys.argv[1:]]))


def figures(seconds: dict[str, list[float]], per_round: int, sticky: str | None = None) -> dict:
    """Median ns per key and median ratio to the floor (and of Affinity to mh) over rounds."""
    out = {}
    floor = seconds["floor"]
    for name, taken in seconds.items():
        out[name] = {
            "ns_median": statistics.median(taken) / per_round * 1e9,
            "ns_rounds": [round(s / per_round * 1e9, 1) for s in taken],
            "x_floor_median": statistics.median(s / f for s, f in zip(taken, floor)),
        }
    if sticky:
        ratios = [s / m for s, m in zip(seconds[sticky], seconds["mh"])]
        out[f"{sticky} / mh"] = {"median": statistics.median(ratios), "rounds": [round(r, 3) for r in ratios]}
    return out


def show(summary: dict) -> None:
    for stream, figures_ in summary.items():
        if stream in ("setup", "target"):
            continue
        print(f"\n{stream}")
        for name, figure in figures_.items():
            if "ns_median" in figure:
                print(f"  {name:<14} {figure['ns_median']:7.1f} ns  {figure['x_floor_median']:5.2f}x floor"
                      f"   rounds: {figure['ns_rounds']}")
            else:
                print(f"  {name:<14} {figure['median']:7.2f}       rounds: {figure['rounds']}")


if __name__ == "__main__":
    main()
