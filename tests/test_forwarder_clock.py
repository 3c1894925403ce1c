"""The forwarder's clock: ManualClock's rules, and one advance moving every timeout."""

from __future__ import annotations

import asyncio

import pytest

from lbcore import Endpoint, HealthCheck
from lbcore.forwarder import Forwarder, LoopClock, ManualClock

from forwarder_support import LOOPS, backends, eventually, free_port, run_async, service, who


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_manual_timers_run_in_due_order_and_those_set_on_the_way_too():
    clock = ManualClock(start=100)
    log = []

    def note(name):
        log.append((name, clock.now()))
        if name == "b":  # due within the same advance: runs in it
            clock.call_later(0.5, note, "set by b")

    clock.call_at(103, note, "c")
    clock.call_later(1, note, "a")
    clock.call_later(2, note, "b")
    clock.call_later(2, note, "b2")  # same due time: the order they were set in
    cancelled = clock.call_later(1.5, note, "cancelled")
    cancelled.cancel()
    assert clock.pending == 4 and cancelled.cancelled()
    clock.advance(2.9)
    assert log == [("a", 101), ("b", 102), ("b2", 102), ("set by b", 102.5)]
    assert clock.now() == 102.9 and clock.pending == 1
    clock.advance(0.1)
    assert log[-1] == ("c", 103) and clock.pending == 0


def test_manual_clock_refuses_to_go_back_and_lets_a_callback_error_through():
    clock = ManualClock()
    with pytest.raises(ValueError, match="seconds: -1 must be a finite number >= 0"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="seconds: nan"):
        clock.advance(float("nan"))

    def broken():
        raise RuntimeError("a bug in a timer")

    clock.call_later(1, broken)
    with pytest.raises(RuntimeError, match="a bug in a timer"):
        clock.advance(5)
    assert clock.now() == 1  # stopped at the timer that raised


def test_loop_clock_is_the_loops_own_time_and_timers(loop_kind):
    async def main():
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop)
        fired = loop.create_future()
        handle = clock.call_later(0, fired.set_result, "fired")
        await asyncio.wait_for(fired, 5)
        return clock.now() <= loop.time(), handle.cancelled(), fired.result()

    assert run_async(loop_kind, main()) == (True, False, "fired")


def test_one_advance_moves_the_health_checks_and_the_cool_downs(loop_kind):
    """The forwarder's clock times its active checks too: with a 30 s interval, no check
    runs until the clock passes it, and then they all do, without waiting 30 s."""

    async def main():
        (a,) = await backends("a")
        dead = Endpoint("127.0.0.1", free_port())
        clock = ManualClock()
        check = HealthCheck(interval=30, timeout=1, rise=1, fall=2)
        fw = Forwarder([service("web", [dead, a.endpoint], scheduler="rr", health_check=check)],
                       cooldown=10, clock=clock)
        await fw.start()
        answers = [await who(fw.addresses["web"]) for _ in range(2)]  # rr meets the dead one
        stats = fw.stats()["web"]["endpoints"]
        health = stats[dead.address]["health"]
        before = health["checks"], health["healthy"], stats[dead.address]["failed"]
        clock.advance(30)  # every endpoint's first check (start offsets < interval); cool-down over
        endpoints = fw._runtimes["web"].stats.endpoints
        await eventually(lambda: all(e.health.checks - e.health.passive == 1
                                     for e in endpoints.values()))
        after = fw.stats()["web"]["endpoints"][dead.address]
        await fw.stop()
        return answers, before, after

    answers, before, after = run_async(loop_kind, main())
    assert answers == ["a", "a"]
    # No check has run yet: the refusal counted as one failed check (passive), short of
    # fall=2; it is cooling down.
    assert before == (1, True, True)
    # Its first active check failed (with the passive one, fall=2 is reached); the
    # cool-down ended in the same advance, but its checks keep it out.
    assert after["health"]["checks"] == 2 and after["health"]["checks_failed"] == 2
    assert not after["failed"]
