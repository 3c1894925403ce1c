"""The agent's loop, each piece alone (the change tracker with snapshots, the runner on
a fake clock, the agent's sync decisions against a recording sink), then the whole
loop running on the event loop."""

from __future__ import annotations

import asyncio
import json

import pytest
from agent_support import FakeClock, QueueSource, RecordingSink, service

from lbcore.agent import Agent, BoundedFrequencyRunner, ChangeTracker
from lbcore.agent.runner import RETRY_MAX
from lbcore.sources.live import Snapshot

WEB = service("web", "10.96.0.10", "10.1.0.1:80", "10.1.0.2:80")
DNS = service("dns", "10.96.0.53", "10.1.0.9:53", port=53, protocol="udp")


# -- the change tracker -----------------------------------------------------------------


def test_tracker_merges_sources_and_reports_clashes_keeping_the_first_listed():
    tracker = ChangeTracker(["a", "b"])
    assert not tracker.ready
    tracker.update(Snapshot("b", (service("web", "10.96.0.99", "10.2.0.1:80"), DNS), (), 1.0))
    assert not tracker.ready  # "a" has not spoken yet
    tracker.update(Snapshot("a", (WEB, service("api", "10.96.0.53", "10.3.0.1:53", port=53, protocol="udp")),
                            ("a: services[2]: port: 0 is out of range",), 2.0))
    assert tracker.ready
    assert [s.name for s in tracker.services()] == ["api", "web"]
    assert tracker.services()[1] is WEB
    assert tracker.problems() == (
        "a: services[2]: port: 0 is out of range",
        "b: web: name: 'web' is also a service of a; the source listed first keeps it",
        "b: dns: port: udp 10.96.0.53:53 is also service 'api' of a's; the source listed first keeps it",
    )


def test_tracker_leaves_out_what_the_sink_refuses_and_says_why():
    tracker = ChangeTracker(["a"], refuse=lambda s: "scheduler: 'wlc' no" if s.name == "web" else None)
    tracker.update(Snapshot("a", (WEB, DNS), (), 1.0))
    assert [s.name for s in tracker.services()] == ["dns"]
    assert tracker.problems() == ("a: web: scheduler: 'wlc' no",)


def test_tracker_pending_changes_keep_the_first_seen_time_and_their_kind():
    tracker = ChangeTracker(["a"])
    assert tracker.update(Snapshot("a", (WEB,), (), 10.0))
    assert tracker.take() == {"web": (10.0, "service")}
    assert not tracker.update(Snapshot("a", (WEB,), (), 11.0))  # the same set: no change
    moved = service("web", "10.96.0.10", "10.1.0.1:80", "10.1.0.3:80")
    assert tracker.update(Snapshot("a", (moved, DNS), (), 12.0))
    assert tracker.update(Snapshot("a", (service("web", "10.96.0.10", "10.1.0.4:80"), DNS), (), 13.0))
    assert tracker.pending == {"web": (12.0, "endpoint"), "dns": (12.0, "service")}
    assert tracker.oldest_pending() == 12.0
    assert tracker.update(Snapshot("a", (DNS,), (), 14.0))  # web removed: a service change
    assert tracker.pending["web"] == (12.0, "service")
    assert tracker.total == {"service": 3, "endpoint": 2}


def test_tracker_gives_back_a_failed_syncs_changes_with_their_first_seen_time():
    tracker = ChangeTracker(["a"])
    tracker.update(Snapshot("a", (WEB,), (), 10.0))
    taken = tracker.take()
    tracker.update(Snapshot("a", (service("web", "10.96.0.10", "10.1.0.5:80"), DNS), (), 11.0))  # during the sync
    tracker.give_back(taken)
    assert tracker.pending == {"web": (10.0, "service"), "dns": (11.0, "service")}


# -- the bounded-frequency runner -------------------------------------------------------


def make_runner(clock, min_interval=1.0, max_interval=3600.0):
    return BoundedFrequencyRunner(min_interval=min_interval, max_interval=max_interval, clock=clock)


def drive(runner, clock, until, ok=True):
    """Advance the fake clock from due time to due time up to ``until``; the start times."""
    starts = []
    while True:
        due = runner.next_run()
        if due > until:
            return starts
        clock.now = max(clock.now, due)
        runner.started()
        starts.append(clock.now)
        runner.finished(ok=ok if not callable(ok) else ok())


def test_runner_bursts_two_then_one_per_min_interval_and_coalesces():
    clock = FakeClock(0.0)
    runner = make_runner(clock)
    starts = []
    for t in [0.0, 0.0, 0.0, 0.1, 0.2, 0.5, 0.9, 1.2, 5.0]:  # requests at these times
        clock.now = max(clock.now, t)
        runner.request()
        due = runner.next_run()
        if due <= clock.now:
            runner.started()
            starts.append(clock.now)
            runner.finished(ok=True)
    # 0.0 and 0.0 spend the burst; the rest must wait for tokens (1 per second)
    assert starts == [0.0, 0.0, 1.2, 5.0]
    runner.request()
    assert runner.next_run() == 5.0  # the quiet time refilled the burst: a second one now
    runner.started()
    runner.finished(ok=True)
    for _ in range(3):  # requests made while waiting for a token are one sync
        runner.request()
        assert runner.next_run() == pytest.approx(6.0)
    clock.now = 6.0
    runner.started()
    runner.finished(ok=True)
    assert runner.next_run() == pytest.approx(6.0 + 3600)


def test_runner_runs_once_per_max_interval_without_requests():
    clock = FakeClock(0.0)
    runner = make_runner(clock, max_interval=60)
    assert drive(runner, clock, 200) == [60, 120, 180]


def test_runner_retries_with_doubling_backoff_then_stops_retrying_after_success():
    clock = FakeClock(0.0)
    runner = make_runner(clock, min_interval=0.5)
    runner.request()
    results = iter([False] * 8 + [True])
    starts = drive(runner, clock, 200, ok=lambda: next(results, True))
    gaps = [round(b - a, 3) for a, b in zip(starts, starts[1:])]
    assert gaps[:8] == [1, 2, 4, 8, 16, RETRY_MAX, RETRY_MAX, RETRY_MAX]
    assert len(starts) == 9  # after the success: nothing until the periodic run
    assert runner.failures == 0


def test_runner_retry_also_waits_for_a_token():
    clock = FakeClock(0.0)
    runner = make_runner(clock, min_interval=10)
    runner.request()
    starts = drive(runner, clock, 25, ok=False)
    # burst of 2 at 0 and 1 (retry after 1 s); then a token only every 10 s
    assert starts == [0, 1, 10, 20]


def test_min_interval_zero_runs_every_request_at_once():
    clock = FakeClock(0.0)
    runner = make_runner(clock, min_interval=0)
    for _ in range(5):
        runner.request()
        assert runner.next_run() == 0.0
        runner.started()
        runner.finished(ok=True)


# -- the agent's decisions ----------------------------------------------------------------


def agent_with(clock, *sources, sink=None, sync_period=60.0):
    sink = sink or RecordingSink()
    return Agent(list(sources) or [QueueSource()], sink, min_sync_period=1.0,
                 sync_period=sync_period, clock=clock, wall_clock=lambda: 1.7e9 + clock.now), sink


def sample(agent, name, labels=None):
    return agent.metrics.registry.get_sample_value(name, labels or {})


def test_first_sync_waits_for_every_source_and_is_full_then_partial():
    async def main():
        clock = FakeClock()
        a, b = QueueSource("a"), QueueSource("b")
        agent, sink = agent_with(clock, a, b)
        agent.receive(Snapshot("a", (WEB,), (), clock.now))
        assert await agent.sync() and sink.applies == []  # b has not sent its set
        agent.receive(Snapshot("b", (DNS,), (), clock.now))
        assert await agent.sync()
        clock.advance(5)
        agent.receive(Snapshot("b", (), (), clock.now))
        assert await agent.sync()
        return sink.applies

    assert asyncio.run(main()) == [("full", ["dns", "web"]), ("partial", ["web"])]


def test_a_failed_sync_keeps_its_changes_pending_and_the_next_sync_is_full():
    async def main():
        clock = FakeClock()
        agent, sink = agent_with(clock)
        agent.receive(Snapshot("test://a", (WEB,), (), clock.now))
        await agent.sync()
        clock.advance(1)
        agent.receive(Snapshot("test://a", (WEB, DNS), (), clock.now))
        sink.fail_next = 1
        assert not await agent.sync()
        assert agent.tracker.pending == {"dns": (clock.now, "service")}
        clock.advance(2)
        assert await agent.sync()
        return agent, sink

    agent, sink = asyncio.run(main())
    assert sink.applies == [("full", ["web"]), ("full", ["dns", "web"])]
    assert sample(agent, "lbcore_sync_proxy_rules_failures_total", {"sync": "partial"}) == 1
    assert agent.tracker.pending == {}
    # dns waited 2 s for the failed sync and its retry
    assert sample(agent, "lbcore_network_programming_duration_seconds_bucket", {"le": "2.0"}) == 2
    assert sample(agent, "lbcore_network_programming_duration_seconds_bucket", {"le": "1.0"}) == 1


def test_a_full_sync_comes_every_sync_period():
    async def main():
        clock = FakeClock()
        agent, sink = agent_with(clock, sync_period=60)
        agent.receive(Snapshot("test://a", (WEB,), (), clock.now))
        for _ in range(4):
            await agent.sync()
            clock.advance(25)
        return sink.applies

    assert [kind for kind, _ in asyncio.run(main())] == ["full", "partial", "partial", "full"]


def test_metrics_count_changes_and_syncs_and_problems():
    async def main():
        clock = FakeClock()
        agent, sink = agent_with(clock, sink=RecordingSink(refused=["bad"]))
        bad = service("bad", "10.96.0.7", "10.1.0.7:80")
        problem = ("test://a: key x: port: 0 is out of range",)
        agent.receive(Snapshot("test://a", (WEB, bad), problem, clock.now))
        await agent.sync()
        clock.advance(0.04)
        agent.receive(Snapshot("test://a", (service("web", "10.96.0.10", "10.1.0.1:80"), bad), problem,
                               clock.now))
        assert sample(agent, "lbcore_sync_proxy_rules_endpoint_changes_pending") == 1
        clock.advance(0.03)
        await agent.sync()
        return agent

    agent = asyncio.run(main())
    assert sample(agent, "lbcore_sync_proxy_rules_service_changes_total") == 1
    assert sample(agent, "lbcore_sync_proxy_rules_endpoint_changes_total") == 1
    assert sample(agent, "lbcore_sync_proxy_rules_endpoint_changes_pending") == 0
    assert sample(agent, "lbcore_sync_full_proxy_rules_duration_seconds_count") == 1
    assert sample(agent, "lbcore_sync_partial_proxy_rules_duration_seconds_count") == 1
    assert sample(agent, "lbcore_sync_proxy_rules_duration_seconds_count") == 2
    # the endpoint change was seen 0.03 s before its sync ended: in the 0.05 bucket, not 0.025
    assert sample(agent, "lbcore_network_programming_duration_seconds_bucket", {"le": "0.025"}) == 1
    assert sample(agent, "lbcore_network_programming_duration_seconds_bucket", {"le": "0.05"}) == 2
    assert sample(agent, "lbcore_services") == 1
    assert sample(agent, "lbcore_service_problems") == 2
    assert sample(agent, "lbcore_sync_proxy_rules_last_timestamp_seconds") == pytest.approx(1.7e9 + 1000.07)


def test_healthz_turns_503_when_a_change_waits_longer_than_twice_the_sync_period():
    async def main():
        clock = FakeClock()
        agent, sink = agent_with(clock, sync_period=10)
        answers = []

        def ask():
            reply = agent.healthz()
            answers.append((reply.status, json.loads(reply.text)["reason"]))

        ask()  # just started: the first sync is waiting, but not for long
        clock.advance(21)
        ask()  # 21 s without the first sync
        agent.receive(Snapshot("test://a", (WEB,), (), clock.now))
        await agent.sync()
        ask()
        agent.receive(Snapshot("test://a", (WEB, DNS), (), clock.now))
        sink.fail_next = 100
        clock.advance(19)
        await agent.sync()
        ask()  # failing, but only 19 s
        clock.advance(2)
        ask()  # 21 s
        sink.fail_next = 0
        await agent.sync()
        ask()
        return agent, answers

    agent, answers = asyncio.run(main())
    assert answers == [
        (200, "ok"),
        (503, "no sync yet for 21 s, longer than 2 x sync period (20 s)"),
        (200, "ok"),
        (200, "ok"),
        (503, "1 change(s) not synced for 21 s, longer than 2 x sync period (20 s)"),
        (200, "ok"),
    ]
    assert sample(agent, "lbcore_proxy_healthz_total", {"code": "503"}) == 2
    assert agent.livez().status == 200


def test_a_source_out_of_contact_turns_healthz_503_after_twice_the_sync_period():
    async def main():
        clock = FakeClock()
        source = QueueSource("etcd://x/p")
        agent, _ = agent_with(clock, source, sync_period=10)
        agent.receive(Snapshot(source.source, (WEB,), (), clock.now))
        await agent.sync()
        source.connected = False
        agent.check_contact()  # the agent notices within CONTACT_CHECK seconds
        clock.advance(15)
        first = agent.healthz().status
        clock.advance(6)
        second = json.loads(agent.healthz().text)["reason"]
        source.connected = True
        agent.receive(Snapshot(source.source, (WEB,), (), clock.now))  # back, nothing new
        return first, second, agent.healthz().status, sample(
            agent, "lbcore_source_connected", {"source": "etcd://x/p"})

    assert asyncio.run(main()) == (
        200, "source etcd://x/p out of contact for 21 s, longer than 2 x sync period (20 s)", 200, 1)


# -- the whole loop on the event loop -----------------------------------------------------


def test_the_running_agent_applies_each_change_and_coalesces_bursts():
    async def main():
        source = QueueSource()
        sink = RecordingSink()
        agent = Agent([source], sink, min_sync_period=0.2, sync_period=60)
        task = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()
        source.send([WEB], loop.time())
        await asyncio.wait_for(sink.applied.wait(), 10)
        sink.applied.clear()
        source.send([WEB, DNS], loop.time())  # the second sync of the burst: at once
        await asyncio.wait_for(sink.applied.wait(), 10)
        sink.applied.clear()
        for i in range(10):  # ten changes in a row while the bucket is empty: one sync
            source.send([WEB, service("dns", "10.96.0.53", f"10.1.0.{i + 10}:53", port=53, protocol="udp")],
                        loop.time())
        await asyncio.wait_for(sink.applied.wait(), 10)
        await asyncio.sleep(0.5)  # a second sync would have had time to come
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sink

    sink = asyncio.run(main())
    assert [kind for kind, _ in sink.applies] == ["full", "partial", "partial"]
    assert sink.carried[0].endpoints[0].address == "10.1.0.19:53"


def test_an_agent_stopped_mid_sync_lets_the_apply_finish():
    class SlowSink(RecordingSink):
        async def apply(self, old, new):
            self.started.set()
            await asyncio.sleep(0.3)  # a kernel tool at work
            await super().apply(old, new)

    async def main():
        source = QueueSource()
        sink = SlowSink()
        sink.started = asyncio.Event()
        agent = Agent([source], sink, min_sync_period=0, sync_period=60)
        task = asyncio.create_task(agent.run())
        source.send([WEB], 0.0)
        await asyncio.wait_for(sink.started.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sink.applies  # read as soon as run() has returned

    assert asyncio.run(main()) == [("full", ["web"])]


def test_problems_and_notes_are_logged_once_each(caplog):
    caplog.set_level("INFO", logger="lbcore.agent")
    clock = FakeClock()
    agent, _ = agent_with(clock)
    for _ in range(3):
        agent.receive(Snapshot("test://a", (WEB,), ("test://a: key x: port: 0 is out of range",), clock.now,
                               notes=("test://a: Service shop/db: headless, skipped",)))
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("left out: test://a: key x: port: 0 is out of range") == 1
    assert lines.count("skipped on purpose: test://a: Service shop/db: headless, skipped") == 1
