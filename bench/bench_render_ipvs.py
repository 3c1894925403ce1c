"""IPVS rendering at 10,000 services × 10 endpoints (issue 4).

Target: the diff for one changed endpoint among 10,000 services renders in ≤ 50 ms.
Two ways a caller holds its models:

- ``shared``: a sync loop that keeps the Service objects of unchanged services and
  builds a new one only for the service that changed (render_diff skips identical
  objects without comparing them);
- ``parsed``: old and new read from two files, so every service is a distinct, equal
  object and is compared field by field.

The full rendering and the node setup of the same 10,000 services are timed for the
record.  Run: see bench/README.md.
"""

from __future__ import annotations

import pytest

from lbcore import Endpoint, Service
from lbcore.render.ipvs import render, render_diff, render_node_setup

SERVICES = 10_000
ENDPOINTS = 10
CHANGED = 5_000


def _service(i: int, first_weight: int = 1) -> Service:
    endpoints = [
        Endpoint(
            f"10.{128 + i // 256 % 64}.{i % 256}.{j + 1}",
            8080,
            weight=first_weight if j == 0 else 1,
        )
        for j in range(ENDPOINTS)
    ]
    return Service(
        f"ns{i % 50}/svc{i}:http",
        f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
        80,
        endpoints=endpoints,
        scheduler="wrr",
    )


@pytest.fixture(scope="module")
def old() -> list[Service]:
    return [_service(i) for i in range(SERVICES)]


@pytest.fixture(scope="module")
def shared(old) -> list[Service]:
    new = list(old)
    new[CHANGED] = _service(CHANGED, first_weight=2)
    return new


@pytest.fixture(scope="module")
def parsed() -> list[Service]:
    new = [_service(i) for i in range(SERVICES)]
    new[CHANGED] = _service(CHANGED, first_weight=2)
    return new


EXPECTED = (
    f"-e -t {_service(CHANGED).address} -r {_service(CHANGED).endpoints[0].address} -m -w 2\n"
)


@pytest.mark.benchmark(group="ipvs diff, 1 endpoint of 10,000 services (target 50 ms)")
def test_diff_shared_models(benchmark, old, shared):
    assert benchmark(render_diff, old, shared) == EXPECTED


@pytest.mark.benchmark(group="ipvs diff, 1 endpoint of 10,000 services (target 50 ms)")
def test_diff_parsed_models(benchmark, old, parsed):
    assert benchmark(render_diff, old, parsed) == EXPECTED


@pytest.mark.benchmark(group="ipvs full, 10,000 services x 10 endpoints (record)")
def test_full_render(benchmark, old):
    text = benchmark(render, old)
    assert text.count("\n") == SERVICES * (1 + ENDPOINTS)


@pytest.mark.benchmark(group="ipvs full, 10,000 services x 10 endpoints (record)")
def test_node_setup(benchmark, old):
    assert benchmark(render_node_setup, old).count("/32\n") == SERVICES
