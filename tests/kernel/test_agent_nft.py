"""The agent with its nft sink against the real ``nft`` in a network namespace, with real
TCP connections through the VIPs (the same topology as test_agent_iptables.py)."""

from __future__ import annotations

import asyncio
import collections
import logging
import re

import pytest
from _iptables_netns import Netns, kernel

from lbcore import Endpoint, Service
from lbcore.agent import Agent
from lbcore.agent.sinks.commands import local_runner
from lbcore.agent.sinks.nft import NftSink
from lbcore.render import nft
from lbcore.sources.live import Snapshot

pytestmark = kernel

VIP, OTHER_VIP = "127.1.0.1", "127.1.0.2"
SOURCE = "test://services"
FOREIGN = "table ip foreign {\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tip daddr 203.0.113.8 return\n\t}\n}\n"


def netns_runner(ns: Netns):
    def run(argv, input, timeout):
        return local_runner(["ip", "netns", "exec", ns.name, *argv], input, timeout)

    return run


def web(*ports: int, vip: str = VIP, name: str = "web", **fields) -> Service:
    return Service(name, vip, 80, endpoints=[Endpoint("127.0.0.1", p) for p in ports], **fields)


class _Named:
    source = SOURCE
    connected = True


class Driver:
    def __init__(self, ns: Netns, runner=None, clock=None) -> None:
        self.sink = NftSink(runner=runner or netns_runner(ns), timeout=30)
        self.agent = Agent([_Named()], self.sink, min_sync_period=0, sync_period=3600,
                           **({"clock": clock} if clock else {}))
        self.loop = asyncio.new_event_loop()

    def sync(self, *services: Service) -> bool:
        self.agent.receive(Snapshot(SOURCE, services, (), self.loop.time()))
        return self.loop.run_until_complete(self.agent.sync())


def table(ns: Netns) -> str:
    """lbcore's table as a set of lines (nft lists set elements in hash order)."""
    text = ns.run("nft", "list", "table", "ip", "lbcore", check=False).stdout
    return "\n".join(sorted(line.strip().rstrip(",") for line in text.splitlines() if line.strip()))


def fresh(services: list[Service]) -> str:
    with Netns() as clean:
        clean.run("nft", "-f", "-", input=nft.render(services))
        return table(clean)


def without_clients(lines: str) -> str:
    """`table` without the clients the affinity maps hold (the only elements that expire)."""
    return "\n".join(line for line in lines.split("\n") if " expires " not in line)


def clients(n: int) -> list[str]:
    return [f"127.2.{i // 250}.{1 + i % 250}" for i in range(n)]


def ports(ns: Netns, vip: str, n: int) -> set[int]:
    return {int(a.split()[0]) for a in ns.connect(vip, 80, [None] * n)}


@pytest.fixture
def ns():
    with Netns() as netns:
        netns.serve("127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003", f"{VIP}:80", f"{OTHER_VIP}:80")
        yield netns


def test_full_then_partial_syncs_land_on_the_full_state_and_traffic_follows(ns):
    driver = Driver(ns)
    ns.run("nft", "-f", "-", input=FOREIGN)
    ns.run("nft", "-f", "-", input=nft.render([web(18003, vip=OTHER_VIP, name="stale")]))  # an earlier run's
    assert driver.sync(web(18001, 18002))
    assert table(ns) == fresh([web(18001, 18002)])  # the stale service is gone
    assert ports(ns, VIP, 40) == {18001, 18002}
    assert ns.connect(OTHER_VIP, 80, [None]) == ["80 127.0.0.1"]
    second = [web(18003), web(18001, vip=OTHER_VIP, name="other", scheduler="sh")]
    assert driver.sync(*second)
    assert driver.agent.syncs == {"full": 1, "partial": 1}
    assert table(ns) == fresh(second)
    assert ports(ns, VIP, 10) == {18003} and ports(ns, OTHER_VIP, 5) == {18001}
    assert "table ip foreign" in ns.run("nft", "list", "ruleset").stdout


def test_a_refused_transaction_changes_nothing_and_the_full_resync_lands(ns):
    bad = {"left": 0}

    def faulty(argv, input, timeout):
        if bad["left"] and argv[0] == "nft":
            bad["left"] -= 1
            input += "add element ip lbcore no-such-map { 1.2.3.4 }\n"
        return netns_runner(ns)(argv, input, timeout)

    driver = Driver(ns, faulty)
    assert driver.sync(web(18001, 18002))
    before = table(ns)
    bad["left"] = 1
    assert not driver.sync(web(18003))
    assert table(ns) == before  # one transaction: nothing of it applied
    assert ports(ns, VIP, 20) == {18001, 18002}
    assert driver.loop.run_until_complete(driver.agent.sync())
    assert driver.agent.syncs == {"full": 2, "partial": 0}
    assert table(ns) == fresh([web(18003)])
    assert ports(ns, VIP, 10) == {18003}


def test_cleanup_removes_lbcores_tables_only(ns):
    driver = Driver(ns)
    ns.run("nft", "-f", "-", input=FOREIGN)
    assert driver.sync(web(18001))
    driver.loop.run_until_complete(driver.sink.cleanup())
    ruleset = ns.run("nft", "list", "ruleset").stdout
    assert "lbcore" not in ruleset and "table ip foreign" in ruleset
    assert ns.connect(VIP, 80, [None]) == ["80 127.0.0.1"]


def test_what_nft_cannot_run_is_refused_by_name():
    sink = NftSink()
    assert sink.refuse(web(1, scheduler="mh")) is None
    assert sink.refuse(web(1, scheduler="wlc")) == (
        "scheduler: 'wlc' cannot run in nft mode (no connection counts); use one of rr, wrr, dh, sh, mh, "
        "or --fallback to run it as wrr")
    assert NftSink(fallback=True).refuse(web(1, scheduler="wlc")) is None


def test_sticky_clients_keep_their_endpoints_across_the_periodic_full_sync(ns, caplog):
    now = [0.0]
    driver = Driver(ns, clock=lambda: now[0])
    sticky = web(18001, 18002, 18003, affinity_timeout=600)
    assert driver.sync(sticky, web(18001, 18002, vip=OTHER_VIP, name="other"))
    sources = clients(1000)
    first = ns.connect(VIP, 80, sources)
    assert {a.split()[0] for a in first} == {"18001", "18002", "18003"}
    now[0] += 3600  # a sync period later: the next sync is full
    later = [sticky, web(18003, vip="127.1.0.3", name="added")]
    assert driver.sync(*later)
    assert driver.agent.syncs == {"full": 2, "partial": 0}
    assert ns.connect(VIP, 80, sources) == first  # 0 moved
    assert ns.connect("127.1.0.3", 80, [None]) == ["18003 127.0.0.1"]
    assert ns.connect(OTHER_VIP, 80, [None]) == ["80 127.0.0.1"]  # gone: the sentinel answers
    assert " expires " in table(ns) and without_clients(table(ns)) == fresh(later)
    assert "refused" not in caplog.text


def test_a_table_the_in_place_sync_cannot_take_is_replaced(ns, caplog):
    # A set declared otherwise (as another lbcore version might have): the in-place
    # payload declares it again, the kernel refuses that, and the sink replaces the
    # tables instead.
    ns.run("nft", "-f", "-", input="table ip lbcore { set hairpin { typeof ct id . ip saddr; flags timeout; }; }")
    driver = Driver(ns)
    with caplog.at_level(logging.WARNING, "lbcore.agent"):
        assert driver.sync(web(18001, 18002))
    assert "the in-place full sync was refused, replacing lbcore's tables instead" in caplog.text
    assert "File exists" in caplog.text
    assert table(ns) == fresh([web(18001, 18002)])
    assert ports(ns, VIP, 20) == {18001, 18002}


def test_a_name_nft_syntax_cannot_carry_is_replaced_with_the_table(ns, caplog):
    # nft's JSON input takes any chain name; the renderer will not write one that nft's
    # own syntax cannot parse back, so the sink replaces the tables.
    driver = Driver(ns)
    assert driver.sync(web(18001))
    hostile = '{"nftables": [{"add": {"chain": {"family": "ip", "table": "lbcore", "name": "x; flush ruleset"}}}]}'
    ns.run("nft", "-j", "-f", "-", input=hostile)
    ns.run("nft", "-f", "-", input=FOREIGN)
    driver.agent.applied = None  # the next sync is full
    with caplog.at_level(logging.WARNING, "lbcore.agent"):
        assert driver.sync(web(18002))
    assert "existing[" in caplog.text and "'x; flush ruleset' is not an nft name" in caplog.text
    assert table(ns) == fresh([web(18002)])
    assert "table ip foreign" in ns.run("nft", "list", "ruleset").stdout
