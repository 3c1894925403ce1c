"""A fleet: two nodes (two network namespaces, each with its own iptables and backends)
whose agents watch one three-member etcd cluster, with real traffic through the VIPs.

Each agent runs in the test process and watches etcd on 127.0.0.1 through its own etcd
source (`lbcore.sources.live.open_source`); its iptables sink runs every command line,
exactly as built, inside its node's namespace (``ip netns exec``).  Each agent reaches
the members through relays (tests/etcd_support.py), so a test can cut one agent off
while etcd keeps running and changing behind its back.

What is proved, in order, on one cluster:
1. a service added, an endpoint removed, a weight changed in etcd: both nodes carry
   identical lbcore rules within 1 s, and traffic follows;
2. a member killed: both agents keep syncing through the others;
3. every member stopped: the rules stay exactly as they were and traffic keeps flowing;
   /healthz turns 503 once the loss of contact is older than 2 x the sync period; a
   change written as the members come back is caught up;
4. the agents cut off from every member (their relays cut) while etcd runs on: changes
   and a compaction made meanwhile are all caught up after the return (the compaction
   forces a new list), and /healthz is 503 meanwhile;
5. a bad value in one key: that key is reported, the rest served.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import time

import pytest
from _iptables_netns import Netns, kernel

import etcd_support
from lbcore import Endpoint, Service
from lbcore.agent import Agent
from lbcore.agent.sinks.commands import local_runner
from lbcore.agent.sinks.iptables import IptablesSink
from lbcore.render import ipset, iptables
from lbcore.sources.live import open_source

pytestmark = [*kernel, pytest.mark.etcd,
              pytest.mark.skipif(etcd_support.MISSING is not None, reason=etcd_support.MISSING or "")]

PREFIX = "/lbcore/services"
WEB_VIP, API_VIP = "127.1.0.1", "127.1.0.2"
PORTS = (18001, 18002, 18003)
SYNC_PERIOD = 2.0
#: The agents' reconnection bound: the etcd source's backoff, check period and timeout.
RECONNECT = 10 * (5 + 2 + 5)


def value(vip: str, endpoints: dict[int, int], **fields) -> str:
    """A service in lbcore's format (the name comes from the key): port -> weight."""
    return json.dumps({"vip": vip, "port": 80, **fields,
                       "endpoints": [{"ip": "127.0.0.1", "port": p, "weight": w} for p, w in endpoints.items()]})


def service(name: str, vip: str, endpoints: dict[int, int], **fields) -> Service:
    """The model `value` describes under the key ``name``."""
    return Service(name, vip, 80, endpoints=[Endpoint("127.0.0.1", p, weight=w) for p, w in endpoints.items()],
                   **fields)


def expected(*services: Service) -> str:
    """The ruleset a fresh node gets from the full payload of ``services``."""
    with Netns() as clean:
        clean.ipset_restore(ipset.render(services))
        clean.iptables_restore(iptables.render(services, install=True))
        return clean.ruleset()


class Node:
    def __init__(self, ns: Netns, spec: str) -> None:
        self.ns = ns

        def runner(argv, input, timeout):
            return local_runner(["ip", "netns", "exec", ns.name, *argv], input, timeout)

        self.agent = Agent([open_source(spec)], IptablesSink(runner=runner, timeout=30),
                           min_sync_period=0.1, sync_period=SYNC_PERIOD)

    async def ruleset(self) -> str:
        return await asyncio.to_thread(self.ns.ruleset)

    async def ports(self, vip: str, count: int) -> collections.Counter:
        answers = await asyncio.to_thread(self.ns.connect, vip, 80, [None] * count)
        return collections.Counter(int(a.split()[0]) for a in answers)


async def until(condition, timeout: float) -> float:
    """Await ``condition()`` (an async predicate); the seconds it took."""
    start = time.monotonic()
    while not await condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def converged(nodes: list[Node], *services: Service, timeout: float) -> float:
    """Both nodes carry exactly the rules of ``services``; the seconds it took."""
    want = await asyncio.to_thread(expected, *services)

    return await until(_async_all(nodes, want), timeout)


def in_binomial(count: int, total: int, share: float) -> bool:
    return abs(count - total * share) <= 5 * math.sqrt(total * share * (1 - share))


@pytest.fixture
def nodes():
    with Netns() as a, Netns() as b:
        for ns in (a, b):
            ns.serve(*(f"127.0.0.1:{p}" for p in PORTS), f"{WEB_VIP}:80", f"{API_VIP}:80")
        yield a, b


def test_two_agents_on_one_etcd_cluster_agree_and_survive_its_faults(tmp_path, nodes):
    with etcd_support.EtcdCluster(tmp_path / "etcd", size=3) as cluster:
        asyncio.run(_fleet(cluster, nodes))


async def _fleet(cluster, namespaces) -> None:
    put = lambda key, text: asyncio.to_thread(cluster.put, f"{PREFIX}/{key}", text)  # noqa: E731
    relays = [[await etcd_support.Relay(m.client_port).start() for m in cluster.members] for _ in namespaces]
    nodes = [Node(ns, f"etcd://{','.join(r.endpoint for r in node_relays)}{PREFIX}")
             for ns, node_relays in zip(namespaces, relays)]
    await put("web", value(WEB_VIP, {18001: 1, 18002: 1}))
    tasks = [asyncio.create_task(node.agent.run()) for node in nodes]
    try:
        # -- 1. the fleet follows etcd ------------------------------------------------
        await converged(nodes, service("web", WEB_VIP, {18001: 1, 18002: 1}), timeout=RECONNECT)
        for node in nodes:
            assert set(await node.ports(WEB_VIP, 40)) == {18001, 18002}
        api = service("api", API_VIP, {18003: 1})
        steps = [
            ("api", value(API_VIP, {18003: 1}), [service("web", WEB_VIP, {18001: 1, 18002: 1}), api]),
            ("web", value(WEB_VIP, {18001: 1}), [service("web", WEB_VIP, {18001: 1}), api]),
            ("web", value(WEB_VIP, {18001: 1, 18002: 3}, scheduler="wrr"),
             [service("web", WEB_VIP, {18001: 1, 18002: 3}, scheduler="wrr"), api]),
        ]
        took = []
        for key, text, state in steps:
            want = await asyncio.to_thread(expected, *state)  # made before the write: not timed
            start = time.monotonic()  # etcdctl's own run (put, then a status read) is counted in
            await put(key, text)
            await until(_async_all(nodes, want), 5)
            took.append(time.monotonic() - start)
        assert max(took) < 1.0, f"seconds from the etcd write to both nodes' rules: {took}"
        for node in nodes:
            assert set(await node.ports(API_VIP, 10)) == {18003}
            counts = await node.ports(WEB_VIP, 400)
            assert set(counts) == {18001, 18002} and in_binomial(counts[18002], 400, 0.75), counts

        # -- 2. a member killed -----------------------------------------------------------
        await asyncio.to_thread(cluster.kill, 0)
        web = service("web", WEB_VIP, {18001: 1, 18002: 3}, scheduler="wrr")
        await put("api", value(API_VIP, {18002: 1}))
        await converged(nodes, web, service("api", API_VIP, {18002: 1}), timeout=RECONNECT)
        for node in nodes:
            assert set(await node.ports(API_VIP, 10)) == {18002}
        await asyncio.to_thread(cluster.restart, 0)

        # -- 3. every member stopped --------------------------------------------------------
        before = [await node.ruleset() for node in nodes]
        await asyncio.to_thread(cluster.stop, 0, 1, 2)
        for node in nodes:
            await until(_async(lambda n=node: not n.agent.health()[0]), RECONNECT)
            assert "out of contact" in json.loads(node.agent.healthz().text)["reason"]
        for node, rules in zip(nodes, before):
            assert await node.ruleset() == rules  # exactly as they were
            assert set(await node.ports(WEB_VIP, 20)) == {18001, 18002}  # and traffic flows
        await asyncio.to_thread(cluster.start)
        await put("api", value(API_VIP, {18001: 1}))  # while the agents are still backing off
        await converged(nodes, web, service("api", API_VIP, {18001: 1}), timeout=RECONNECT)
        for node in nodes:
            await until(_async(lambda n=node: n.agent.health()[0]), RECONNECT)

        # -- 4. cut off from every member while etcd changes and compacts -----------------------
        before = [await node.ruleset() for node in nodes]
        for node_relays in relays:
            for relay in node_relays:
                relay.sever()
        for node in nodes:
            await until(_async(lambda n=node: not n.agent.sources[0].connected), RECONNECT)
        # changes and a compaction the agents cannot see while cut off
        await put("web", value(WEB_VIP, {18003: 1}))
        await put("db", value("127.1.0.3", {18001: 1}))
        await asyncio.to_thread(cluster.delete, f"{PREFIX}/api")
        await asyncio.to_thread(cluster.compact)
        for node in nodes:  # the agents notice within their contact check
            await until(_async(lambda n=node: not n.agent.health()[0]), 2 * SYNC_PERIOD + 5)
            reply = node.agent.healthz()
            assert reply.status == 503 and "out of contact" in json.loads(reply.text)["reason"]
        for node, rules in zip(nodes, before):
            assert await node.ruleset() == rules  # exactly as they were
            assert set(await node.ports(WEB_VIP, 20)) == {18001, 18002}  # and traffic flows
        for node_relays in relays:
            for relay in node_relays:
                relay.restore()
        await converged(nodes, service("web", WEB_VIP, {18003: 1}), service("db", "127.1.0.3", {18001: 1}),
                        timeout=RECONNECT)
        for node in nodes:
            assert set(await node.ports(WEB_VIP, 10)) == {18003}
            assert await until(_async(lambda n=node: n.agent.health()[0]), RECONNECT) >= 0

        # -- 5. a bad value in one key ----------------------------------------------------------
        await put("broken", json.dumps({"vip": "127.1.0.9", "port": 0}))
        await put("db", value("127.1.0.3", {18002: 1}))
        await converged(nodes, service("web", WEB_VIP, {18003: 1}), service("db", "127.1.0.3", {18002: 1}),
                        timeout=5)
        for node in nodes:
            problems = node.agent.tracker.problems()
            assert len(problems) == 1 and f"{PREFIX}/broken" in problems[0] and "port" in problems[0]
            assert set(await node.ports("127.1.0.3", 10)) == {18002}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node_relays in relays:
            for relay in node_relays:
                await relay.close()


def _async_all(nodes: list[Node], want: str):
    async def check() -> bool:
        return all([await node.ruleset() == want for node in nodes])

    return check


def _async(predicate):
    async def check() -> bool:
        return predicate()

    return check
