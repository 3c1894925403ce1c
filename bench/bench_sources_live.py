"""The etcd source at 10,000 Services: the first full set, then the delay of one change.

Run (writes bench/results/sources_live-<date>.json with every round):

    python bench/bench_sources_live.py [--services 10000] [--changes 100] [--rounds 3]

A real single-member etcd on 127.0.0.1 (tests/etcd_support.py) holds one key per
Service, each with 10 endpoints, written through etcd's JSON gateway in transactions.
Measured, all in this process on the shared 2-core machine:

- first set: from ``watch()`` to the first `Snapshot` (list in pages + parse every value
  + the snapshot), a fresh source per round;
- change delay: one endpoint of one Service changed through the gateway every 100 ms
  (issue 17's rhythm); the delay from just before the put is sent to the snapshot
  carrying it reaching the consumer, and the part of it before the source saw the change
  (``changed_at``).  This is the source's share of the agent's
  network_programming_duration_seconds (issue 17: p50 <= 100 ms, p99 <= 300 ms for the
  whole path into the kernel).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from etcd_support import EtcdCluster  # noqa: E402

from lbcore.sources.live import open_source  # noqa: E402

PREFIX = "/bench/services"
ENDPOINTS = 10


def value(i: int, version: int = 0) -> str:
    return json.dumps({"vip": f"10.96.{i // 256}.{i % 256}", "port": 80, "scheduler": "wrr", "endpoints": [
        {"ip": f"10.{100 + j}.{i // 256}.{i % 256}", "port": 8080 + (version if j == 0 else 0)} for j in range(ENDPOINTS)]})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def fill(session: aiohttp.ClientSession, base: str, count: int) -> None:
    batch = 100  # under etcd's --max-txn-ops (128)
    for start in range(0, count, batch):
        success = [{"request_put": {"key": b64(f"{PREFIX}/svc{i}"), "value": b64(value(i))}}
                   for i in range(start, min(count, start + batch))]
        async with session.post(f"{base}/v3/kv/txn", json={"success": success}) as answer:
            assert answer.status == 200, await answer.text()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def first_set(spec: str, count: int) -> float:
    source = open_source(spec, clock=time.perf_counter)
    start = time.perf_counter()
    snapshots = source.watch()
    first = await snapshots.__anext__()
    elapsed = time.perf_counter() - start
    assert len(first.services) == count and not first.problems
    await snapshots.aclose()
    return elapsed


async def change_delays(spec: str, session: aiohttp.ClientSession, base: str, count: int, changes: int):
    source = open_source(spec, clock=time.perf_counter)
    snapshots = source.watch()
    await snapshots.__anext__()
    delays, seen = [], []
    for n in range(1, changes + 1):
        i = (n * 7919) % count
        sent = time.perf_counter()
        async with session.post(f"{base}/v3/kv/put", json={"key": b64(f"{PREFIX}/svc{i}"), "value": b64(value(i, n))}) as answer:
            assert answer.status == 200
        snapshot = await asyncio.wait_for(snapshots.__anext__(), 30)
        received = time.perf_counter()
        changed = next(s for s in snapshot.services if s.name == f"svc{i}")
        assert changed.endpoints[0].port == 8080 + n
        delays.append(received - sent)
        seen.append(snapshot.changed_at - sent)
        await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - sent)))
    await snapshots.aclose()
    return delays, seen


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def main(arguments: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as directory, EtcdCluster(Path(directory), size=1) as etcd:
        base = f"http://{etcd.endpoints[0]}"
        spec = etcd.spec(PREFIX)
        async with aiohttp.ClientSession() as session:
            await fill(session, base, arguments.services)
            rounds = []
            for _ in range(arguments.rounds):
                first = await first_set(spec, arguments.services)
                delays, seen = await change_delays(spec, session, base, arguments.services, arguments.changes)
                rounds.append({
                    "first_set_s": first,
                    "change_delay_ms": {"p50": 1e3 * statistics.median(delays), "p99": 1e3 * percentile(delays, 99),
                                        "max": 1e3 * max(delays)},
                    "seen_after_ms": {"p50": 1e3 * statistics.median(seen), "p99": 1e3 * percentile(seen, 99)},
                    "every_change_delay_ms": [round(1e3 * d, 3) for d in delays],
                })
                print(f"first set {first:.2f} s; change delay p50 {rounds[-1]['change_delay_ms']['p50']:.1f} ms, "
                      f"p99 {rounds[-1]['change_delay_ms']['p99']:.1f} ms (seen after p50 "
                      f"{rounds[-1]['seen_after_ms']['p50']:.1f} ms)", flush=True)
    return {
        "benchmark": "bench/bench_sources_live.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.node(), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "services": arguments.services, "endpoints_per_service": ENDPOINTS, "changes_per_round": arguments.changes,
        "rounds": rounds,
        "median_over_rounds": {
            "first_set_s": statistics.median(r["first_set_s"] for r in rounds),
            "change_delay_p50_ms": statistics.median(r["change_delay_ms"]["p50"] for r in rounds),
            "change_delay_p99_ms": statistics.median(r["change_delay_ms"]["p99"] for r in rounds),
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    result = asyncio.run(main(parser.parse_args()))
    out = Path(__file__).parent / "results" / f"sources_live-{result['date'][:10]}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}: {json.dumps(result['median_over_rounds'])}")
