"""Active health checks: detection and recovery times, and what a check costs.

Run (writes bench/results/health-<date>.json with every round):

    python bench/bench_health.py [--rounds 5] [--endpoints 20] [--scale 0.1] [--load 2000]

Detection and recovery, on the wall clock: ``--endpoints`` HTTP endpoints on 127.0.0.1
(in a child process, so their work is not the checker's), checked with HAProxy's
defaults scaled by ``--scale`` in time (interval 2 s, timeout 1 s → 0.2 s and 0.1 s;
rise 2, fall 3, jitter 10 %).  Each round, at a random moment:

- stopped: every endpoint's port closes (a crashed process: refused); the time from the
  stop to each endpoint marked unhealthy (``on_change``).  Then the ports open again;
  the time from then to each marked healthy;
- hung: every endpoint keeps accepting but stops answering; the time to unhealthy (the
  checks now end at their timeout).  Then they answer again; the time to healthy.

Bounds from the rule: out within fall × interval × (1 + jitter) + timeout of the fault,
back within rise × interval × (1 + jitter) of the repair.

Cost: ``--load`` endpoints (accept-and-close, in the child) checked by tcp connect every
second for 5 s in this process; the checker's CPU time per check, user (Python) and
system (the kernel: on loopback that includes both ends of the handshake and the reset),
and the checks it achieved per second against the ``--load`` per second asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import record  # noqa: E402

from lbcore import Endpoint, HealthCheck  # noqa: E402
from lbcore.health import HealthChecker  # noqa: E402

# The endpoints, in a child: one asyncio server per endpoint, driven by lines on stdin
# ("stop", "start", "hang", "answer"), each acknowledged by "ok" on stdout.
CHILD = r"""
import asyncio, json, sys

class Http(asyncio.Protocol):
    def __init__(self, state): self.state = state
    def connection_made(self, transport):
        self.transport = transport
        if self.state["mode"] == "close": transport.close()
    def data_received(self, data):
        if self.state["mode"] == "answer" and b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()

async def main(n, mode):
    loop = asyncio.get_running_loop()
    state = {"mode": mode}
    servers = [await loop.create_server(lambda: Http(state), "127.0.0.1", 0) for _ in range(n)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps(ports), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "stop":
            for s in servers: s.close()
            await asyncio.gather(*(s.wait_closed() for s in servers))
        elif line == "start":
            servers = [await loop.create_server(lambda: Http(state), "127.0.0.1", p) for p in ports]
        else:
            state["mode"] = line
        print("ok", flush=True)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


class Endpoints:
    """The child process holding the endpoints."""

    def __init__(self, n: int, mode: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, str(n), mode],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ports = json.loads(self.process.stdout.readline())

    async def tell(self, command: str) -> float:
        """Send ``command``; the seconds until the child said it was done."""

        def send() -> float:
            started = time.monotonic()
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            assert self.process.stdout.readline().strip() == "ok"
            return time.monotonic() - started

        return await asyncio.to_thread(send)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


async def fault_round(endpoints: Endpoints, check: HealthCheck, fault: str, rng: random.Random) -> dict:
    """One fault and its repair; the time to each transition, per endpoint, in seconds."""
    changed: dict[str, list[float]] = {"down": [], "up": []}
    marks: dict[int, float] = {}

    def on_change(endpoint: Endpoint, state) -> None:
        if state.healthy in marks:  # a flap before the fault would count for nothing
            changed["up" if state.healthy else "down"].append(time.monotonic() - marks[state.healthy])

    checker = HealthChecker(check, [Endpoint("127.0.0.1", p) for p in endpoints.ports], on_change=on_change,
                            rng=rng)
    checker.start()
    await asyncio.sleep(check.interval * (2 + rng.random()))  # settled, at a random phase
    n = len(endpoints.ports)
    # Checks that failed already (a timeout on the loaded machine) shorten the way to fall.
    failing_at_fault = sum(1 for state in checker.states.values() if state.failures or not state.healthy)
    marks[False] = time.monotonic()
    fault_took = await endpoints.tell("stop" if fault == "stopped" else "hang")
    while len(changed["down"]) < n:
        await asyncio.sleep(0.001)
    await asyncio.sleep(check.interval * rng.random())
    marks[True] = time.monotonic()
    repair_took = await endpoints.tell("start" if fault == "stopped" else "answer")
    while len(changed["up"]) < n:
        await asyncio.sleep(0.001)
    await checker.stop()
    # Times run from just before the command went to the child; the fault (repair) took
    # effect at some point before its acknowledgement, which took this long.
    return {"fault": fault, "detection": changed["down"], "recovery": changed["up"],
            "endpoints_failing_at_fault": failing_at_fault,
            "fault_acknowledged_after": fault_took, "repair_acknowledged_after": repair_took}


async def cost(load: int, seconds: float) -> dict:
    endpoints = Endpoints(load, "close")
    try:
        checker = HealthChecker(HealthCheck(interval=1, timeout=0.5), [Endpoint("127.0.0.1", p) for p in endpoints.ports])
        await asyncio.sleep(0.5)
        checker.start()
        await asyncio.sleep(1.0)  # the first checks spread in
        before = {address: state.checks for address, state in checker.states.items()}
        usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(seconds)
        per_endpoint = [state.checks - before[address] for address, state in checker.states.items()]
        checks = sum(per_endpoint)
        usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - wall0
        user, system = usage.ru_utime - usage0.ru_utime, usage.ru_stime - usage0.ru_stime
        cpu = user + system
        failed = sum(s.checks_failed for s in checker.states.values())
        peak = checker.wheel.peak
        await checker.stop()
    finally:
        endpoints.close()
    return {"endpoints": load, "checks": checks, "seconds": wall, "cpu_seconds": cpu,
            "checks_per_second": checks / wall, "asked_per_second": load / 1.0,
            "cpu_us_per_check": cpu / checks * 1e6, "user_us_per_check": user / checks * 1e6,
            "system_us_per_check": system / checks * 1e6, "failed_checks": failed, "peak_in_flight": peak,
            # how many endpoints were checked how many times in the window
            "checks_per_endpoint": {str(n): per_endpoint.count(n) for n in sorted(set(per_endpoint))}}


#: The cost is measured on both event loops: the forwarder runs on uvloop when installed.
LOOPS = ("asyncio", "uvloop")


def in_loop(kind: str, coro) -> dict:
    """Run ``coro`` on a fresh event loop of ``kind``."""
    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def summarise(values: list[float]) -> dict:
    values = sorted(values)
    return {"median": statistics.median(values), "max": values[-1], "min": values[0]}


async def faults(args: argparse.Namespace, check: HealthCheck) -> list[dict]:
    """Every fault round: ``--rounds`` of a stop, then as many of a hang."""
    rng = random.Random(args.seed)
    rounds = []
    for fault in ("stopped", "hung"):
        endpoints = Endpoints(args.endpoints, "answer")
        try:
            for number in range(args.rounds):
                result = await fault_round(endpoints, check, fault, rng)
                result["round"] = number + 1
                rounds.append(result)
                print(f"{fault} round {number + 1}: detection median {statistics.median(result['detection']):.3f} s"
                      f" max {max(result['detection']):.3f} s; recovery median {statistics.median(result['recovery']):.3f} s"
                      f" max {max(result['recovery']):.3f} s", file=sys.stderr)
        finally:
            endpoints.close()
    return rounds


def main(args: argparse.Namespace) -> None:
    scale = args.scale
    check = HealthCheck("http", interval=2 * scale, timeout=1 * scale, rise=2, fall=3, jitter=0.1)
    bounds = {
        "detection": check.fall * check.interval * (1 + check.jitter) + check.timeout,
        "recovery": check.rise * check.interval * (1 + check.jitter),
    }
    rounds = in_loop("asyncio", faults(args, check))
    summary: dict = {"check": {"type": check.type, "interval": check.interval, "timeout": check.timeout,
                               "rise": check.rise, "fall": check.fall, "jitter": check.jitter},
                     "endpoints": args.endpoints, "bounds_seconds": bounds}
    for fault in ("stopped", "hung"):
        mine = [r for r in rounds if r["fault"] == fault]
        for kind in ("detection", "recovery"):
            summary[f"{fault}_{kind}"] = {
                **summarise([t for r in mine for t in r[kind]]),
                "round_medians": [statistics.median(r[kind]) for r in mine],
                "within_bound": all(t <= bounds[kind] for r in mine for t in r[kind]),
            }
    costs = []
    for number in range(args.cost_rounds):
        for kind in LOOPS:
            result = in_loop(kind, cost(args.load, 5.0))
            result.update(round=number + 1, loop=kind)
            costs.append(result)
            print(f"cost round {number + 1} ({kind}): {result['checks_per_second']:.0f} checks/s of "
                  f"{result['asked_per_second']:.0f}, {result['cpu_us_per_check']:.1f} us CPU per check "
                  f"(user {result['user_us_per_check']:.1f}, system {result['system_us_per_check']:.1f})", file=sys.stderr)
    summary["cost"] = {"endpoints": args.load, "interval": 1.0}
    for kind in LOOPS:
        mine = [c for c in costs if c["loop"] == kind]
        summary["cost"][kind] = {
            key + "_median": statistics.median(c[key] for c in mine)
            for key in ("cpu_us_per_check", "user_us_per_check", "system_us_per_check", "checks_per_second")
        }
    rounds.extend({"cost": c} for c in costs)
    print(json.dumps(summary, indent=1), file=sys.stderr)
    record("health", rounds=rounds, summary=summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.1, help="HAProxy's default times, times this")
    parser.add_argument("--load", type=int, default=2000, help="endpoints in the cost run")
    parser.add_argument("--cost-rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    main(parser.parse_args())
