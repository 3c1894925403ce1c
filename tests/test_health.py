"""Active health checks against real endpoints on 127.0.0.1, with a clock the test moves.

The checks are real connections; only time is driven: each test moves its `Clock` and
calls `run_due`, so "three intervals" take no three intervals of wall time.  Timeouts
are real (a hung endpoint fails when asyncio's timer says so).
"""

from __future__ import annotations

import asyncio
import random
import resource
import time

import pytest

from lbcore import Endpoint, HealthCheck, NoEndpointsError, make_balancer
from lbcore.health import CheckWheel, EndpointHealth, HealthChecker, HealthMonitor, probe

from forwarder_support import LOOPS, run_async
from health_support import Clock, CheckedServer, ConnectionGroup, closed_port, open_descriptors, servers


def run(coro, loop_kind="asyncio"):
    """Run ``coro`` on a fresh event loop (asyncio's, or uvloop's: the forwarder runs on it)."""
    return run_async(loop_kind, coro)


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def advance(clock: Clock, checker, seconds: float, step: float) -> None:
    """Move the clock by ``seconds`` in steps, running what falls due at each."""
    end = clock.now + seconds
    while clock.now < end - 1e-9:
        clock.now = min(end, clock.now + step)
        await checker.run_due()


# -- the state machine ---------------------------------------------------------------------


@pytest.mark.parametrize("rise, fall", [(1, 1), (2, 3), (3, 2), (5, 5)])
def test_state_changes_exactly_at_rise_and_fall(rise, fall):
    state = EndpointHealth(Endpoint("10.0.0.1", 80), healthy=True, now=0.0)
    t = 0
    for _ in range(fall - 1):
        t += 1
        assert state.record(False, "x", now=t, rise=rise, fall=fall) is False
        assert state.healthy
    t += 1
    assert state.record(False, "x", now=t, rise=rise, fall=fall) is True
    assert not state.healthy and state.since == t and state.went_down == 1
    for _ in range(rise - 1):
        t += 1
        assert state.record(True, None, now=t, rise=rise, fall=fall) is False
        assert not state.healthy
    t += 1
    assert state.record(True, None, now=t, rise=rise, fall=fall) is True
    assert state.healthy and state.since == t and state.came_back == 1
    assert state.checks == rise + fall


def test_flapping_never_crosses_a_threshold_that_needs_a_run():
    """Alternating results never make fall=2 or rise=2: each result breaks the other's run."""
    state = EndpointHealth(Endpoint("10.0.0.1", 80), healthy=True, now=0.0)
    for t in range(100):
        assert state.record(t % 2 == 0, None if t % 2 == 0 else "x", now=t, rise=2, fall=2) is False
    assert state.healthy and state.went_down == 0
    # The same seeded random sequence against a model of the rule: a change happens
    # exactly when the run of agreeing results reaches the threshold.
    rng = random.Random(7)
    state = EndpointHealth(Endpoint("10.0.0.1", 80), healthy=True, now=0.0)
    healthy, run_length, last = True, 0, None
    for t in range(2000):
        passed = rng.random() < 0.6
        run_length = run_length + 1 if passed == last else 1
        last = passed
        expected = False
        if healthy and not passed and run_length >= 3 or not healthy and passed and run_length >= 2:
            healthy, expected = passed, True
        assert state.record(passed, None, now=t, rise=2, fall=3) is expected
        assert state.healthy is healthy
    assert state.went_down > 10 and state.came_back > 10


# -- the checks, one at a time ---------------------------------------------------------------


def test_tcp_connect_passes_on_a_listener_and_names_a_refusal(loop_kind):
    async def main():
        [up] = await servers("accept")
        passed = await probe(HealthCheck(), up.endpoint)
        refused = await probe(HealthCheck(), Endpoint("127.0.0.1", closed_port()))
        await asyncio.sleep(0.01)
        return passed, refused, up.accepted

    passed, refused, accepted = run(main(), loop_kind)
    assert passed is None and accepted == 1
    assert refused == "Connection refused"


def test_tcp_send_expect(loop_kind):
    async def main():
        [pong] = await servers("pong")
        [silent] = await servers("accept")
        [garbage] = await servers("garbage")
        check = HealthCheck(send="PING\r\n", expect="+PONG", timeout=0.2, interval=1)
        results = [await probe(check, s.endpoint) for s in (pong, silent, garbage)]
        # garbage that then closes: no +PONG before the end
        garbage.behaviour = "reset"
        results.append(await probe(check, garbage.endpoint))
        return results, pong.requests

    (passed, silent, garbage, reset), requests = run(main(), loop_kind)
    assert passed is None and requests == [b"PING\r\n"]
    assert silent == "timed out after 0.2s"  # it accepts and never answers
    assert garbage == "timed out after 0.2s"  # it answered, but not what was expected
    assert reset in ("Connection reset by peer", "closed before sending b'+PONG'")


def test_expect_alone_reads_a_banner_and_send_alone_passes_once_sent():
    async def main():
        [garbage] = await servers("garbage")
        banner = await probe(HealthCheck(expect="hello", timeout=0.5, interval=1), garbage.endpoint)
        wrong = await probe(HealthCheck(expect="SSH-2.0", timeout=0.2, interval=1), garbage.endpoint)
        [pong] = await servers("pong")
        sent = await probe(HealthCheck(send="PING\r\n"), pong.endpoint)
        await asyncio.sleep(0.05)
        return banner, wrong, sent, pong.requests

    banner, wrong, sent, requests = run(main())
    assert banner is None
    assert wrong == "timed out after 0.2s"
    assert sent is None and requests == [b"PING\r\n"]


@pytest.mark.parametrize("status, statuses, passed", [
    (200, None, True), (204, None, True), (301, None, True), (399, None, True),
    (404, None, False), (500, None, False), (503, None, False),
    (204, "200", False), (204, "200-204", True), (500, "500-599", True),
])
def test_http_passes_on_a_status_in_the_range(status, statuses, passed):
    async def main():
        [web] = await servers("http", status=status)
        check = HealthCheck("http", path="/healthz?deep=1", host="web.example:8080", statuses=statuses)
        return await probe(check, web.endpoint), web.requests

    why, requests = run(main())
    assert (why is None) is passed
    if not passed:
        assert why == f"status {status}"
    request = requests[0].decode()
    assert request.startswith("GET /healthz?deep=1 HTTP/1.1\r\n")
    assert "\r\nHost: web.example:8080\r\n" in request
    assert "\r\nConnection: close\r\n" in request


def test_http_host_defaults_to_the_checked_address_and_port_sends_checks_elsewhere():
    async def main():
        [web] = await servers("http")
        served = Endpoint("127.0.0.1", closed_port())  # the service port itself is closed
        why = await probe(HealthCheck("http", port=web.port), served)
        return why, web.requests, web.port

    why, requests, port = run(main())
    assert why is None
    assert f"\r\nHost: 127.0.0.1:{port}\r\n" in requests[0].decode()  # the port checked


@pytest.mark.parametrize("behaviour, why", [
    ("hang", "timed out after 0.2s"),
    ("reset", "Connection reset by peer"),
    ("garbage", "not an HTTP status line: b'\\x00\\x01 hello, this is no protocol'"),
    ("accept", "timed out after 0.2s"),
])
def test_http_detects_hung_resetting_and_garbled_endpoints(behaviour, why, loop_kind):
    async def main():
        [bad] = await servers(behaviour)
        started = time.monotonic()
        result = await probe(HealthCheck("http", timeout=0.2, interval=1), bad.endpoint)
        return result, time.monotonic() - started

    result, elapsed = run(main(), loop_kind)
    if behaviour == "reset" and result == "closed before a status line":
        result = "Connection reset by peer"  # the reset can land before or after the send
    assert result == why
    if why.startswith("timed out"):
        assert 0.19 <= elapsed < 2.0  # at the timeout, not before; 10x margin above


def test_a_connect_that_hangs_fails_at_the_timeout(blackhole, loop_kind):
    async def main():
        port = blackhole()
        started = time.monotonic()
        why = await probe(HealthCheck(timeout=0.2, interval=1), Endpoint("127.0.0.1", port))
        return why, time.monotonic() - started

    why, elapsed = run(main(), loop_kind)
    assert why == "timed out after 0.2s"
    assert 0.19 <= elapsed < 2.0


def test_every_socket_is_closed_whatever_the_outcome(blackhole, loop_kind):
    async def main():
        hole = blackhole()
        pong, hang, reset = [(await servers(b))[0] for b in ("pong", "hang", "reset")]
        targets = [pong.endpoint, hang.endpoint, reset.endpoint, Endpoint("127.0.0.1", hole),
                   Endpoint("127.0.0.1", closed_port())]
        check = HealthCheck(send="PING\r\n", expect="+PONG", timeout=0.1, interval=1)
        before = open_descriptors()
        for _ in range(5):
            await asyncio.gather(*(probe(check, e) for e in targets))
        after_checks = await descriptors_back_to(before)
        # Checks cancelled from outside (a stopping wheel) close their sockets too.
        tasks = [asyncio.ensure_future(probe(check, hang.endpoint)) for _ in range(20)]
        await asyncio.sleep(0.02)
        during = open_descriptors()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return before, after_checks, during, await descriptors_back_to(before), len(hang.open)

    before, after_checks, during, after_cancel, hang_open = run(main(), loop_kind)
    assert after_checks == before
    assert during >= before + 20  # the twenty were really open (client ends at least)
    assert after_cancel == before
    assert hang_open == 0


async def descriptors_back_to(count: int) -> int:
    """The process's descriptor count once it is back to ``count``, or after 2 s.

    The test's servers hold the other end of each check's connection until their event
    loop has seen it close, a few iterations later.
    """
    deadline = time.monotonic() + 2
    while open_descriptors() != count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return open_descriptors()


# -- the checker: schedule, transitions, marks -------------------------------------------------


def test_a_stopped_endpoint_goes_out_after_fall_checks_and_back_after_rise():
    async def main():
        clock = Clock()
        [web] = await servers("http")
        balancer = make_balancer("rr", [web.endpoint, Endpoint("127.0.0.2", 80)])
        changes = []
        checker = HealthChecker(
            HealthCheck("http", interval=1, timeout=1, rise=2, fall=3), [web.endpoint],
            balancer=balancer, clock=clock, rng=random.Random(1),
            on_change=lambda e, s: changes.append((clock.now, s.healthy, s.why)),
        )
        await advance(clock, checker, 3, 0.25)
        assert changes == [] and checker.state(web.endpoint).last == "passed"
        web.status = 500
        await advance(clock, checker, 2, 0.25)
        assert changes == []  # two failures: still in
        await advance(clock, checker, 1, 0.25)
        assert [c[1:] for c in changes] == [(False, "status 500")]
        picks = {balancer.pick().address for _ in range(10)}
        web.status = 200
        await advance(clock, checker, 1, 0.25)
        still_out = {balancer.pick().address for _ in range(10)}
        await advance(clock, checker, 1, 0.25)
        back = {balancer.pick().address for _ in range(10)}
        return changes, picks, still_out, back, checker.state(web.endpoint)

    changes, picks, still_out, back, state = run(main())
    assert picks == still_out == {"127.0.0.2:80"}
    assert back == {"127.0.0.2:80", state.endpoint.address}
    assert [c[1] for c in changes] == [False, True]
    assert changes[1][0] - changes[0][0] == pytest.approx(2, abs=0.3)  # rise=2 intervals
    assert state.since == changes[1][0] and state.went_down == state.came_back == 1
    assert state.latency is not None and 0 < state.latency < 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stopped_backend_is_out_and_back_within_the_bounds_of_the_rule(seed):
    """Stopped at a random moment: out within fall × interval × (1 + jitter) + timeout;
    started again: back within rise × interval × (1 + jitter).  Time is the test's clock
    (10 ms steps), the refusals are real."""
    check = HealthCheck(interval=1, timeout=0.5, rise=2, fall=3, jitter=0.2)
    step = 0.01

    async def main():
        rng = random.Random(seed)
        clock = Clock()
        backends = await servers("accept", 10)
        changed = {}
        checker = HealthChecker(check, [b.endpoint for b in backends], clock=clock, rng=rng,
                                on_change=lambda e, s: changed.setdefault((e.port, s.healthy), clock.now))
        await advance(clock, checker, 3 + rng.random(), step)
        stopped = clock.now
        for backend in backends:
            backend.stop()
        await advance(clock, checker, 5, step)
        await advance(clock, checker, rng.random(), step)
        started = clock.now
        for backend in backends:
            await backend.start()
        await advance(clock, checker, 4, step)
        return [(changed[(b.port, False)] - stopped, changed[(b.port, True)] - started) for b in backends]

    times = run(main())
    out_bound = check.fall * check.interval * (1 + check.jitter) + check.timeout
    back_bound = check.rise * check.interval * (1 + check.jitter)
    for out, back in times:
        # never before the rule allows (fall - 1 more intervals after a first failure) ...
        assert (check.fall - 1) * check.interval * (1 - check.jitter) - step <= out <= out_bound + step
        assert (check.rise - 1) * check.interval * (1 - check.jitter) - step <= back <= back_bound + step
    # ... and the phases really differ: not all the same time
    assert len({round(out, 2) for out, _ in times}) > 3


def test_checks_per_interval_are_what_the_settings_imply():
    """Each endpoint is checked once per interval: counted at the endpoints."""

    async def main(jitter):
        clock = Clock()
        backends = await servers("accept", 20)
        checker = HealthChecker(HealthCheck(interval=2, jitter=jitter), [b.endpoint for b in backends],
                                clock=clock, rng=random.Random(3))
        await advance(clock, checker, 40, 0.05)  # 20 intervals
        await asyncio.sleep(0.05)
        return [(b.accepted, checker.state(b.endpoint).checks) for b in backends]

    exact = run(main(0.0))
    # Phases in [0, 2): checks at p, p + 2, ..., p + 38 within 40 s: 20 each.
    assert exact == [(20, 20)] * 20
    jittered = run(main(0.2))
    assert all(accepted == checks for accepted, checks in jittered)  # one connection per check
    # Intervals of 2 s ± 20 % average 2 s: the total stays at 20 per endpoint, within a
    # few checks (each endpoint's phase drifts by a random walk).
    assert 390 <= sum(accepted for accepted, _ in jittered) <= 410
    assert all(17 <= accepted <= 24 for accepted, _ in jittered)


def test_checks_of_one_interval_are_spread_over_it_with_jitter():
    async def main(jitter):
        clock = Clock()
        backends = await servers("accept", 40)
        checker = HealthChecker(HealthCheck(interval=1, jitter=jitter), [b.endpoint for b in backends],
                                clock=clock, rng=random.Random(5))
        seen: dict[str, list[float]] = {b.endpoint.address: [] for b in backends}
        step = 0.01
        while clock.now < 10:
            clock.now = round(clock.now + step, 6)
            await checker.run_due()
            for address, state in checker.states.items():
                if state.checked_at == clock.now:
                    seen[address].append(clock.now)
        return seen

    even = run(main(0.0))
    firsts = sorted(times[0] for times in even.values())
    # The first checks of 40 endpoints cover the first interval evenly: one per 25 ms.
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert firsts[-1] - firsts[0] > 0.9
    assert max(gaps) <= 0.025 + 0.011
    # Without jitter every endpoint keeps its place: exactly one interval apart.
    for times in even.values():
        assert all(abs((b - a) - 1.0) < 0.011 for a, b in zip(times, times[1:]))
    jittered = run(main(0.3))
    intervals = [b - a for times in jittered.values() for a, b in zip(times, times[1:])]
    assert all(0.7 - 0.011 <= i <= 1.3 + 0.011 for i in intervals)
    assert min(intervals) < 0.8 and max(intervals) > 1.2  # the jitter is really applied
    per_second = [sum(1 for times in jittered.values() for t in times if s < t <= s + 1) for s in range(1, 9)]
    assert all(30 <= n <= 50 for n in per_second), per_second  # no herd, no hole


def test_checks_that_ran_late_keep_their_place_in_the_interval():
    """After a stall (a blocked loop, no free slot) the late checks run once and then
    return to their own places: they do not bunch at the moment the stall ended."""

    async def main():
        clock = Clock()
        backends = await servers("accept", 20)
        checker = HealthChecker(HealthCheck(interval=1), [b.endpoint for b in backends], clock=clock,
                                rng=random.Random(4))
        clock.now = 5.5  # nothing ran for five and a half intervals
        late = await checker.run_due()
        seen = {}
        while clock.now < 7:
            clock.now = round(clock.now + 0.01, 6)
            await checker.run_due()
            for address, state in checker.states.items():
                if state.checked_at == clock.now:
                    seen.setdefault(address, clock.now)
        return late, sorted(seen.values())

    late, next_checks = run(main())
    assert late == 20  # each endpoint once, not once per missed interval
    assert len(next_checks) == 20 and all(5.5 < t <= 6.5 + 0.01 for t in next_checks)
    assert next_checks[-1] - next_checks[0] > 0.9  # still spread over the interval


def test_concurrency_bound_holds_with_2000_hung_endpoints():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 5000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))

    async def main():
        group = ConnectionGroup()
        backends = [await CheckedServer("hang", group=group).start() for _ in range(2000)]
        clock = Clock()
        checker = HealthChecker(HealthCheck("http", interval=1, timeout=0.05, fall=1),
                                [b.endpoint for b in backends], clock=clock, concurrency=100,
                                rng=random.Random(9))
        before = open_descriptors()
        clock.now = 1.0  # every endpoint's first check is due
        ran = await checker.run_due()
        states = checker.states.values()
        return ran, group, checker.wheel.peak, before, await descriptors_back_to(before), states

    ran, group, peak, before, after, states = run(main())
    assert ran == 2000
    assert group.accepted == 2000
    assert peak == 100  # the bound was reached ...
    assert group.peak <= 100  # ... and never passed, counted at the endpoints
    assert after == before
    assert all(not s.healthy and s.why == "timed out after 0.05s" for s in states)


def test_update_keeps_the_state_of_endpoints_that_stay():
    async def main():
        clock = Clock()
        [down] = await servers("http", status=503)
        [up, fresh] = await servers("http", n=2)
        changes = []
        checker = HealthChecker(HealthCheck("http", interval=1, rise=2, fall=2), [down.endpoint, up.endpoint],
                                clock=clock, on_change=lambda e, s: changes.append((e.port, s.healthy)))
        await advance(clock, checker, 2, 0.1)
        down_state = checker.state(down.endpoint)
        assert not down_state.healthy
        since = down_state.since
        checker.update([down.endpoint, fresh.endpoint])  # up leaves, fresh comes
        kept = checker.state(down.endpoint)
        gone = checker.state(up.endpoint)
        new = checker.state(fresh.endpoint)
        await advance(clock, checker, 1, 0.1)
        accepted_by_up = up.accepted
        await advance(clock, checker, 2, 0.1)
        return kept is down_state, since, kept, gone, new, accepted_by_up, up.accepted, changes

    same, since, kept, gone, new, up_before, up_after, changes = run(main())
    assert same and kept.since == since and not kept.healthy
    assert kept.checks >= 4 and kept.failures == kept.checks  # its run of failures went on
    assert gone is None and up_after == up_before  # a removed endpoint is not checked
    assert new.healthy and new.checks >= 2  # initial: healthy
    assert changes == [(kept.endpoint.port, False)]


def picks(balancer) -> set[int]:
    """The ports a few picks reach; empty when no endpoint can take a connection."""
    try:
        return {balancer.pick().port for _ in range(4)}
    except NoEndpointsError:
        return set()


def test_new_endpoints_start_unhealthy_when_configured_and_come_in_after_rise():
    async def main():
        clock = Clock()
        [a, b] = await servers("accept", 2)
        balancer = make_balancer("wrr", [a.endpoint, b.endpoint])
        checker = HealthChecker(HealthCheck(interval=1, rise=3, initial="unhealthy"), [a.endpoint],
                                balancer=balancer, clock=clock)
        first = picks(balancer)
        checker.update([a.endpoint, b.endpoint])
        second = picks(balancer)
        await advance(clock, checker, 2, 0.1)
        before_rise = picks(balancer)
        await advance(clock, checker, 1.1, 0.1)
        after_rise = picks(balancer)
        return a.port, b.port, first, second, before_rise, after_rise

    a, b, first, second, before_rise, after_rise = run(main())
    assert first == {b} and second == set()  # both out until checked ...
    assert before_rise == set()
    assert after_rise == {a, b}  # ... and in after three passes


def test_passive_failures_count_toward_fall():
    async def main():
        clock = Clock()
        [web] = await servers("accept")
        other = Endpoint("127.0.0.2", 80)
        balancer = make_balancer("lc", [web.endpoint, other])
        checker = HealthChecker(HealthCheck(interval=1, fall=3, rise=1), [web.endpoint], balancer=balancer,
                                clock=clock)
        checker.passive_failure(web.endpoint, "connect failed")
        checker.passive_failure(web.endpoint, "connect failed")
        in_after_two = balancer.pick() == web.endpoint
        balancer.release(web.endpoint)
        checker.passive_failure(web.endpoint, "Connection refused")
        state = checker.state(web.endpoint)
        out = (state.healthy, state.why, state.passive, balancer.pick())
        balancer.release(other)
        checker.passive_failure(Endpoint("127.0.0.9", 1), "unknown: ignored")
        await advance(clock, checker, 1, 0.1)  # a passing check: rise=1 brings it back
        return in_after_two, out, state.healthy, balancer.pick()

    in_after_two, out, healthy_again, pick = run(main())
    assert in_after_two
    assert out[:3] == (False, "passive: Connection refused", 3)
    assert out[3].address == "127.0.0.2:80"
    assert healthy_again and pick.address.startswith("127.0.0.1:")


def test_a_passing_check_breaks_a_run_of_passive_failures():
    checker = HealthChecker(HealthCheck(fall=2), [Endpoint("127.0.0.1", 80)], clock=Clock())
    e = Endpoint("127.0.0.1", 80)
    checker.passive_failure(e, "x")
    checker.state(e).record(True, None, now=0, rise=2, fall=2)
    checker.passive_failure(e, "x")
    assert checker.is_healthy(e)
    checker.passive_failure(e, "x")
    assert not checker.is_healthy(e)


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "lc", "wlc", "dh", "sh", "mh"])
@pytest.mark.parametrize("affinity", [None, 60])
def test_marks_reach_every_scheduler(scheduler, affinity):
    async def main():
        clock = Clock()
        [web] = await servers("http", status=500)
        others = [Endpoint("127.0.0.2", p) for p in (81, 82, 83)]
        balancer = make_balancer(scheduler, [web.endpoint, *others], affinity_timeout=affinity)
        checker = HealthChecker(HealthCheck("http", interval=1, fall=1, rise=1), [web.endpoint],
                                balancer=balancer, clock=clock)
        await advance(clock, checker, 1, 0.1)
        out = {balancer.pick(f"client-{i}").port for i in range(200)}
        web.status = 200
        await advance(clock, checker, 1, 0.1)
        # new clients: sticky sessions of the old ones rightly stay where they are
        back = {balancer.pick(f"new-client-{i}").port for i in range(200)}
        return web.port, out, back

    port, out, back = run(main())
    assert port not in out and out
    assert port in back


def test_no_endpoint_left_is_the_balancers_error():
    async def main():
        clock = Clock()
        endpoint = Endpoint("127.0.0.1", closed_port())
        balancer = make_balancer("rr", [endpoint])
        checker = HealthChecker(HealthCheck(interval=1, fall=1), [endpoint], balancer=balancer, clock=clock)
        await advance(clock, checker, 1, 0.1)
        with pytest.raises(NoEndpointsError, match="1 failed"):
            balancer.pick()

    run(main())


# -- on the event loop's own timer --------------------------------------------------------------


def test_the_wheel_runs_checks_on_its_timer_and_stops_cleanly(loop_kind):
    async def main():
        [web] = await servers("http")
        changes = []
        checker = HealthChecker(HealthCheck("http", interval=0.05, timeout=0.04, fall=2, rise=2, jitter=0.1),
                                [web.endpoint], on_change=lambda e, s: changes.append((time.monotonic(), s.healthy)))
        before = open_descriptors()
        checker.start()
        await asyncio.sleep(0.3)
        checks_up = checker.state(web.endpoint).checks
        web.stop()
        stopped = time.monotonic()
        while not changes and time.monotonic() - stopped < 5:
            await asyncio.sleep(0.005)
        await web.start()
        restarted = time.monotonic()
        while len(changes) < 2 and time.monotonic() - restarted < 5:
            await asyncio.sleep(0.005)
        await checker.stop()
        running = checker.wheel.running
        return checks_up, stopped, restarted, changes, running, before, await descriptors_back_to(before)

    checks_up, stopped, restarted, changes, running, before, after = run(main(), loop_kind)
    assert 3 <= checks_up <= 8  # 0.3 s at 0.05 s ± 10 %
    assert [healthy for _, healthy in changes] == [False, True]
    # fall=2 × 0.055 + 0.04 = 0.15 s; rise=2 × 0.055 = 0.11 s: 10x margin on the wall clock
    assert changes[0][0] - stopped < 1.5
    assert changes[1][0] - restarted < 1.1
    assert running == 0 and after == before


def test_the_wheel_timer_fires_about_once_per_due_check_not_in_a_spin(loop_kind):
    # uvloop rounds a timer's delay to whole milliseconds, so it can fire a little early;
    # re-arming for the remaining fraction (0 ms) used to spin the loop until the due
    # time: 150,000 wake-ups in 3 s for 500 endpoints, a whole core (bench_health).
    async def main():
        server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        endpoints = [Endpoint(f"127.0.{i // 250}.{i % 250 + 1}", port) for i in range(300)]
        checker = HealthChecker(HealthCheck(interval=0.3, timeout=0.25), endpoints)
        fires = []
        fire = checker.wheel._fire
        checker.wheel._fire = lambda: (fires.append(None), fire())
        checker.start()
        await asyncio.sleep(1.2)
        await checker.stop()
        server.close()
        return len(fires), sum(checker.state(e).checks for e in endpoints)

    fires, checks = run(main(), loop_kind)
    assert checks >= 300  # every endpoint was checked at least once
    # At most one wake-up per check, and a few for timers that found nothing due; the
    # spin made about a hundred per check.
    assert fires <= 2 * checks, (fires, checks)


def test_a_shared_wheel_bounds_the_checks_of_every_service():
    async def main():
        group = ConnectionGroup()
        clock = Clock()
        monitor = HealthMonitor(concurrency=10, clock=clock)
        services = []
        from lbcore import Service
        for i in range(10):
            backends = [await CheckedServer("hang", group=group).start() for _ in range(10)]
            services.append(Service(f"svc{i}", "10.96.0.1", 80 + i, endpoints=[b.endpoint for b in backends],
                                    health_check=HealthCheck("http", interval=1, timeout=0.05)))
        monitor.update(services)
        clock.now = 1
        ran = await monitor.run_due()
        return ran, group.peak, monitor.wheel.peak

    ran, peak, wheel_peak = run(main())
    assert ran == 100
    assert peak <= 10 and wheel_peak == 10


def test_monitor_keeps_checkers_across_updates_and_closes_the_ones_that_go():
    from lbcore import Service

    clock = Clock()
    seen = []
    monitor = HealthMonitor(clock=clock, on_change=lambda name, e, s: seen.append((name, e.port, s.healthy)))
    e1, e2 = Endpoint("127.0.0.1", 1001), Endpoint("127.0.0.1", 1002)
    check = HealthCheck(initial="unhealthy")
    web = Service("web", "10.96.0.1", 80, endpoints=[e1], health_check=check)
    api = Service("api", "10.96.0.2", 80, endpoints=[e2], health_check=check)
    assert monitor.update([web, api]) == {}
    assert seen == [("web", 1001, False), ("api", 1002, False)]
    web_checker = monitor.checkers["web"]
    slower = HealthCheck(initial="unhealthy", interval=5)
    closed = monitor.update([Service("web", "10.96.0.1", 80, endpoints=[e1, e2], health_check=slower),
                             Service("api", "10.96.0.2", 80, endpoints=[e2])])
    assert list(closed) == ["api"] and list(monitor.checkers) == ["web"]
    assert monitor.checkers["web"] is web_checker and web_checker.check == slower
    assert seen[-1] == ("web", 1002, False)  # the endpoint new to web starts unhealthy there


def test_wheel_rejects_a_bad_concurrency():
    from lbcore import ConfigError

    with pytest.raises(ConfigError, match="concurrency: 0"):
        CheckWheel(concurrency=0)
