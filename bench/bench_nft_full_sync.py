"""What keeping the sticky clients costs a full sync of lbcore's nftables tables: the
payload that syncs them in place (`render(..., existing=...)`, after the agent's
read-back) against the one that replaces them (`render(...)`), on the same tables in
the same run.

    python bench/bench_nft_full_sync.py [--services 10000] [--sticky-every 10] [--clients 100] [--rounds 3]

Needs root, ``ip`` and ``nft``; everything runs in a throw-away namespace
``lbcore-bench-<pid>``.  SERVICES Services of 10 endpoints (bench_render_nft.py's), every
STICKY_EVERY-th one with ClientIP affinity.  Each round starts from the replaced tables
with CLIENTS clients put into every affinity map (``add element``, as the kernel's own
``update`` would), then times, one after the other on that state:

- in place: the read-back (three ``nft -j -t list``, `read_existing`), the render, and
  ``nft -f``; then checks that every client is still there;
- replacing: the render and ``nft -f`` (the clients are gone after it).

Wall seconds of each step, every round, go to bench/results/nft_full_sync-<date>.json
(bench/_results.py: machine, load average, commit, command), medians and the ratio of
the two applies in its summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import _results  # bench/, beside this script
from bench_render_nft import service

from lbcore.agent.sinks.nft import read_existing
from lbcore.render import nft


def run(ns: str, *argv: str, payload: str | None = None) -> tuple[float, str]:
    """Wall seconds and stdout of ``argv`` in ``ns``; ``payload`` goes in as a file."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
        if payload is not None:
            f.write(payload)
            f.flush()
            argv = (*argv, f.name)
        started = time.perf_counter()
        done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr[:500]}")
    return seconds, done.stdout


def affinity_maps(ns: str) -> list[str]:
    _, listed = run(ns, "nft", "-j", "-t", "list", "maps")
    return sorted(m["map"]["name"] for m in json.loads(listed)["nftables"]
                  if "map" in m and m["map"]["table"] == "lbcore" and m["map"]["name"].startswith("affinity-"))


def seed_clients(ns: str, maps: list[str], clients: int) -> None:
    lines = []
    for i, name in enumerate(maps):
        held = ", ".join(f"10.{200 + c // 65536}.{c // 256 % 256}.{c % 256} timeout 3600s : 0x{i + 1:08x}"
                         for c in range(clients))
        lines.append(f"add element ip lbcore {name} {{ {held} }}\n")
    run(ns, "nft", "-f", payload="".join(lines))


def held_clients(ns: str, name: str) -> int:
    _, listed = run(ns, "nft", "-j", "list", "map", "ip", "lbcore", name)
    [held] = [m["map"] for m in json.loads(listed)["nftables"] if "map" in m]
    return len(held.get("elem", ()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--sticky-every", type=int, default=10)
    parser.add_argument("--clients", type=int, default=100, help="clients put into each affinity map")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    services = [dataclasses.replace(service(i), affinity_timeout=600) if i % args.sticky_every == 0 else service(i)
                for i in range(args.services)]
    ns = f"lbcore-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    rounds = []
    try:
        for _ in range(args.rounds):
            run(ns, "nft", "-f", payload=nft.render(services))
            maps = affinity_maps(ns)
            seed_clients(ns, maps, args.clients)
            step: dict[str, float] = {}
            started = time.perf_counter()
            listings = [run(ns, "nft", "-j", "-t", "list", kind)[1] for kind in ("chains", "maps", "sets")]
            existing = read_existing(listings)
            step["in_place_read_back_s"] = time.perf_counter() - started
            started = time.perf_counter()
            payload = nft.render(services, existing=existing)
            step["in_place_render_s"] = time.perf_counter() - started
            step["in_place_apply_s"], _ = run(ns, "nft", "-f", payload=payload)
            kept = [held_clients(ns, name) for name in (maps[0], maps[-1])]
            assert kept == [args.clients] * 2, kept
            started = time.perf_counter()
            payload = nft.render(services)
            step["replace_render_s"] = time.perf_counter() - started
            step["replace_apply_s"], _ = run(ns, "nft", "-f", payload=payload)
            assert held_clients(ns, maps[0]) == 0
            rounds.append({name: round(value, 4) for name, value in step.items()} | {"affinity_maps": len(maps)})
            print(rounds[-1], file=sys.stderr)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)

    def median(name: str) -> float:
        return statistics.median(r[name] for r in rounds)

    in_place = median("in_place_read_back_s") + median("in_place_render_s") + median("in_place_apply_s")
    replace = median("replace_render_s") + median("replace_apply_s")
    summary = {name: round(median(name), 4) for name in rounds[0] if name.endswith("_s")} | {
        "services": args.services, "sticky_services": len(range(0, args.services, args.sticky_every)),
        "clients_per_affinity_map": args.clients,
        "apply: in_place / replace": round(median("in_place_apply_s") / median("replace_apply_s"), 3),
        "whole sync (read-back + render + apply): in_place / replace": round(in_place / replace, 3),
    }
    _results.record("nft_full_sync", rounds=rounds, summary=summary, command=" ".join(
        ["python", *sys.argv]), notes="in place and replacing alternate on the same state in each round")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
