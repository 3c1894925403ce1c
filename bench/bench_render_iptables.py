"""iptables rendering and applying at 10,000 services × 10 endpoints (issue 4).

Targets:
- the full payload renders in ≤ 0.3 s and in ≤ 10 % of the time the kernel's
  ``iptables-restore`` takes to load it into a fresh namespace, measured in one run
  (`test_full_render_against_the_kernel_load`);
- the partial sync for one changed endpoint renders in ≤ 50 ms (`test_diff_render_*`)
  and applies into the populated namespace in ≤ 1 s (`test_diff_apply`).

Two ways a caller holds its models, as in bench_render_ipvs.py: ``shared`` (a sync loop
keeps the objects of unchanged services) and ``parsed`` (old and new read from two
files: every service is a distinct, equal object, compared field by field).  The input
order is shuffled, as a controller's would be.  The kernel tests need root and the
tools; run: see bench/README.md.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lbcore import Endpoint, Service
from lbcore.render import iptables

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "kernel"))
from _iptables_netns import Netns, skip_reason  # noqa: E402

SERVICES = 10_000
ENDPOINTS = 10
CHANGED = 5_000

kernel = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def _service(i: int) -> Service:
    return Service(
        f"ns{i % 50}/svc{i}:http",
        f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
        80,
        endpoints=[Endpoint(f"10.{128 + i // 256 % 64}.{i % 256}.{j + 1}", 8080) for j in range(ENDPOINTS)],
    )


def _changed(service: Service) -> Service:
    """One endpoint replaced by another."""
    return dataclasses.replace(service, endpoints=service.endpoints[:-1] + (Endpoint("10.250.0.1", 8080),))


@pytest.fixture(scope="module")
def old() -> list[Service]:
    services = [_service(i) for i in range(SERVICES)]
    random.Random(4).shuffle(services)
    return services


@pytest.fixture(scope="module")
def shared(old) -> list[Service]:
    return [_changed(s) if s.name == f"ns0/svc{CHANGED}:http" else s for s in old]


@pytest.fixture(scope="module")
def parsed(shared) -> list[Service]:
    return [dataclasses.replace(s) for s in shared]


def _load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


@kernel
def test_full_render_against_the_kernel_load(benchmark, old):
    payload = benchmark.pedantic(iptables.render, args=(old,), kwargs={"install": True},
                                 rounds=7, iterations=1, warmup_rounds=1)
    # One load: it takes minutes (iptables-nft's cost per chain grows with the chains;
    # see "Order" in lbcore.render.iptables), so its noise is small beside it.
    with Netns() as ns:
        started = time.perf_counter()
        ns.iptables_restore(payload)
        restore = time.perf_counter() - started
    render = benchmark.stats.stats.median
    benchmark.extra_info.update(
        lines=payload.count("\n"), megabytes=round(len(payload) / 1e6, 1),
        restore_s=round(restore, 2), render_over_restore=round(render / restore, 4), load=_load(),
    )
    print(f"\nrender {render:.3f} s (median of 7), iptables-restore into a fresh namespace "
          f"{restore:.2f} s: {100 * render / restore:.2f} % ({_load()})")


def test_floor_join_of_the_full_payload(benchmark, old):
    # The least any renderer pays for this payload: joining its 420,000 lines.
    lines = iptables.render(old).split("\n")
    benchmark.pedantic("\n".join, args=(lines,), rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info["load"] = _load()


def test_floor_index_of_the_services(benchmark, old):
    # The least any diff pays for looking at every service once: indexing them in C.
    benchmark.pedantic(lambda: dict(zip(map(operator.attrgetter("name"), old), old)),
                       rounds=30, iterations=1, warmup_rounds=2)
    benchmark.extra_info["load"] = _load()


def test_full_render(benchmark, old):
    benchmark.pedantic(iptables.render, args=(old,), rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info["load"] = _load()


def test_diff_render_shared(benchmark, old, shared):
    diff = benchmark.pedantic(iptables.render_diff, args=(old, shared), rounds=30, iterations=1,
                              warmup_rounds=2)
    assert diff.count("\n-X ") == 1 and "LBCORE-SERVICES" not in diff
    benchmark.extra_info["load"] = _load()


def test_diff_render_parsed(benchmark, old, parsed):
    benchmark.pedantic(iptables.render_diff, args=(old, parsed), rounds=30, iterations=1,
                       warmup_rounds=2)
    benchmark.extra_info["load"] = _load()


@kernel
def test_diff_apply(benchmark, old, shared):
    forth, back = iptables.render_diff(old, shared), iptables.render_diff(shared, old)
    with Netns() as ns:
        ns.iptables_restore(iptables.render(old, install=True))
        payloads = iter([forth, back] * 10)

        def restore(payload: str) -> None:
            # Straight to the tool (ip netns exec), as an operator pipes it.
            subprocess.run(["ip", "netns", "exec", ns.name, "iptables-restore", "--noflush"],
                           input=payload, text=True, check=True)

        benchmark.pedantic(restore, setup=lambda: ((next(payloads),), {}), rounds=10)
        # The namespace went forth and back five times: it holds the old state again.
        assert ns.ruleset().count("-A LBCORE-SVC-") == SERVICES * ENDPOINTS
    benchmark.extra_info["load"] = _load()
