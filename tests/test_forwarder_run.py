"""``run()`` in its own process: SIGHUP reloads under load, SIGTERM drains, SIGUSR1,
bounded memory under a slow reader, the Prometheus endpoint, and exit statuses."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from forwarder_support import (
    CHILD, ROOT, ChildForwarder, backends, digest, eventually, fetch, free_port, open_client,
    payload, run_async, steady_requests, write_config,
)


def web(ports, listen="127.0.0.1:0"):
    return [{"name": "web", "listen": listen, "ports": ports}]


async def forward_to_a_backend(config, **options):
    """A backend, and a child forwarder to it; (backend, child, forwarder address)."""
    (a,) = await backends("a")
    write_config(config, web([a.port]))
    child = ChildForwarder(config, **options)
    return a, child, await asyncio.to_thread(child.address, "web")


def test_sighup_reloads_under_load_without_a_failed_request(tmp_path):
    config = tmp_path / "services.json"

    async def main():
        a, b, c = await backends("a", "b", "c")
        write_config(config, web([a.port, b.port]))
        child = ChildForwarder(config)
        address = await asyncio.to_thread(child.address, "web")
        stop = asyncio.Event()
        traffic = asyncio.ensure_future(steady_requests(address, stop, workers=6))
        sets = [[a.port, b.port, c.port], [c.port], [b.port, c.port], [a.port]]
        for i in range(12):
            if i == 5:  # a broken file: refused, logged, the running set stays
                config.write_text(json.dumps({"services": web([0])}))
            else:
                write_config(config, web(sets[i % len(sets)]))
            child.signal(signal.SIGHUP)
            # Each reload reads the file written for it: a loaded child may take longer
            # than the pause below, and would then read the next file (or two SIGHUPs
            # could merge), which the counts asserted at the end do not allow for.
            await asyncio.to_thread(child.wait_log, "reload")
            await asyncio.sleep(0.1)
        stop.set()
        answers, failures = await traffic
        child.signal(signal.SIGUSR1)
        await asyncio.sleep(0.2)
        status, out, err = await asyncio.to_thread(child.stop)
        return answers, failures, status, out, err

    answers, failures, status, out, err = run_async("asyncio", main())
    assert failures == [], (failures[:3], err)
    assert len(answers) > 50 and set(answers) == {"a", "b", "c"}
    assert "reload refused, the running configuration stays: port: 0 is out of range" in err
    assert err.count("reloaded: 1 services") == 11
    assert status == 0 and "stopped" in err
    assert out.startswith("web tcp 127.0.0.1:") and "active=" in out  # SIGUSR1


def test_sigterm_stops_accepting_and_lets_transfers_finish(tmp_path):
    config = tmp_path / "services.json"

    async def main():
        a, child, address = await forward_to_a_backend(config, drain_timeout=10)
        transfer = asyncio.ensure_future(fetch(address, 3_000_000, read_delay=0.002))
        await eventually(lambda: a.requests == 1)  # under way through the forwarder
        child.signal(signal.SIGTERM)
        await asyncio.to_thread(child.wait_log, "stopping")
        await asyncio.sleep(0.05)  # it logs, then closes its listeners in the same callback
        try:
            await open_client(address)
            refused = False
        except ConnectionRefusedError:
            refused = True
        data = await transfer
        start = time.monotonic()
        status, _, err = await asyncio.to_thread(child.stop)
        return refused, data, status, time.monotonic() - start

    refused, data, status, exit_wait = run_async("asyncio", main())
    assert refused
    assert digest(data) == digest(payload(3_000_000))
    assert status == 0 and exit_wait < 2


def test_drain_deadline_closes_connections_that_do_not_finish(tmp_path):
    config = tmp_path / "services.json"

    async def main():
        a, child, address = await forward_to_a_backend(config, drain_timeout=0.25)
        reader, writer = await open_client(address)
        writer.write(b"echo\nx")
        await reader.readexactly(1)  # established; it will never end by itself
        start = time.monotonic()
        child.signal(signal.SIGTERM)
        closed = await asyncio.wait_for(reader.read(), 5)
        status, _, err = await asyncio.to_thread(child.stop)
        return closed, time.monotonic() - start, status, err

    closed, elapsed, status, err = run_async("asyncio", main())
    assert closed == b"" and 0.25 <= elapsed < 2.5  # the deadline, with 10x margin
    assert status == 0 and "drain deadline: closing 1 connections" in err


@pytest.mark.slow
@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
def test_slow_reader_of_100_mb_keeps_the_forwarder_memory_bounded(tmp_path, splice):
    """A backend sends 100 MB as fast as loopback allows; the client reads at ~80 MB/s.

    An unbounded relay would hold most of the difference (tens of MB); this one may grow
    by its buffers only: a transport high-water mark and a read, or one pipe.
    """
    config = tmp_path / "services.json"
    size = 100_000_000

    async def main():
        a, child, address = await forward_to_a_backend(config, splice=splice)
        assert len(await fetch(address, 1_000_000)) == 1_000_000  # warm up the paths
        baseline = child.vm("VmHWM")
        start = time.monotonic()
        data = await fetch(address, size, read_delay=0.0008)
        elapsed = time.monotonic() - start
        peak = child.vm("VmHWM")
        status, _, _ = await asyncio.to_thread(child.stop)
        return digest(data), elapsed, peak - baseline, status

    got, elapsed, growth, status = run_async("asyncio", main())
    assert got == digest(payload(size))
    assert elapsed > 0.8  # the reader really was the bottleneck
    assert growth < 16 * 2**20, f"forwarder RSS grew by {growth / 2**20:.1f} MiB"
    assert status == 0


def test_prometheus_endpoint_serves_the_stats(tmp_path):
    pytest.importorskip("prometheus_client")
    config = tmp_path / "services.json"
    metrics_port = free_port()

    async def main():
        a, child, address = await forward_to_a_backend(
            config, metrics_listen=f"127.0.0.1:{metrics_port}"
        )
        await asyncio.to_thread(child.wait_log, "metrics on")
        await fetch(address, 1000)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        # Counted as the bytes pass (before the client has them): no wait for the close.
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
        await asyncio.to_thread(child.stop)
        return body, a.port

    body, port = run_async("asyncio", main())
    endpoint = f'endpoint="127.0.0.1:{port}",service="web"'
    assert f"lbcore_forwarder_connections_total{{{endpoint}}} 1.0" in body
    assert f"lbcore_forwarder_bytes_out_total{{{endpoint}}} 1000.0" in body
    assert 'lbcore_forwarder_refused_total{service="web"} 0.0' in body
    assert 'lbcore_forwarder_panic{service="web"} 0.0' in body
    assert 'lbcore_forwarder_panic_picks_total{service="web"} 0.0' in body


@pytest.mark.parametrize(
    "config, options, message",
    [
        (json.dumps({"services": web([80], "nowhere")}), {}, "listen: 'nowhere' must be"),
        (json.dumps({"services": web([80])}), {"tries": 0}, "tries: 0 must be an integer"),
        (
            json.dumps({"services": web([80])}), {"metrics_listen": "9100"},
            "metrics_listen: '9100' must be",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, config, options, message):
    path = tmp_path / "services.json"
    path.write_text(config)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(options)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stdout == ""


def test_a_listener_that_cannot_be_bound_exits_2(tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    path = tmp_path / "services.json"
    write_config(path, web([80], listen=f"127.0.0.1:{taken.getsockname()[1]}"))
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "{}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert proc.returncode == 2
    assert "services[web].listen" in proc.stderr and "Address already in use" in proc.stderr
