"""lbcore demo: the README's main job, run as a newcomer runs it."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import subprocess
import sys
import time

from lbcore import demo
from lbcore.cli import main


def _tables(out: str) -> dict[str, str]:
    """Each scenario's block of output, by its first line."""
    blocks = out.split("\n\n")[1:-1]
    return {block.splitlines()[0]: block for block in blocks}


def _shares(block: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(b\d) :\d+ +w=\d+ +\d+ +([\d.]+)%", block)}


def _hot_answers(block: str) -> dict[str, int]:
    line = re.search(r"answered by (.*)", block)[1]
    return {name: int(n) for name, n in re.findall(r"(b\d) (\d+)", line)}


def test_demo_command_shows_every_scheduler_with_zero_failures():
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lbcore", "demo"], capture_output=True,
                            text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert elapsed < 30, f"the demo must finish in under 30 s; took {elapsed:.1f} s"
    tables = _tables(result.stdout)
    titles = [title.split(" — ")[0].split(None, 1)[1] for title in tables]
    assert titles == [s.title for s in demo.SCENARIOS]
    for block in tables.values():
        assert " 0 failures, " in block
        assert re.search(r"\d+ ns per pick( \+ release)? \(\d+\.\dx the abs\(k\) floor\)", block), block
    rr, wrr, wlc, sh, mh, sticky, p2c, ring, hot, bounded = tables.values()
    assert _shares(rr) == {"b1": 25.0, "b2": 25.0, "b3": 25.0, "b4": 25.0}
    assert _shares(wrr) == {"b1": 10.0, "b2": 20.0, "b3": 30.0, "b4": 40.0}
    # wlc and p2c: the slow backend holds its connections longer, so it gets the fewest.
    for block in (wlc, p2c):
        assert _shares(block)["b4"] < min(_shares(block)[b] for b in ("b1", "b2", "b3"))
    for block in (sh, mh, ring):
        assert f"the same backend every time: {demo.CLIENTS} of {demo.CLIENTS}" in block
        assert min(_shares(block).values()) > 10
    assert "moved = exactly b2's clients: True" in sticky
    assert "0 unavailable, 0 refused" in sticky
    # One client sends every other request: plain Maglev puts all 80 on its backend; with
    # balance_factor a full backend sends some on, so its backend's share drops.
    hot_backend, hot_share = max(_shares(hot).items(), key=lambda item: item[1])
    assert re.search(rf"80 requests, answered by .*{hot_backend} 80", hot)
    assert hot_share > 50
    answered = _hot_answers(bounded)
    assert sum(answered.values()) == 80 and answered[hot_backend] < 80
    assert _shares(bounded)[hot_backend] < hot_share
    assert result.stdout.rstrip().endswith("s") and "\n0 failures in " in result.stdout
    # Progress goes to stderr, one line per scheduler when stderr is not a terminal.
    assert result.stderr.count("\n") == len(demo.SCENARIOS)


def test_demo_cleans_up_its_sockets():
    # In process, as `lbcore demo` calls it: demo.main() with the streams of the call.
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["demo"]) == 0
    totals = [int(n) for n in re.findall(r"^    (\d+) requests from ", out.getvalue(), re.M)]
    assert totals == [demo.CLIENTS * s.rounds for s in demo.SCENARIOS]
    # The run kept its tallies to itself: a second run in this process starts from zero.
    assert all(not s.answers and not s.placements and s.failures == 0 for s in demo.SCENARIOS)
    ports = {int(p) for p in re.findall(r"b\d :(\d+)", out.getvalue())}
    assert len(ports) == len(demo.BACKENDS)
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
