"""The examples run as a reader would run them, and do what they say."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def run_example(name: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", name)], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
def test_asyncio_proxy_spreads_over_live_backends_and_skips_the_dead_one(pure):
    out = run_example("asyncio_proxy.py", **({"LBCORE_NO_EXTENSIONS": "1"} if pure else {}))
    replies = out.splitlines()[:-1]
    # Every client answered, in order, through the proxy, by a live backend only.
    assert [re.sub(r"^\w+ got ", "", reply) for reply in replies] == [f"request {i}" for i in range(12)]
    names = [reply.split()[0] for reply in replies]
    assert set(names) == {"alpha", "beta"}
    # Round robin over the two live backends: they alternate.
    assert all(a != b for a, b in zip(names, names[1:]))
