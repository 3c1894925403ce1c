"""Fixtures shared by the suite: both twins of every balancer, side by side."""

from __future__ import annotations

import os
import socket
import time
import types

import pytest

from lbcore._twins import twin_namespace


def _compiled() -> types.SimpleNamespace | None:
    try:
        return twin_namespace("compiled")
    except ImportError:
        return None


TWINS = ["pure", "compiled"]


@pytest.fixture(params=TWINS)
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    """Every name of one twin (lbcore._pure or lbcore._fast, the same names in both)."""
    if request.param == "pure":
        return twin_namespace("pure")
    compiled = _compiled()
    if compiled is None:
        pytest.skip("compiled twins not built (test_build.py fails if they should be)")
    return compiled


@pytest.fixture
def both() -> tuple[types.SimpleNamespace, types.SimpleNamespace]:
    """(pure, compiled) for differential tests."""
    compiled = _compiled()
    if compiled is None:
        pytest.skip("compiled twins not built (test_build.py fails if they should be)")
    return twin_namespace("pure"), compiled


@pytest.fixture
def blackhole():
    """Makes listeners whose accept queue is full (further SYNs are dropped, connects
    hang) and returns each one's port; closes them all after the test."""
    socks: list[socket.socket] = []

    def make() -> int:
        sock = socket.socket()
        socks.append(sock)
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        for _ in range(2):
            filler = socket.socket()
            socks.append(filler)
            filler.setblocking(False)
            filler.connect_ex(sock.getsockname())
        time.sleep(0.05)
        with socket.socket() as probe:
            probe.settimeout(0.2)
            with pytest.raises(OSError):  # proves the hole: a normal listener would connect
                probe.connect(sock.getsockname())
        return sock.getsockname()[1]

    yield make
    for sock in socks:
        sock.close()


# Tests that prove behaviour on real parts: in CI a skip of one is a failure in disguise.
_REAL_PARTS = ("kernel", "etcd")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """In CI (CI=true, root, the tools installed by .ci/run) a real-parts test that skips
    fails the run: a green CI must mean the namespace, QEMU and etcd proofs ran."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        marker = next((m for m in _REAL_PARTS if item.get_closest_marker(m)), None)
        if marker is not None:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            report.outcome = "failed"
            report.longrepr = f"a {marker} test skipped in CI: {reason}"
