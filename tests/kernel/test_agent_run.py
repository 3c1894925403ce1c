"""``lbcore run`` as a daemon inside a network namespace, on a watched file: it installs,
follows the file, answers /healthz, /livez and /metrics on kube-proxy's default ports,
leaves its rules in place on SIGTERM, and ``--cleanup`` / ``--cleanup-on-exit`` remove
them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _iptables_netns import Netns, kernel

pytestmark = kernel

ROOT = Path(__file__).resolve().parents[2]
VIP = "127.1.0.1"
FETCH = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:
        print(answer.status); sys.stdout.write(answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code); sys.stdout.write(error.read().decode())
except OSError as error:
    print(0); print(error)
"""


def write(path: Path, port: int) -> None:
    text = f"services:\n- {{name: web, vip: {VIP}, port: 80, endpoints: [{{ip: 127.0.0.1, port: {port}}}]}}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)  # as editors and config managers write


def get(ns: Netns, url: str) -> tuple[int, str]:
    out = ns.run(sys.executable, "-c", FETCH, url).stdout
    status, _, body = out.partition("\n")
    return int(status), body


def until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def start(ns: Netns, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "lbcore", "run", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def answer(ns: Netns) -> str:
    return ns.connect(VIP, 80, [None])[0]


@pytest.fixture
def ns():
    with Netns() as netns:
        netns.serve("127.0.0.1:18001", "127.0.0.1:18002", f"{VIP}:80")
        yield netns


def test_run_follows_a_file_serves_health_and_metrics_and_leaves_rules_on_sigterm(ns, tmp_path):
    config = tmp_path / "services.yaml"
    write(config, 18001)
    process = start(ns, "--source", str(config), "--mode", "iptables", "--min-sync-period", "0")
    try:
        until(lambda: get(ns, "http://127.0.0.1:10256/healthz")[0] == 200)
        until(lambda: answer(ns) == "18001 127.0.0.1")
        status, body = get(ns, "http://127.0.0.1:10256/healthz")
        assert json.loads(body)["healthy"] is True and json.loads(body)["lastUpdated"] > 0
        assert get(ns, "http://127.0.0.1:10256/livez") == (200, "ok\n")

        write(config, 18002)
        until(lambda: answer(ns) == "18002 127.0.0.1")
        _, metrics = get(ns, "http://127.0.0.1:10249/metrics")
        assert "lbcore_sync_full_proxy_rules_duration_seconds_count 1.0" in metrics
        assert "lbcore_sync_partial_proxy_rules_duration_seconds_count 1.0" in metrics
        assert "lbcore_sync_proxy_rules_endpoint_changes_total 1.0" in metrics
        assert 'lbcore_proxy_healthz_total{code="200"}' in metrics
        assert get(ns, "http://127.0.0.1:10256/metrics")[0] == 404  # each port its own paths
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "the iptables rules stay in place" in err
    assert answer(ns) == "18002 127.0.0.1"  # the agent is gone, its rules carry on

    cleanup = start(ns, "--cleanup", "--mode", "iptables")
    assert cleanup.wait(timeout=30) == 0, cleanup.stderr.read()
    assert "LBCORE" not in ns.run("iptables-save").stdout
    assert answer(ns) == "80 127.0.0.1"  # the sentinel on the VIP itself


def test_cleanup_on_exit_removes_the_rules_when_the_agent_stops(ns, tmp_path):
    config = tmp_path / "services.yaml"
    write(config, 18001)
    process = start(ns, "--source", str(config), "--mode", "iptables", "--cleanup-on-exit",
                    "--healthz-bind-address", "127.0.0.1:20256", "--metrics-bind-address", "127.0.0.1:20256")
    try:
        until(lambda: answer(ns) == "18001 127.0.0.1")
        assert get(ns, "http://127.0.0.1:20256/metrics")[0] == 200  # one address: one server, all paths
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "LBCORE" not in ns.run("iptables-save").stdout
    assert answer(ns) == "80 127.0.0.1"


def test_nft_mode_follows_the_file_keeps_its_table_on_sigterm_and_cleans_up(ns, tmp_path):
    config = tmp_path / "services.yaml"
    write(config, 18001)
    process = start(ns, "--source", str(config), "--mode", "nft", "--min-sync-period", "0")
    try:
        until(lambda: answer(ns) == "18001 127.0.0.1")
        write(config, 18002)
        until(lambda: answer(ns) == "18002 127.0.0.1")
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "the nft rules stay in place" in err
    assert answer(ns) == "18002 127.0.0.1"
    assert "table ip lbcore" in ns.run("nft", "list", "tables").stdout
    cleanup = start(ns, "--cleanup", "--mode", "nft")
    assert cleanup.wait(timeout=30) == 0, cleanup.stderr.read()
    assert "lbcore" not in ns.run("nft", "list", "tables").stdout
    assert answer(ns) == "80 127.0.0.1"


def test_active_health_takes_a_dead_endpoint_out_of_the_kernel_and_brings_it_back(ns, tmp_path):
    # The checks run in the agent's process, in the namespace, against the same addresses
    # the kernel sends connections to.  18009 has no server at first.
    config = tmp_path / "services.yaml"
    config.write_text(
        f"services:\n- name: web\n  vip: {VIP}\n  port: 80\n"
        "  health_check: {interval: 0.2, timeout: 0.1, rise: 1, fall: 1}\n"
        "  endpoints: [{ip: 127.0.0.1, port: 18001}, {ip: 127.0.0.1, port: 18009}]\n")
    process = start(ns, "--source", str(config), "--mode", "nft", "--min-sync-period", "0")
    try:
        # Without the check half of these would be refused; with it, none is.
        until(lambda: set(ns.connect(VIP, 80, [None] * 20)) == {"18001 127.0.0.1"})
        ns.serve("127.0.0.1:18009")
        until(lambda: {a.split()[0] for a in ns.connect(VIP, 80, [None] * 40)} == {"18001", "18009"})
    finally:
        code, err = stop(process)
    assert code == 0, err
    assert "web: 127.0.0.1:18009 is unhealthy" in err and "web: 127.0.0.1:18009 is healthy" in err
