"""The etcd source against a real etcd: one member, and a three-member cluster with faults.

Writes go through etcdctl (tests/etcd_support.py), never through the source under test.
Snapshots are awaited with deadlines of ten times what the source needs at most: a
member change is immediate, a backoff round at most `Backoff.MOST` seconds.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from etcd_support import MISSING, EtcdCluster, Relay
from lbcore import ConfigError
from lbcore.sources import etcd as etcd_source
from lbcore.sources._watching import Backoff
from lbcore.sources.live import open_source

pytestmark = [pytest.mark.etcd, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

PREFIX = "/lbcore/services"
#: The longest a reconnection may take: a full backoff wait, a check period, a request timeout.
RECONNECT = Backoff.MOST + etcd_source.CHECK_EVERY + etcd_source.REQUEST_TIMEOUT
WAIT = 10 * RECONNECT


def value(vip: str, *endpoints: str, port: int = 80, **extra) -> str:
    return json.dumps({"vip": vip, "port": port, **extra,
                       "endpoints": [{"ip": ip, "port": 8080} for ip in endpoints]})


class Watch:
    """The snapshots of one source, taken with deadlines."""

    def __init__(self, spec: str):
        self.source = open_source(spec)
        self.snapshots = self.source.watch()

    async def next(self, timeout: float = WAIT):
        return await asyncio.wait_for(self.snapshots.__anext__(), timeout)

    async def until(self, predicate, timeout: float = WAIT):
        """The first snapshot for which ``predicate`` holds."""
        async def wait():
            async for snapshot in self.snapshots:
                if predicate(snapshot):
                    return snapshot
        return await asyncio.wait_for(wait(), timeout)

    async def close(self):
        await self.snapshots.aclose()


async def until_true(condition, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def table(snapshot):
    """name -> endpoint ips: what a snapshot serves, in a form a test can compare."""
    return {s.name: [e.ip for e in s.endpoints] for s in snapshot.services}


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdCluster(tmp_path_factory.mktemp("etcd-one"), size=1) as cluster:
        yield cluster


@pytest.fixture
def prefix(request):
    """A prefix of this test's own, so tests share the module's etcd."""
    return f"{PREFIX}/{request.node.name}"


@pytest.fixture
def cluster(tmp_path):
    with EtcdCluster(tmp_path / "etcd", size=3) as cluster:
        yield cluster


# -- the spec -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ("etcd://127.0.0.1:2379", "names no key PREFIX"),
    ("etcd://127.0.0.1:2379/", "names no key PREFIX"),
    ("etcd://127.0.0.1/lbcore", "has '127.0.0.1' where a member HOST:PORT belongs"),
    ("etcd://127.0.0.1:2379,:2380/lbcore", "has ':2380' where a member HOST:PORT belongs"),
    ("etcd://127.0.0.1:99999/lbcore", "has '127.0.0.1:99999' where a member HOST:PORT belongs"),
])
def test_a_bad_spec_is_refused_naming_it(spec, message):
    with pytest.raises(ConfigError, match=r"^source: ") as caught:
        open_source(spec)
    assert message in str(caught.value) and repr(spec) in str(caught.value)


def test_the_prefix_is_the_url_path_and_members_are_listed_in_order():
    source = open_source("etcd://127.0.0.1:2379,[::1]:2379,etcd.example:2379/lbcore/services/")
    assert source.members == ["127.0.0.1:2379", "[::1]:2379", "etcd.example:2379"]
    assert source.prefix == "/lbcore/services/"
    assert source.connected is False  # nothing is contacted before watch() runs


# -- one member: list, watch, values ---------------------------------------------------------


def test_list_then_watch_sees_puts_and_deletes_in_order(etcd, prefix):
    etcd.put(f"{prefix}/web", value("10.96.0.10", "10.1.0.1"))
    etcd.put(f"{prefix}/api", value("10.96.0.11", "10.1.0.2"))
    etcd.put(f"{prefix}x/other", value("10.96.0.99"))  # shares the text, not the prefix

    async def main():
        watch = Watch(etcd.spec(prefix))
        seen = [table(await watch.next())]
        assert watch.source.connected
        steps = [
            lambda: etcd.put(f"{prefix}/db", value("10.96.0.12", "10.1.0.3")),
            lambda: etcd.put(f"{prefix}/web", value("10.96.0.10", "10.1.0.1", "10.1.0.4")),
            lambda: etcd.delete(f"{prefix}/api"),
        ]
        for step in steps:
            await asyncio.to_thread(step)
            seen.append(table(await watch.next()))
        await watch.close()
        return seen

    assert run(main()) == [
        {"api": ["10.1.0.2"], "web": ["10.1.0.1"]},
        {"api": ["10.1.0.2"], "db": ["10.1.0.3"], "web": ["10.1.0.1"]},
        {"api": ["10.1.0.2"], "db": ["10.1.0.3"], "web": ["10.1.0.1", "10.1.0.4"]},
        {"db": ["10.1.0.3"], "web": ["10.1.0.1", "10.1.0.4"]},
    ]


def test_values_in_yaml_or_json_and_names_with_slashes_from_the_key(etcd, prefix):
    etcd.put(f"{prefix}/shop/web:http", "vip: 10.96.0.10\nport: 80\nscheduler: wrr\n"
                                        "endpoints:\n- {ip: 10.1.0.1, port: 8080, weight: 3}\n")
    etcd.put(f"{prefix}/dns", value("10.96.0.53", port=53, protocol="udp", name="dns"))

    async def main():
        watch = Watch(etcd.spec(prefix))
        first = await watch.next()
        await watch.close()
        return first

    first = run(main())
    assert [(s.name, s.scheduler, s.protocol) for s in first.services] == [
        ("dns", "rr", "udp"), ("shop/web:http", "wrr", "tcp")]
    assert first.services[1].endpoints[0].weight == 3 and first.problems == ()


def test_a_bad_value_is_reported_naming_the_key_and_the_rest_is_served(etcd, prefix):
    etcd.put(f"{prefix}/web", value("10.96.0.10", "10.1.0.1"))
    etcd.put(f"{prefix}/api", value("10.96.0.11", port=0))
    etcd.put(f"{prefix}/db", value("10.96.0.12", name="database"))
    etcd.put(f"{prefix}/cache", "vip: [unclosed")
    etcd.put(f"{prefix}/z-web", value("10.96.0.10"))  # web's vip:port, in a later key

    async def main():
        watch = Watch(etcd.spec(prefix))
        first = await watch.next()
        await asyncio.to_thread(etcd.put, f"{prefix}/api", value("10.96.0.11"))
        fixed = await watch.next()
        await watch.close()
        return first, fixed

    first, fixed = run(main())
    assert table(first) == {"web": ["10.1.0.1"]}
    assert first.problems == (
        f"etcd key {prefix}/api: port: 0 is out of range; valid: 1..65535",
        f"etcd key {prefix}/cache: line 2: (end of file) is not valid YAML: did not find expected ',' or ']' (column 1)",
        f"etcd key {prefix}/db: name: 'database' differs from the key's name 'db'; leave it out or make them equal",
        f"etcd key {prefix}/z-web: port: '10.96.0.10:80/tcp' is already taken by service 'web' (etcd key {prefix}/web)",
    )
    assert sorted(table(fixed)) == ["api", "web"] and len(fixed.problems) == 3


def test_a_list_longer_than_a_page_is_read_whole_at_one_revision(etcd, prefix, monkeypatch):
    monkeypatch.setattr(etcd_source, "PAGE", 3)
    for i in range(8):
        etcd.put(f"{prefix}/s{i}", value(f"10.96.1.{i}"))

    async def main():
        watch = Watch(etcd.spec(prefix))
        first = await watch.next()
        await asyncio.to_thread(etcd.put, f"{prefix}/s8", value("10.96.1.8"))
        after = await watch.next()
        await watch.close()
        return first, after

    first, after = run(main())
    assert sorted(table(first)) == [f"s{i}" for i in range(8)]
    assert sorted(table(after)) == [f"s{i}" for i in range(9)]


def test_a_compaction_past_the_watch_lists_again_and_misses_nothing(etcd, prefix):
    etcd.put(f"{prefix}/web", value("10.96.0.10", "10.1.0.1"))
    etcd.put(f"{prefix}/api", value("10.96.0.11", "10.1.0.2"))

    async def main():
        relay = await Relay(etcd.members[0].client_port).start()
        watch = Watch(f"etcd://{relay.endpoint}{prefix}")
        first = await watch.next()
        relay.sever()  # the source loses etcd; etcd goes on without it
        await until_true(lambda: not watch.source.connected)
        await asyncio.to_thread(etcd.put, f"{prefix}/web", value("10.96.0.10", "10.1.0.5"))
        await asyncio.to_thread(etcd.delete, f"{prefix}/api")
        await asyncio.to_thread(etcd.put, f"{prefix}/db", value("10.96.0.12", "10.1.0.3"))
        await asyncio.to_thread(etcd.compact)  # the revisions the source would resume from are gone
        relay.restore()
        caught_up = await watch.next()
        connected = watch.source.connected
        await watch.close()
        await relay.close()
        return first, caught_up, connected

    first, caught_up, connected = run(main())
    assert table(first) == {"api": ["10.1.0.2"], "web": ["10.1.0.1"]}
    assert table(caught_up) == {"db": ["10.1.0.3"], "web": ["10.1.0.5"]} and connected


# -- three members: faults --------------------------------------------------------------


def test_one_member_killed_the_source_goes_on_through_another(cluster):
    cluster.put(f"{PREFIX}/web", value("10.96.0.10", "10.1.0.1"))

    async def main():
        watch = Watch(cluster.spec(PREFIX))
        first = await watch.next()
        cluster.kill(0)  # the member the source watches (it starts with the first listed)
        await asyncio.to_thread(cluster.put, f"{PREFIX}/web", value("10.96.0.10", "10.1.0.1", "10.1.0.2"))
        after = await watch.next()
        await asyncio.to_thread(cluster.put, f"{PREFIX}/api", value("10.96.0.11", "10.1.0.3"))
        later = await watch.next()
        connected = watch.source.connected
        await watch.close()
        return first, after, later, connected

    first, after, later, connected = run(main())
    assert table(first) == {"web": ["10.1.0.1"]}
    assert table(after) == {"web": ["10.1.0.1", "10.1.0.2"]}
    assert table(later) == {"api": ["10.1.0.3"], "web": ["10.1.0.1", "10.1.0.2"]} and connected


def test_all_members_stopped_the_source_keeps_its_set_and_catches_up_after(cluster):
    cluster.put(f"{PREFIX}/web", value("10.96.0.10", "10.1.0.1"))
    cluster.put(f"{PREFIX}/api", value("10.96.0.11", "10.1.0.2"))

    async def main():
        watch = Watch(cluster.spec(PREFIX))
        first = await watch.next()
        following = asyncio.ensure_future(watch.next(timeout=WAIT * 2))
        await asyncio.to_thread(cluster.stop, 0, 1, 2)
        await until_true(lambda: not watch.source.connected)
        await asyncio.sleep(2 * Backoff.MOST)  # through a few rounds of failed reconnection
        assert not following.done(), "a snapshot came while etcd was down"
        # two members come back (a quorum), the changes are written through them
        await asyncio.to_thread(cluster.restart, 1, 2)
        await asyncio.to_thread(cluster.put, f"{PREFIX}/web", value("10.96.0.10", "10.1.0.1", "10.1.0.7"))
        await asyncio.to_thread(cluster.delete, f"{PREFIX}/api")
        caught_up = await following
        if table(caught_up) != {"web": ["10.1.0.1", "10.1.0.7"]}:  # the two writes came apart
            caught_up = await watch.next()
        connected = watch.source.connected
        await watch.close()
        return first, caught_up, connected

    first, caught_up, connected = run(main())
    assert table(first) == {"api": ["10.1.0.2"], "web": ["10.1.0.1"]}
    assert table(caught_up) == {"web": ["10.1.0.1", "10.1.0.7"]} and connected


def test_a_member_cut_off_from_its_leader_is_left_for_one_that_has_quorum(cluster):
    cluster.put(f"{PREFIX}/web", value("10.96.0.10", "10.1.0.1"))

    async def main():
        watch = Watch(cluster.spec(PREFIX))
        await watch.next()
        # members 1 and 2 go: member 0, the one watched, runs on without a leader
        await asyncio.to_thread(cluster.stop, 1, 2)
        await until_true(lambda: not watch.source.connected)
        await asyncio.to_thread(cluster.restart, 1, 2)
        await asyncio.to_thread(cluster.put, f"{PREFIX}/api", value("10.96.0.11", "10.1.0.2"))
        after = await watch.until(lambda s: "api" in table(s))
        await watch.close()
        return after

    assert table(run(main())) == {"api": ["10.1.0.2"], "web": ["10.1.0.1"]}
