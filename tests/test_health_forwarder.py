"""The forwarder runs each service's health checks: real backends on 127.0.0.1, real
clients, the event loop's own timer (short intervals; every wait has a deadline 10x the
settings' bound)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from lbcore import Endpoint, HealthCheck
from lbcore.forwarder import Forwarder, format_stats

from forwarder_support import (
    LOOPS, ROOT, backends, free_port, open_client, read_lines, refused_or_read, run_async, service, until_or_exit,
    who,
)
from health_support import CheckedServer

# Short enough for a test, long enough that a loaded machine does not fail a live endpoint.
FAST = HealthCheck(interval=0.1, timeout=0.1, rise=2, fall=2)


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def until(condition, timeout: float = 5.0, step: float = 0.005):
    """Wait until ``condition()`` is true; its value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)
    return result


def endpoint_stats(fw: Forwarder, name: str, endpoint: Endpoint) -> dict:
    return fw.stats()[name]["endpoints"][endpoint.address]


async def requests(address, n: int, workers: int = 10) -> tuple[list[str], list[str]]:
    """``n`` one-request connections from ``workers`` clients at once: (answers, failures)."""
    answers: list[str] = []
    failures: list[str] = []
    todo = iter(range(n))

    async def worker(i: int) -> None:
        for _ in todo:
            try:
                name = await who(address, f"127.0.0.{2 + i}")
                (answers if name else failures).append(name or "empty reply")
            except OSError as exc:
                failures.append(repr(exc))

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return answers, failures


def test_a_killed_backend_costs_no_request_and_gets_no_attempt_once_marked(loop_kind):
    async def main():
        a, b, c = await backends("a", "b", "c")
        # A cool-down far shorter than the test: only the checks can keep b out.
        fw = Forwarder([service("web", [a.endpoint, b.endpoint, c.endpoint], health_check=FAST)],
                       cooldown=0.05)
        await fw.start()
        address = fw.addresses["web"]
        warm, _ = await requests(address, 60)
        b.kill()
        traffic = asyncio.ensure_future(requests(address, 1000))
        marked = await until(lambda: (s := endpoint_stats(fw, "web", b.endpoint))["health"]["healthy"] is False and s)
        answers, failures = await traffic
        after = endpoint_stats(fw, "web", b.endpoint)
        await fw.stop()
        return warm, marked, answers, failures, after

    warm, marked, answers, failures, after = run_async(loop_kind, main())
    assert set(warm) == {"a", "b", "c"}
    assert failures == []
    assert len(answers) == 1000 and set(answers) == {"a", "c"}
    # Not one connect to b from the moment its checks marked it: its counters stood still.
    assert (after["total"], after["failures"]) == (marked["total"], marked["failures"])
    assert after["health"]["healthy"] is False
    # out by its checks or by the failures the connect path saw: either counts toward fall
    assert after["health"]["why"] == "Connection refused" or after["health"]["why"].startswith("passive: ")


def test_a_recovered_backend_comes_back_after_rise_passes(loop_kind):
    async def main():
        a, b = await backends("a", "b")
        fw = Forwarder([service("web", [a.endpoint, b.endpoint], health_check=FAST)])
        await fw.start()
        address = fw.addresses["web"]
        port = b.port
        b.kill()
        await until(lambda: endpoint_stats(fw, "web", b.endpoint)["health"]["healthy"] is False)
        gone = {await who(address) for _ in range(20)}
        started = time.monotonic()
        await b.start(port)
        b.dead = False
        state = await until(lambda: (h := endpoint_stats(fw, "web", b.endpoint)["health"])["healthy"] and h)
        took = time.monotonic() - started
        back = {await who(address) for _ in range(20)}
        await fw.stop()
        return gone, state, took, back

    gone, state, took, back = run_async(loop_kind, main())
    assert gone == {"a"}
    assert back == {"a", "b"}
    assert state["came_back"] == 1 and state["passes"] >= 2
    assert took < 10 * FAST.rise * FAST.interval * (1 + FAST.jitter) + 0.5  # 10x margin on the wall clock


def test_a_failing_check_spares_established_connections(loop_kind):
    """Health steers new connections only: a connection to an endpoint that turns
    unhealthy goes on carrying bytes."""

    async def main():
        [a] = await backends("a")
        health_a = await CheckedServer("http").start()  # a's health port, apart from its service port
        check = HealthCheck("http", port=health_a.port, interval=0.05, timeout=0.04, rise=1, fall=1)
        fw = Forwarder([service("web", [a.endpoint], health_check=check)])
        await fw.start()
        address = fw.addresses["web"]
        reader, writer = await open_client(address)
        writer.write(b"echo\n")
        writer.write(b"before\n")
        before = await reader.readexactly(7)
        health_a.status = 503
        await until(lambda: endpoint_stats(fw, "web", a.endpoint)["health"]["healthy"] is False)
        writer.write(b"after\n")
        after = await reader.readexactly(6)
        active = endpoint_stats(fw, "web", a.endpoint)["active"]
        refused = await refused_or_read(address) == "reset"
        writer.close()
        stats = fw.stats()["web"]
        await fw.stop()
        return before, after, active, refused, stats

    before, after, active, refused, stats = run_async(loop_kind, main())
    assert (before, after) == (b"before\n", b"after\n")
    assert active == 1
    assert refused  # its only endpoint is unhealthy: new connections find none
    assert stats["unavailable"] >= 1


def test_passive_failures_count_toward_fall_and_the_cooldown_does_not_undo_the_checks(loop_kind):
    async def main():
        a, b = await backends("a", "b")
        # Checks so slow they never run in this test: only passive failures can mark b.
        slow = HealthCheck(interval=3600, timeout=1, fall=2, rise=1)
        fw = Forwarder([service("web", [a.endpoint, b.endpoint], health_check=slow)], cooldown=0.05)
        await fw.start()
        address = fw.addresses["web"]
        b.kill()
        answers = [await who(address) for _ in range(3)]  # the first pick of b fails over to a
        first = endpoint_stats(fw, "web", b.endpoint)
        await asyncio.sleep(0.15)  # the cool-down ends; b is still one failure from fall
        more = [await who(address) for _ in range(6)]
        marked = endpoint_stats(fw, "web", b.endpoint)
        await asyncio.sleep(0.15)  # its cool-down ends again: the checks keep it out now
        last = [await who(address) for _ in range(10)]
        final = endpoint_stats(fw, "web", b.endpoint)
        await fw.stop()
        return answers + more + last, first, marked, final

    answers, first, marked, final = run_async(loop_kind, main())
    assert set(answers) == {"a"}
    assert first["failures"] == 1 and first["health"]["healthy"] is True
    assert marked["failures"] == 2 and marked["health"]["healthy"] is False
    assert marked["health"]["passive"] == 2 and marked["health"]["checks"] == 2
    assert final["failures"] == 2 and not final["failed"]  # out by its checks alone


def test_updates_add_change_and_drop_checks(loop_kind):
    async def main():
        a, b = await backends("a", "b")
        bad_health = await CheckedServer("http", status=500).start()
        plain = service("web", [a.endpoint, b.endpoint])
        fw = Forwarder([plain])
        await fw.start()
        address = fw.addresses["web"]
        no_checks = endpoint_stats(fw, "web", b.endpoint)["health"]
        # Checks added: b's go to a port that answers 500, a's too, so both go out ...
        failing = HealthCheck("http", port=bad_health.port, interval=0.05, timeout=0.04, fall=1, rise=1)
        fw.update([service("web", [a.endpoint, b.endpoint], health_check=failing)])
        await until(lambda: all(e["health"]["healthy"] is False for e in fw.stats()["web"]["endpoints"].values()))
        refused = await refused_or_read(address) == "reset"
        # ... a change of check keeps each endpoint's state: still out until rise passes.
        passing = HealthCheck(interval=0.05, timeout=0.04, fall=1, rise=3)
        fw.update([service("web", [a.endpoint, b.endpoint], health_check=passing)])
        kept = endpoint_stats(fw, "web", a.endpoint)["health"]
        await until(lambda: all(e["health"]["healthy"] for e in fw.stats()["web"]["endpoints"].values()))
        back = {await who(address) for _ in range(10)}
        # Checks dropped while an endpoint is out: it comes back at once.
        fw.update([service("web", [a.endpoint, b.endpoint], health_check=failing)])
        await until(lambda: endpoint_stats(fw, "web", a.endpoint)["health"]["healthy"] is False)
        fw.update([plain])
        dropped = endpoint_stats(fw, "web", a.endpoint)["health"]
        again = {await who(address) for _ in range(10)}
        await fw.stop()
        return no_checks, refused, kept, back, dropped, again

    no_checks, refused, kept, back, dropped, again = run_async(loop_kind, main())
    assert no_checks is None
    assert refused
    assert kept["healthy"] is False and kept["went_down"] == 1
    assert back == {"a", "b"}
    assert dropped is None
    assert again == {"a", "b"}


def test_a_new_balancer_gets_the_marks_of_endpoints_still_out(loop_kind):
    """A scheduler change builds a new balancer; an endpoint its checks hold out stays out."""

    async def main():
        a, b = await backends("a", "b")
        fw = Forwarder([service("web", [a.endpoint, b.endpoint], health_check=FAST)])
        await fw.start()
        address = fw.addresses["web"]
        b.kill()
        await until(lambda: endpoint_stats(fw, "web", b.endpoint)["health"]["healthy"] is False)
        before = endpoint_stats(fw, "web", b.endpoint)
        fw.update([service("web", [a.endpoint, b.endpoint], health_check=FAST, scheduler="lc")])
        answers = [await who(address) for _ in range(20)]
        after = endpoint_stats(fw, "web", b.endpoint)
        await fw.stop()
        return answers, before, after

    answers, before, after = run_async(loop_kind, main())
    assert set(answers) == {"a"}
    assert after["total"] == before["total"] and after["failures"] == before["failures"]


def test_stats_show_health_last_result_and_latency(loop_kind):
    async def main():
        [a] = await backends("a")
        web = await CheckedServer("http", status=503).start()
        check = HealthCheck("http", port=web.port, interval=0.05, timeout=0.04, fall=1, rise=1)
        fw = Forwarder([service("web", [a.endpoint], health_check=check), service("plain", [a.endpoint])])
        await fw.start()
        await until(lambda: endpoint_stats(fw, "web", a.endpoint)["health"]["healthy"] is False)
        stats = fw.stats()
        await fw.stop()
        return stats, a.endpoint.address

    stats, address = run_async(loop_kind, main())
    health = stats["web"]["endpoints"][address]["health"]
    assert health["last"] == "failed" and health["why"] == "status 503"
    assert 0 < health["latency"] < 0.04
    assert stats["plain"]["endpoints"][address]["health"] is None
    text = format_stats(stats)
    assert f"  {address} " in text and "unhealthy (last check failed in " in text and "ms: status 503)" in text


def test_lbcore_forward_checks_a_yaml_services_endpoints_and_exports_them(tmp_path):
    pytest.importorskip("prometheus_client")
    health = CheckedServerThread()
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "services.yaml"
    config.write_text(
        "services:\n"
        f"  - name: web\n    vip: 127.0.0.1\n    port: {port}\n"
        f"    health_check: {{type: http, path: /healthz, port: {health.port}, interval: 0.2, timeout: 0.2,"
        " fall: 1, rise: 1}\n"
        f"    endpoints:\n      - {{ip: 127.0.0.1, port: {health.port}}}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lbcore", "forward", str(config), "--metrics-listen", f"127.0.0.1:{metrics_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    endpoint = f'endpoint="127.0.0.1:{health.port}",service="web"'
    try:
        scrape = lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        up = until_or_exit(process, lambda: (body := scrape()) and f"lbcore_forwarder_endpoint_last_check_passed{{{endpoint}}} 1.0" in body and body)
        health.status = 500
        down = until_or_exit(process, lambda: (body := scrape()) and f"lbcore_forwarder_endpoint_healthy{{{endpoint}}} 0.0" in body and body)
        process.send_signal(signal.SIGUSR1)
        # Read the stats before SIGTERM goes: with the two signals sent back to back, CI
        # once got no stats at all (not reproduced here in 80 runs under load).
        out = read_lines(process.stdout, 2)  # the service's line, then its endpoint's
        process.send_signal(signal.SIGTERM)
        out, err = (out + "".join(rest) for rest in process.communicate(timeout=10))
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        health.close()
    assert process.returncode == 0, err
    assert f"lbcore_forwarder_endpoint_healthy{{{endpoint}}} 1.0" in up
    assert f"lbcore_forwarder_endpoint_last_check_passed{{{endpoint}}} 0.0" in down
    assert f"lbcore_forwarder_endpoint_check_latency_seconds{{{endpoint}}} " in down
    went_down = re.search(rf'lbcore_forwarder_endpoint_health_transitions_total{{{endpoint},to="down"}} (\S+)', down)
    assert went_down and float(went_down.group(1)) >= 1
    assert "unhealthy (last check failed in " in out and "status 500)" in out
    assert "is unhealthy: status 500" in err
    assert "GET /healthz HTTP/1.1" in health.requests[0]


class CheckedServerThread:
    """An HTTP endpoint in a thread (the forwarder under test is another process)."""

    def __init__(self) -> None:
        import http.server
        import threading

        outer = self
        self.status = 200
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.requestline)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
