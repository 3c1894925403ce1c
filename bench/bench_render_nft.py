"""nftables rendering and applying at 10,000 services x 10 endpoints (issue 16), against
a kube-proxy-shaped ruleset this file generates, measured in the same run.

    python bench/bench_render_nft.py [--services N]

Targets (issue 16):
- full render of 10,000 x 10 <= 0.3 s (set where the abs(k) floor took 14 ns: the run
  records the floor, and the verdict scales the target by it);
- full kernel load <= 1/8 of the kube-proxy shape's;
- one endpoint of one service changed: render <= 20 ms (scaled likewise), applied with
  ``nft -f`` <= 50 ms (the kube-proxy shape: its service's chain rewritten);
- ``nft list table`` of the full set <= 1/2 of the kube-proxy shape's.

The kube-proxy shape is kube-proxy's nftables layout as reference/kube-proxy.md §4 and
nodes-and-fleets.md §1 describe it: ``table ip kube-proxy``, one
``ip daddr . meta l4proto . th dport vmap @service-ips`` dispatch, and per Service a
chain ``service-<hash>-<name>`` holding ``meta l4proto tcp dnat to numgen random mod 10
map { 0 : ip . port, ... }`` (an anonymous map per chain).  Its full load takes about
40 s, so it runs once per run; everything else runs several rounds, and every round is
recorded.  Needs root, ``ip`` and ``nft``: each load goes into a fresh
``lbcore-bench-<pid>-<n>`` namespace, deleted afterwards.

Also recorded: what mh costs, 100 Services x 10 endpoints as 2,039-slot Maglev tables
(204,000 map elements), loaded once.

Wall time is what the targets name; each ``nft`` run's CPU time (user + system, from
``/usr/bin/time``) is recorded beside it, since on a shared machine it moves less than
the wall time.  Writes bench/results/nft-<date>.json (date, machine, CPU, load average,
command, commit, every round) and prints a summary.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lbcore import Endpoint, Service
from lbcore.render import nft

ENDPOINTS = 10
RESULTS = Path(__file__).parent / "results"
_counter = itertools.count()


def service(i: int) -> Service:
    """The iptables bench's Services: 10 endpoints each, addresses unique per Service."""
    return Service(
        f"ns{i % 50}/svc{i}:http", f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}", 80,
        endpoints=[Endpoint(f"10.{128 + i // 256 % 64}.{i % 256}.{j + 1}", 8080) for j in range(ENDPOINTS)],
    )


def changed(s: Service) -> Service:
    """One endpoint replaced by another."""
    return dataclasses.replace(s, endpoints=s.endpoints[:-1] + (Endpoint("10.250.0.1", 8080),))


# -- the kube-proxy shape --------------------------------------------------------------


def kube_proxy_chain(s: Service) -> str:
    # kube-proxy's chain names: "service-" + base32(sha256(name))[:8] + "-" + name.
    name = f"{s.name.replace(':', '/')}/{s.protocol}"
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]
    return f"service-{digest}-{name}"


def kube_proxy_rule(s: Service) -> str:
    targets = ", ".join(f"{i} : {e.ip} . {e.port}" for i, e in enumerate(s.endpoints))
    return f"meta l4proto tcp dnat to numgen random mod {len(s.endpoints)} map {{ {targets} }}"


def kube_proxy_full(services: list[Service]) -> str:
    lines = [
        "table ip kube-proxy {",
        "    map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }",
        "    chain nat-prerouting { type nat hook prerouting priority -100; policy accept; jump services; }",
        "    chain nat-output { type nat hook output priority -100; policy accept; jump services; }",
        "    chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }",
    ]
    lines += [f"    chain {kube_proxy_chain(s)} {{ {kube_proxy_rule(s)}; }}" for s in services]
    lines.append("}")
    elements = ",\n    ".join(f"{s.vip} . tcp . {s.port} : goto {kube_proxy_chain(s)}" for s in services)
    lines.append(f"add element ip kube-proxy service-ips {{\n    {elements}\n}}")
    return "\n".join(lines) + "\n"


def kube_proxy_change(s: Service) -> str:
    """kube-proxy's partial sync of one changed Service: its chain rewritten."""
    chain = f"ip kube-proxy {kube_proxy_chain(s)}"
    return f"flush chain {chain}\nadd rule {chain} {kube_proxy_rule(s)}\n"


# -- measuring -------------------------------------------------------------------------


class Namespace:
    def __init__(self) -> None:
        self.name = f"lbcore-bench-{os.getpid()}-{next(_counter)}"

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def nft(self, payload: str) -> dict:
        """``nft -f`` of ``payload`` (from a file): wall seconds, nft's CPU seconds (user
        + system, kernel work included) and its peak RSS in KB."""
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(payload)
            f.flush()
            return self._timed("nft", "-f", f.name)

    def listing(self, table: str) -> dict:
        """``nft list table``: as `nft`, plus the bytes it printed."""
        return self._timed("nft", "list", "table", *table.split())

    def _timed(self, *argv: str) -> dict:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "ip", "netns", "exec", self.name, *argv],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        user, system, kb = done.stderr.split()[-3:]
        return {"s": seconds, "cpu_s": float(user) + float(system), "rss_kb": int(kb), "bytes": len(done.stdout)}


def rounds(function, count: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(count):  # as a caller runs it: no collection forced in between
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def floor_ns() -> list[float]:
    """The abs(k) floor the issue's absolute targets were set against (14 ns)."""
    return [t * 1e9 / 1_000_000 for t in rounds(lambda: [abs(k) for k in itertools.repeat(-5, 1_000_000)], 7)]


def summary(values: list[float]) -> dict:
    return {"rounds": [round(v, 6) for v in values], "median": round(statistics.median(values), 6),
            "min": round(min(values), 6)}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000, help="services of 10 endpoints (default 10000)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = datetime.datetime.now().astimezone()
    results: dict[str, dict] = {}

    old = [service(i) for i in range(args.services)]
    random.Random(4).shuffle(old)  # as a controller would hold them
    target = f"ns0/svc{args.services // 2}:http"
    shared = [changed(s) if s.name == target else s for s in old]  # a sync loop's lists
    parsed = [dataclasses.replace(s) for s in shared]  # two files read: equal copies
    victim = next(s for s in old if s.name == target)

    results["floor_abs_ns"] = summary(floor_ns())
    results["render_full_s"] = summary(rounds(lambda: nft.render(old), 7))
    results["render_diff_shared_s"] = summary(rounds(lambda: nft.render_diff(old, shared), 30, 2))
    results["render_diff_parsed_s"] = summary(rounds(lambda: nft.render_diff(old, parsed), 30, 2))
    full = nft.render(old)
    forth, back = nft.render_diff(old, shared), nft.render_diff(shared, old)

    def measured(runs: list[dict]) -> dict:
        """Wall seconds as the summary, CPU seconds and peak RSS of every round beside."""
        return summary([r["s"] for r in runs]) | {
            "cpu_s": [round(r["cpu_s"], 3) for r in runs], "nft_peak_rss_kb": [r["rss_kb"] for r in runs]}

    loads = []
    for _ in range(3):
        with Namespace() as ns:
            loads.append(ns.nft(full))
    results["load_full_s"] = measured(loads)
    with Namespace() as ns:
        ns.nft(full)
        results["apply_diff_s"] = measured([ns.nft(payload) for payload in [forth, back] * 10])
        listings = [ns.listing("ip lbcore") for _ in range(3)]
        results["list_table_s"] = measured(listings) | {"bytes": listings[0]["bytes"]}

    kube_proxy = kube_proxy_full(old)
    with Namespace() as ns:
        results["kube_proxy_load_full_s"] = measured([ns.nft(kube_proxy)])
        changes = [kube_proxy_change(changed(victim)), kube_proxy_change(victim)] * 5
        results["kube_proxy_apply_change_s"] = measured([ns.nft(payload) for payload in changes])
        listings = [ns.listing("ip kube-proxy") for _ in range(3)]
        results["kube_proxy_list_table_s"] = measured(listings) | {"bytes": listings[0]["bytes"]}

    maglev = [dataclasses.replace(s, scheduler="mh") for s in old[:100]]
    maglev_payload = nft.render(maglev)
    with Namespace() as ns:
        results["mh_100_services_load_s"] = measured([ns.nft(maglev_payload)]) | {
            "map_elements": maglev_payload.count(" : ") - len(maglev)}

    def cpu(name: str) -> float:
        return statistics.median(results[name]["cpu_s"])

    floor = results["floor_abs_ns"]["median"]
    scale = floor / 14.0
    median = {name: value["median"] for name, value in results.items()}
    verdicts = {
        "render_full <= 0.3 s x floor/14 ns": (median["render_full_s"], 0.3 * scale),
        "render_diff (shared) <= 20 ms x floor/14 ns": (median["render_diff_shared_s"], 0.020 * scale),
        "load_full <= 1/8 kube-proxy's": (median["load_full_s"], median["kube_proxy_load_full_s"] / 8),
        "apply_diff <= 50 ms": (median["apply_diff_s"], 0.050),
        "list_table <= 1/2 kube-proxy's": (median["list_table_s"], median["kube_proxy_list_table_s"] / 2),
    }
    record = {
        "date": started.isoformat(timespec="seconds"),
        "machine": platform.node() + " " + platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=Path(__file__).parent).stdout.strip(),
        "python": platform.python_version(),
        "nft": subprocess.run(["nft", "--version"], capture_output=True, text=True).stdout.strip(),
        "services": args.services,
        "endpoints_per_service": ENDPOINTS,
        "floor_scale": round(scale, 3),
        "results": results,
        "ratios": {
            "load_full / kube_proxy_load_full": round(median["load_full_s"] / median["kube_proxy_load_full_s"], 4),
            "cpu: load_full / kube_proxy_load_full": round(cpu("load_full_s") / cpu("kube_proxy_load_full_s"), 4),
            "cpu: list_table / kube_proxy_list_table": round(cpu("list_table_s") / cpu("kube_proxy_list_table_s"), 4),
            "apply_diff / kube_proxy_apply_change": round(median["apply_diff_s"] / median["kube_proxy_apply_change_s"], 4),
            "list_table / kube_proxy_list_table": round(median["list_table_s"] / median["kube_proxy_list_table_s"], 4),
            "render_full / load_full": round(median["render_full_s"] / median["load_full_s"], 4),
        },
        "verdicts": {name: {"measured": round(got, 6), "target": round(limit, 6), "meets": got <= limit}
                     for name, (got, limit) in verdicts.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"nft-{started.strftime('%Y-%m-%dT%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("date", "load_average_before", "load_average_after", "floor_scale",
                                             "ratios", "verdicts")}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
