"""``lbcore run``'s command line: help, and bad input refused with exit status 2 and one
line naming the option, before anything is watched or applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lbcore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lbcore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_help_names_every_option():
    done = lbcore("run", "--help")
    assert done.returncode == 0
    for option in ("--source", "--mode", "--min-sync-period", "--sync-period", "--healthz-bind-address",
                   "--metrics-bind-address", "--cleanup", "--cleanup-on-exit", "--kubeconfig"):
        assert option in done.stdout
    assert "127.0.0.1:10256" in done.stdout and "127.0.0.1:10249" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--mode", "iptables"], "--source: None is required"),
    (["--mode", "forward", "--source", "x.yaml", "--fallback"],
     "--fallback: True is an iptables, ipvs and nft mode option"),
    (["--mode", "iptables", "--source", "x.yaml", "--interface", "eth0"], "--interface: 'eth0' is an ipvs mode option"),
    (["--mode", "iptables", "--source", "x.yaml", "--sync-period", "-1"], "sync_period: -1.0 must be a number"),
    (["--mode", "iptables", "--source", "x.yaml", "--min-sync-period", "10", "--sync-period", "5"],
     "sync_period: 5.0 must be a number of seconds >= 10"),
    (["--mode", "iptables", "--source", "x.yaml", "--healthz-bind-address", "10256"],
     "healthz_bind_address: '10256' must be 'ip:port'"),
    (["--mode", "ipvs", "--source", "x.yaml", "--interface", "bad name;"], "interface: 'bad name;' is not a usable"),
])
def test_bad_input_exits_2_with_one_line_naming_it(args, message):
    done = lbcore("run", *args)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""


def test_an_unknown_mode_is_refused_by_the_parser():
    done = lbcore("run", "--mode", "userspace", "--source", "x.yaml")
    assert done.returncode == 2 and "invalid choice: 'userspace'" in done.stderr
