"""lbcore simulate at the issue's scale (issue 18): 10,000,000 requests, 1,000 endpoints,
3 events, every scheduler, the pictures included, end to end as a user runs it; and the
command that makes README.md's picture (under <!-- simulate-picture -->), timed the same way.

Each round runs both commands, each in a fresh process, and takes its wall time and its
CPU time (user + system of the child: what a busy neighbour on the shared cores does not
inflate), and reads each scheduler's replay rate (requests replayed per second, the
figures' counting excluded) from the report.json it wrote.  The ``abs(k)`` floor call is
timed around every round, because the issue's absolute targets were set where it took
14 ns: each target is scaled by floor / 14 ns (a slower machine gets a lower rate target
and a longer time budget) and the record says so.

    python bench/bench_simulate.py [--rounds 3] [--requests 10000000]

Writes bench/results/simulate-DATE.json (bench/_results.py) with every round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import record  # noqa: E402

from lbcore._floor import floor_loop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The floor call took 14 ns where the targets were set.
REFERENCE_FLOOR_NS = 14.0
EVENTS = ["30s:remove:10.0.0.3:8080", "60s:add:10.0.4.1:8080", "80s:fail:10.0.0.7:8080"]
# Every scheduler: sh and dh need a bucket table above the endpoint count.
SCHEDULERS = ("rr,wrr,lc,wlc,dh:table_size=4096,sh:table_size=4096,mh,mh+affinity,wlc+affinity,"
              "p2c,ring,mh:balance_factor=1.25,ring:balance_factor=1.25")
# The targets: replayed requests per second, by kind of scheduler.
BATCH_TARGET, HELD_TARGET, END_TO_END_TARGET_S = 2_000_000, 300_000, 60.0


def floor_ns(calls: int = 2_000_000) -> float:
    """ns per abs(k) call (lbcore._floor's loop, as lbcore demo and bench/ time it): the
    median of five loops in process CPU time."""
    loop = floor_loop()
    times = []
    for _ in range(5):
        start = time.process_time()
        loop(calls)
        times.append(time.process_time() - start)
    return statistics.median(times) / calls * 1e9


def command(requests: int, out: str) -> list[str]:
    # The traffic spans 100 s whatever its size (100,000 requests/s at the scale).
    return [sys.executable, "-m", "lbcore", "simulate", "--requests", str(requests), "--rate", str(requests / 100),
            "--keys", "100000", "--zipf", "1.0", "--endpoints", "1000",
            *[arg for event in EVENTS for arg in ("--event", event)],
            "--schedulers", SCHEDULERS, "--seed", "1", "--out", out]


def readme_command(out: str) -> list[str]:
    """The sh block under <!-- simulate-picture --> in README.md, writing into ``out``."""
    with open(os.path.join(ROOT, "README.md")) as file:
        block = re.search(r"<!-- simulate-picture -->\n```sh\n(.*?)```", file.read(), re.S)
    words = shlex.split(block.group(1).replace("\\\n", " "))
    assert words[:2] == ["lbcore", "simulate"] and words[words.index("--out") + 1] == "docs/simulate", words
    words[words.index("--out") + 1] = out
    return [sys.executable, "-m", "lbcore", *words[1:]]


def timed(argv: list[str], out: str) -> tuple[dict, dict, str]:
    """(times, report, table) of one `lbcore simulate` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"lbcore simulate failed:\n{result.stderr}")
    with open(os.path.join(out, "report.json")) as file:
        report = json.load(file)
    times = {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
             "pictures": sorted(name for name in os.listdir(out) if name.endswith(".png"))}
    return times, report, result.stdout


def one_round(requests: int) -> dict:
    floor_before = floor_ns()
    with tempfile.TemporaryDirectory() as out:
        times, report, table = timed(command(requests, out), out)
    with tempfile.TemporaryDirectory() as out:
        readme, _, _ = timed(readme_command(out), out)
    floor_after = floor_ns()
    return {
        **times,
        "readme_picture": readme,
        "floor_abs_ns": [floor_before, floor_after],
        "load_average": list(os.getloadavg()),
        "implementation": report["implementation"],
        "schedulers": {s["name"]: {"replay": s["replay"], "replay_s": s["seconds"],
                                   "requests_per_second": s["requests_per_second"],
                                   "measure_s": s["measure_seconds"]} for s in report["schedulers"]},
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000_000)
    args = parser.parse_args()
    rounds = []
    for number in range(args.rounds):
        rounds.append(one_round(args.requests))
        r = rounds[-1]
        print(f"round {number + 1}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU; README picture "
              f"{r['readme_picture']['wall_s']:.1f} s wall; floor {r['floor_abs_ns'][0]:.1f}/"
              f"{r['floor_abs_ns'][1]:.1f} ns, load {r['load_average'][0]:.2f}")
    floor = statistics.median(f for r in rounds for f in r["floor_abs_ns"])
    scale = floor / REFERENCE_FLOOR_NS
    schedulers = {}
    for name, first in rounds[0]["schedulers"].items():
        rate = statistics.median(r["schedulers"][name]["requests_per_second"] for r in rounds)
        target = (BATCH_TARGET if first["replay"] in ("key", "sequence") else HELD_TARGET) / scale
        schedulers[name] = {"replay": first["replay"], "median_requests_per_second": rate,
                            "target_scaled": target, "meets": rate >= target}
    wall = statistics.median(r["wall_s"] for r in rounds)
    cpu = statistics.median(r["cpu_s"] for r in rounds)
    budget = END_TO_END_TARGET_S * scale
    summary = {
        "requests": args.requests, "endpoints": 1000, "events": EVENTS, "schedulers_asked": SCHEDULERS,
        "floor_abs_ns_median": floor, "target_scale": f"targets scaled by floor / {REFERENCE_FLOOR_NS} ns = {scale:.3f}",
        "end_to_end_wall_s_median": wall, "end_to_end_cpu_s_median": cpu,
        "end_to_end_target_s_scaled": budget, "end_to_end_meets": wall <= budget,
        "readme_picture_wall_s_median": statistics.median(r["readme_picture"]["wall_s"] for r in rounds),
        "readme_picture_cpu_s_median": statistics.median(r["readme_picture"]["cpu_s"] for r in rounds),
        "readme_picture_command": " ".join(readme_command("docs/simulate")[1:]),
        "schedulers": schedulers,
    }
    print(rounds[-1]["table"], end="")
    for name, figures in schedulers.items():
        print(f"{name:28} {figures['median_requests_per_second'] / 1e6:8.2f} M/s  target "
              f"{figures['target_scaled'] / 1e6:.2f} M/s  {'meets' if figures['meets'] else 'MISSES'}")
    print(f"end to end: median {wall:.1f} s wall, {cpu:.1f} s CPU; target {budget:.1f} s "
          f"({'meets' if wall <= budget else 'MISSES'}); floor {floor:.1f} ns")
    print(f"README picture: median {summary['readme_picture_wall_s_median']:.1f} s wall")
    record("simulate", rounds=rounds, summary=summary, command=" ".join(["python", *sys.argv]),
           notes="Each round is one `lbcore simulate` process: " + " ".join(command(args.requests, "OUT")[1:]))


if __name__ == "__main__":
    main()
