"""The agent with its iptables sink against the real ``iptables-restore``, ``iptables-save``
and ``ipset`` in a network namespace, with real TCP connections through the VIPs.

The agent runs in the test process; its sink's command runner puts ``ip netns exec NS``
in front of every command line, so each one runs, exactly as the agent builds it, in the
namespace (the node).  Backends and clients are those of tests/kernel/_iptables_netns.py,
with a sentinel server on the VIP itself: an answer from a backend port proves DNAT.
"""

from __future__ import annotations

import asyncio
import collections
import re

import pytest
from _iptables_netns import Netns, kernel

from lbcore import Endpoint, Service
from lbcore.agent import Agent
from lbcore.agent.sinks.commands import Result, local_runner
from lbcore.agent.sinks.iptables import IptablesSink
from lbcore.render import ipset, iptables
from lbcore.sources.live import Snapshot

pytestmark = kernel

VIP = "127.1.0.1"
OTHER_VIP = "127.1.0.2"
PORTS = [18001, 18002, 18003]
SOURCE = "test://services"

FOREIGN = """*nat
:FOREIGN - [0:0]
-A FOREIGN -d 203.0.113.8/32 -j RETURN
-A OUTPUT -j FOREIGN
COMMIT
"""


def netns_runner(ns: Netns, calls: list | None = None):
    def run(argv, input, timeout):
        if calls is not None:
            calls.append(list(argv))
        return local_runner(["ip", "netns", "exec", ns.name, *argv], input, timeout)

    return run


def web(*ports: int, vip: str = VIP, name: str = "web", **fields) -> Service:
    return Service(name, vip, 80, endpoints=[Endpoint("127.0.0.1", p) for p in ports], **fields)


@pytest.fixture
def ns():
    with Netns() as netns:
        netns.serve(*(f"127.0.0.1:{p}" for p in PORTS), f"{VIP}:80", f"{OTHER_VIP}:80")
        yield netns


class Driver:
    """An agent over one queue-less source: the test hands it each full set and syncs."""

    def __init__(self, ns: Netns, runner=None) -> None:
        self.sink = IptablesSink(runner=runner or netns_runner(ns), timeout=30)
        self.agent = Agent([_Named(SOURCE)], self.sink, min_sync_period=0, sync_period=3600)
        self.loop = asyncio.new_event_loop()

    def sync(self, *services: Service) -> bool:
        self.agent.receive(Snapshot(SOURCE, services, (), self.loop.time()))
        return self.loop.run_until_complete(self.agent.sync())

    def close(self) -> None:
        self.loop.close()


class _Named:
    def __init__(self, source: str) -> None:
        self.source = source
        self.connected = True


@pytest.fixture
def driver(ns):
    d = Driver(ns)
    yield d
    d.close()


def ports(answers: list[str]) -> collections.Counter:
    return collections.Counter(int(a.split()[0]) for a in answers)


def fresh_ruleset(services: list[Service]) -> str:
    """The ruleset a fresh node gets from the full payload of ``services``."""
    with Netns() as clean:
        clean.ipset_restore(ipset.render(services))
        clean.iptables_restore(iptables.render(services, install=True))
        return clean.ruleset()


def lbcore_sets(ns: Netns) -> list[str]:
    return [name for name in ns.set_names() if name.startswith("LBCORE-")]


def test_a_fresh_node_is_installed_then_synced_partially_and_traffic_follows(ns, driver):
    assert driver.sync(web(18001, 18002))
    assert set(ports(ns.connect(VIP, 80, [None] * 60))) == {18001, 18002}
    assert driver.sync(web(18003), web(18001, vip=OTHER_VIP, name="other", affinity_timeout=60))
    assert driver.agent.syncs == {"full": 1, "partial": 1}
    assert set(ports(ns.connect(VIP, 80, [None] * 30))) == {18003}
    assert set(ports(ns.connect(OTHER_VIP, 80, [None] * 10))) == {18001}
    new = [web(18001, vip=OTHER_VIP, name="other", affinity_timeout=60), web(18003)]
    assert ns.ruleset() == fresh_ruleset(new)  # the partial sync landed on the full state
    assert len(lbcore_sets(ns)) == 1  # the affinity set of other's endpoint
    assert driver.sync(web(18003))  # other leaves: its chains and its set go
    assert ns.ruleset() == fresh_ruleset([web(18003)])
    assert lbcore_sets(ns) == []
    assert ns.connect(OTHER_VIP, 80, [None]) == [f"80 127.0.0.1"]  # the sentinel: no rule left


def test_the_first_full_sync_removes_stale_rules_and_sets_and_keeps_foreign_ones(ns, driver):
    # What an earlier run left: a service that is gone since, with an affinity set, and
    # another tool's chain.
    old = [web(18001), web(18002, vip=OTHER_VIP, name="gone", affinity_timeout=60)]
    ns.ipset_restore(ipset.render(old))
    ns.iptables_restore(iptables.render(old, install=True))
    ns.iptables_restore(FOREIGN)
    assert len(lbcore_sets(ns)) == 1
    assert driver.sync(web(18003))
    with Netns() as clean:
        clean.iptables_restore(FOREIGN)
        clean.iptables_restore(iptables.render([web(18003)], install=True))
        expected = clean.ruleset()
    assert ns.ruleset() == expected
    assert lbcore_sets(ns) == []
    assert set(ports(ns.connect(VIP, 80, [None] * 10))) == {18003}
    assert ns.connect(OTHER_VIP, 80, [None]) == ["80 127.0.0.1"]


def test_a_full_sync_puts_back_a_deleted_jump_once(ns, driver):
    assert driver.sync(web(18001))
    installed = ns.ruleset()
    ns.run("iptables", "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "lbcore service portals",
           "-j", "LBCORE-SERVICES")
    assert ns.connect(VIP, 80, [None]) == ["80 127.0.0.1"]  # no DNAT without the jump
    driver.agent.applied = None  # as after a failure: the next sync is full
    assert driver.sync(web(18001))
    assert ns.ruleset() == installed
    assert ns.connect(VIP, 80, [None]) == ["18001 127.0.0.1"]


def test_a_failed_restore_changes_nothing_and_the_full_resync_that_follows_lands(ns):
    # The runner puts one bad rule in the next iptables-restore payload, as a bad element
    # reaching the kernel would: the nat table refuses the whole transaction.
    bad = {"left": 0}

    def faulty(argv, input, timeout):
        if argv[0] == "iptables-restore" and bad["left"]:
            bad["left"] -= 1
            input = input.replace("*nat\n", "*nat\n-A LBCORE-NO-SUCH-CHAIN -j ACCEPT\n", 1)
        return netns_runner(ns)(argv, input, timeout)

    driver = Driver(ns, faulty)
    try:
        assert driver.sync(web(18001, 18002))
        before = ns.ruleset()
        bad["left"] = 1
        assert not driver.sync(web(18003))
        assert ns.ruleset() == before  # nothing half-applied: the nat table refused it all
        assert set(ports(ns.connect(VIP, 80, [None] * 30))) == {18001, 18002}
        assert driver.agent.applied is None and driver.agent.tracker.pending
        assert driver.loop.run_until_complete(driver.agent.sync())  # the retry
        assert driver.agent.syncs == {"full": 2, "partial": 0}
        assert ns.ruleset() == fresh_ruleset([web(18003)])
        assert set(ports(ns.connect(VIP, 80, [None] * 10))) == {18003}
        failures = driver.agent.metrics.registry.get_sample_value(
            "lbcore_sync_proxy_rules_failures_total", {"sync": "partial"})
        assert failures == 1
    finally:
        driver.close()


def test_ipv6_services_go_through_ip6tables_and_ipv4_only_nodes_leave_ip6tables_alone(ns):
    calls: list = []
    driver = Driver(ns, netns_runner(ns, calls))
    try:
        assert driver.sync(web(18001))
        assert not re.search(r"LBCORE", ns.run("ip6tables-save").stdout)
        assert ["ip6tables-restore"] not in [c[:1] for c in calls]
        v6 = Service("web6", "fd00::1", 80, endpoints=[Endpoint("::1", 18001)])
        assert driver.sync(web(18001), v6)
        saved6 = ns.run("ip6tables-save").stdout
        assert "-A LBCORE-SERVICES" in saved6 and "--to-destination [::1]:18001" in saved6
    finally:
        driver.close()


def test_cleanup_removes_everything_lbcore_owns_and_nothing_else(ns, driver):
    ns.iptables_restore(FOREIGN)
    assert driver.sync(web(18001), web(18002, vip=OTHER_VIP, name="sticky", affinity_timeout=60))
    asyncio.run(driver.sink.cleanup())
    saved = ns.run("iptables-save").stdout
    assert "LBCORE" not in saved
    assert "-A OUTPUT -j FOREIGN" in saved and ":FOREIGN" in saved
    assert lbcore_sets(ns) == []
    assert ns.connect(VIP, 80, [None]) == ["80 127.0.0.1"]
    asyncio.run(driver.sink.cleanup())  # again: nothing left to remove, no error


def test_a_scheduler_iptables_cannot_express_is_refused_and_the_rest_served(ns, driver):
    lc = Service("lc", OTHER_VIP, 80, scheduler="lc", endpoints=[Endpoint("127.0.0.1", 18002)])
    assert driver.sync(web(18001), lc)
    assert driver.agent.tracker.problems() == (
        f"{SOURCE}: lc: scheduler: 'lc' cannot be expressed in iptables mode (no connection counts, "
        "no hashing); use rr or wrr, or --fallback to run it as rr",)
    assert ns.connect(OTHER_VIP, 80, [None]) == ["80 127.0.0.1"]
    assert ns.connect(VIP, 80, [None]) == ["18001 127.0.0.1"]
