"""Faults under traffic, over real sockets: dead backends, endpoint removal, reloads."""

from __future__ import annotations

import asyncio
import collections

import pytest

from lbcore import Endpoint
from lbcore.forwarder import Forwarder, ManualClock

from forwarder_support import (
    LOOPS, backends, digest, eventually, fetch, open_client, payload, run_async,
    scheduler_cases, service, steady_requests, who,
)


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("scheduler, affinity", scheduler_cases())
def test_backend_killed_during_steady_requests_no_client_failure(loop_kind, scheduler, affinity):
    """One of three backends dies mid-stream; every request still gets an answer.

    The one killed is the busiest (with ``dh`` the only one taking traffic), so it
    surely took traffic before; on a clock that stands still its cool-down lasts.
    """

    async def main():
        backs = await backends("a", "b", "c")
        endpoints = [back.endpoint for back in backs]
        fw = Forwarder([service("web", endpoints, scheduler=scheduler, affinity_timeout=affinity)],
                       clock=ManualClock())
        await fw.start()
        stop = asyncio.Event()
        traffic = asyncio.ensure_future(steady_requests(fw.addresses["web"], stop, workers=12))
        await eventually(lambda: sum(back.requests for back in backs) >= 50)
        victim = max(backs, key=lambda back: back.requests)
        victim.kill()
        before_kill = victim.requests
        survivors = [back for back in backs if back is not victim]
        served = sum(back.requests for back in survivors)
        await eventually(lambda: sum(back.requests for back in survivors) >= served + 50)
        stop.set()
        answers, failures = await traffic
        dead = fw.stats()["web"]["endpoints"][victim.endpoint.address]
        await fw.stop()
        return answers, failures, victim.name, before_kill, victim.requests, dead

    answers, failures, victim, before_kill, after_kill, dead = run_async(loop_kind, main())
    assert failures == []
    assert len(answers) >= 100  # 50 before the kill, 50 after
    assert before_kill > 0 and after_kill == before_kill  # nothing reached the dead one
    counts = collections.Counter(answers)
    assert sum(n for name, n in counts.items() if name != victim) >= 50  # served on
    # Its connections cut by the kill, and connects racing its cool-down, each count one:
    # how many were in flight is up to the machine, but at least one was.
    assert dead["failures"] >= 1 and dead["failed"]


def test_endpoint_removed_during_transfers_drains_byte_exact(loop_kind):
    """In-flight transfers through a removed endpoint finish intact; new ones avoid it."""

    async def main():
        a, b = await backends("a", "b")
        svc = service("web", [a.endpoint, b.endpoint])
        fw = Forwarder([svc])
        await fw.start()
        address = fw.addresses["web"]
        size = 4_000_000
        # Slow readers keep the transfers in flight across the update.
        transfers = [
            asyncio.ensure_future(fetch(address, size, read_delay=0.01)) for _ in range(6)
        ]
        await eventually(
            lambda: sum(e["active"] for e in fw.stats()["web"]["endpoints"].values()) == 6
        )
        # The forwarder counts a connection once its connect is done; a backend once it
        # has run its accept: wait for both, so ``a.accepted`` below is final.
        await eventually(lambda: a.accepted + b.accepted == 6)
        in_flight_on_a = fw.stats()["web"]["endpoints"][a.endpoint.address]["active"]
        fw.update([service("web", [b.endpoint])])
        draining = fw.stats()["web"]["endpoints"][a.endpoint.address]
        a_accepted = a.accepted
        after = [await who(address) for _ in range(10)]
        results = await asyncio.gather(*transfers)
        await eventually(lambda: fw.stats()["web"]["active"] == 0)
        final = fw.stats()["web"]
        await fw.stop()
        return in_flight_on_a, draining, (a_accepted, a.accepted), after, results, final

    in_flight_on_a, draining, (a_before, a_after), after, results, final = run_async(
        loop_kind, main()
    )
    assert in_flight_on_a == 3  # round robin sent half of the six there
    assert draining["removed"] and draining["active"] == in_flight_on_a
    assert a_after == a_before and after == ["b"] * 10  # new connections avoid it
    assert all(digest(r) == digest(payload(4_000_000)) for r in results)
    assert list(final["endpoints"]) == [f"127.0.0.1:{_only_port(final)}"]  # drained: gone
    assert final["active"] == 0


def _only_port(stats):
    (address,) = stats["endpoints"]
    return address.rsplit(":", 1)[1]


def test_updates_under_load_fail_no_request(loop_kind):
    """Twenty live updates (endpoint sets, weights, limits, a listener move) under traffic."""

    async def main():
        a, b, c = await backends("a", "b", "c")
        fw = Forwarder([service("web", [a.endpoint, b.endpoint])])
        await fw.start()
        address = fw.addresses["web"]
        stop = asyncio.Event()
        traffic = asyncio.ensure_future(steady_requests(address, stop, workers=8))
        sets = [
            [a.endpoint, b.endpoint, c.endpoint],
            [c.endpoint],
            [Endpoint("127.0.0.1", a.port, weight=0), b.endpoint],
            [a.endpoint, Endpoint("127.0.0.1", c.port, ready=False), b.endpoint],
        ]

        def served():
            return a.requests + b.requests + c.requests

        for i in range(20):
            fw.update([
                service("web", sets[i % len(sets)], listen=f"127.0.0.1:{address[1]}",
                        max_connections=1000 + i),
                service(f"extra-{i % 3}", [c.endpoint]),  # services come and go alongside
            ])
            mark = served()
            await eventually(lambda mark=mark: served() >= mark + 8)  # traffic flows on each set
        stop.set()
        answers, failures = await traffic
        names = fw.stats().keys()
        await fw.stop()
        return answers, failures, names

    answers, failures, names = run_async(loop_kind, main())
    assert failures == []
    assert len(answers) > 100 and set(answers) == {"a", "b", "c"}
    assert set(names) == {"web", "extra-1"} | ({"extra-0"} & set(names))


class _Silent(asyncio.Protocol):
    """Reads, then closes without a byte back: a backend dying mid-request."""

    def __init__(self, seen):
        self.seen = seen

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.seen.append(data)
        self.transport.close()

    def eof_received(self):
        self.seen.append(b"<eof>")


async def silent_backend():
    seen = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Silent(seen), "127.0.0.1", 0)
    return Endpoint("127.0.0.1", server.sockets[0].getsockname()[1]), seen


@pytest.mark.parametrize("retry", [True, False], ids=["retried", "not-retried"])
def test_a_connection_closed_without_an_answer_moves_to_the_next_endpoint(loop_kind, retry):
    async def main():
        (a,) = await backends("a")
        silent, seen = await silent_backend()
        fw = Forwarder([service("web", [silent, a.endpoint])], retry_unanswered=retry)
        await fw.start()
        answers = [await who(fw.addresses["web"]) for _ in range(4)]
        stats = fw.stats()["web"]["endpoints"][silent.address]
        await fw.stop()
        return answers, seen, stats

    answers, seen, stats = run_async(loop_kind, main())
    if retry:
        assert seen == [b"who\n"]  # one request reached it; then it was cooling down
        assert answers == ["a"] * 4  # that request was replayed on "a"
        assert stats["failures"] == 1 and stats["failed"]
    else:  # a plain L4 close: the client sees it, and round robin keeps going there
        assert seen == [b"who\n"] * 2
        assert sorted(answers) == ["", "", "a", "a"]
        assert stats["failures"] == 0


def test_no_replay_once_the_client_has_finished_sending(loop_kind):
    """An upload (data, then FIN) that the endpoint takes silently is not sent twice."""

    async def main():
        (a,) = await backends("a")
        silent, seen = await silent_backend()
        fw = Forwarder([service("web", [silent, a.endpoint], scheduler="rr")], connect_timeout=0.5)
        await fw.start()
        replies = []
        for _ in range(2):  # round robin: one of the two lands on the silent endpoint
            reader, writer = await open_client(fw.addresses["web"])
            writer.write(b"upload")
            writer.write_eof()
            replies.append(await reader.read())
            writer.close()
        await eventually(lambda: fw.stats()["web"]["active"] == 0)  # a replay would be made by now
        await fw.stop()
        return replies, seen, a.requests

    replies, seen, a_requests = run_async(loop_kind, main())
    assert seen[0] == b"upload" and seen.count(b"upload") == 1
    assert replies == [b"", b""] and a_requests == 0  # "a" got an EOF'd upload, no line
