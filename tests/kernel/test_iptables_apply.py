"""Applying the payloads with the real ``iptables-restore --noflush`` and ``ipset restore``
in a namespace: install once, sync any number of times with no change, never duplicate
the jumps, never touch a chain lbcore does not own, and a partial sync lands exactly
where a full payload of the new state does.
"""

from __future__ import annotations

import random
import re

import pytest
from _iptables_netns import Netns, kernel

from lbcore import Endpoint, Service
from lbcore.render import ipset, iptables

from test_render_iptables import golden_services

pytestmark = kernel

# Another tool's rules: a chain of its own in each table and jumps from built-in chains.
FOREIGN = """*filter
:FOREIGN - [0:0]
-A FOREIGN -s 203.0.113.7/32 -j DROP
-A INPUT -j FOREIGN
-A OUTPUT -j FOREIGN
COMMIT
*nat
:FOREIGN - [0:0]
-A FOREIGN -d 203.0.113.8/32 -j RETURN
-A PREROUTING -j FOREIGN
-A POSTROUTING -j FOREIGN
COMMIT
"""


@pytest.fixture
def ns():
    with Netns() as netns:
        netns.iptables_restore(FOREIGN)
        yield netns


def raw_save(ns: Netns) -> str:
    # Exactly the ruleset: only the "# Generated ... on <date>" lines and counters differ.
    text = ns.run("iptables-save").stdout
    return re.sub(r"\[\d+:\d+\]", "[0:0]", "\n".join(l for l in text.splitlines() if not l.startswith("#")))


def services() -> list[Service]:
    return [
        Service("ns1/web:http", "10.96.0.10", 80, endpoints=[Endpoint("10.1.0.1", 8080), Endpoint("10.1.0.2", 8080)]),
        Service("ns1/dns:dns", "10.96.0.53", 53, protocol="udp", affinity_timeout=30,
                endpoints=[Endpoint("10.1.0.3", 53)]),
        Service("ns2/empty:http", "10.96.0.11", 80),
    ]


def hooks(ns: Netns) -> list[str]:
    return [l for l in raw_save(ns).splitlines() if re.match(r"-A [A-Z]+ .*-j LBCORE-", l)]


def test_install_then_sync_twice_leaves_the_same_ruleset(ns):
    foreign_before = [l for l in raw_save(ns).splitlines() if "FOREIGN" in l]
    ns.ipset_restore(ipset.render(services()))
    ns.iptables_restore(iptables.render(services(), install=True))
    installed = raw_save(ns)
    ns.iptables_restore(iptables.render(services()))
    once = raw_save(ns)
    ns.iptables_restore(iptables.render(services()))
    assert raw_save(ns) == once == installed
    # One jump from each hooked built-in chain, first in it (inserted at position 1).
    assert sorted(h.split()[1] for h in hooks(ns)) == sorted(b for _, b, _ in iptables.HOOKS)
    for table in ("filter", "nat"):
        rules = ns.run("iptables-save", "-t", table).stdout.splitlines()
        for _, builtin, _ in (h for h in iptables.HOOKS if h[0] == table):
            first = next(l for l in rules if l.startswith(f"-A {builtin} "))
            assert "-j LBCORE-" in first
    # The foreign chains and jumps are all still there.
    assert [l for l in once.splitlines() if "FOREIGN" in l] == foreign_before


def test_install_on_an_installed_node_fails_and_changes_nothing(ns):
    ns.ipset_restore(ipset.render(services()))
    ns.iptables_restore(iptables.render(services(), install=True))
    before = raw_save(ns)
    again = ns.iptables_restore(iptables.render(services(), install=True), check=False)
    assert again.returncode != 0 and "Chain already exists" in again.stderr
    assert raw_save(ns) == before
    assert len(hooks(ns)) == len(iptables.HOOKS)


def test_sync_on_a_fresh_node_fails_and_changes_nothing(ns):
    before = raw_save(ns)
    ns.ipset_restore(ipset.render(services()))
    payload = iptables.render(services())
    done = ns.iptables_restore(payload, check=False)
    assert done.returncode != 0
    failed = int(re.search(r"line (\d+) failed", done.stderr).group(1))
    assert payload.splitlines()[failed - 1].startswith("-C INPUT ")
    assert payload.splitlines()[failed - 2].startswith("# lbcore: a failing -C line")
    assert raw_save(ns) == before


def test_ipset_payload_applies_twice_and_keeps_clients(ns):
    ns.ipset_restore(ipset.render(services()))
    [name] = ns.set_names()
    ns.run("ipset", "add", name, "10.2.0.1", "timeout", "30")
    ns.ipset_restore(ipset.render(services()))
    assert ns.set_names() == [name]
    assert "10.2.0.1 timeout" in ns.run("ipset", "list", name).stdout


def random_services(rng: random.Random, names: list[str], first: int = 0) -> list[Service]:
    result = []
    for i, name in enumerate(names, first):
        endpoints = [
            Endpoint(f"10.{i}.0.{j}", 8080, weight=rng.choice([0, 1, 1, 2, 5]),
                     ready=rng.random() > 0.2, terminating=rng.random() < 0.3)
            for j in rng.sample(range(1, 12), rng.randint(0, 5))
        ]
        result.append(Service(
            name, f"10.96.{i}.1", rng.choice([80, 443]), protocol=rng.choice(["tcp", "udp"]),
            scheduler=rng.choice(["rr", "wrr"]), endpoints=endpoints,
            affinity_timeout=rng.choice([None, 60, 10800]),
        ))
    return result


def mutate(rng: random.Random, old: list[Service]) -> list[Service]:
    new = [s for s in old if rng.random() > 0.15]  # some Services go away
    new += random_services(rng, [f"ns9/new{i}:p" for i in range(3)], first=100)
    for i in rng.sample(range(len(new)), len(new) // 3):  # others change
        fresh = random_services(rng, [new[i].name])[0]
        # Some endpoints kept, some new, some with new conditions or weights.
        endpoints = {(e.ip, e.port): e for e in new[i].endpoints[:2] + fresh.endpoints[:3]}
        new[i] = Service(new[i].name, new[i].vip, new[i].port, protocol=new[i].protocol,
                         scheduler=fresh.scheduler, endpoints=list(endpoints.values()),
                         affinity_timeout=fresh.affinity_timeout)
    return new


@pytest.mark.parametrize("seed", range(4))
def test_partial_sync_lands_where_the_full_payload_does(seed):
    rng = random.Random(seed)
    old = random_services(rng, [f"ns{i % 3}/svc{i}:p" for i in range(30)])
    new = mutate(rng, old)
    with Netns() as partial, Netns() as full:
        for netns in (partial, full):
            netns.iptables_restore(FOREIGN)
        partial.ipset_restore(ipset.render(old))
        partial.iptables_restore(iptables.render(old, install=True))
        diff = iptables.render_diff(old, new)
        assert diff
        partial.ipset_restore(ipset.render_diff(old, new))
        partial.iptables_restore(diff)
        partial.ipset_restore(ipset.render_cleanup(old, new))

        full.ipset_restore(ipset.render(new))
        full.iptables_restore(iptables.render(new, install=True))
        assert partial.ruleset() == full.ruleset()
        assert partial.set_names() == full.set_names()


def test_partial_sync_from_the_wrong_state_fails_and_changes_nothing(ns):
    old = services()
    new = old[:1]  # two Services removed: their rules are deleted by text
    ns.ipset_restore(ipset.render(new))
    ns.iptables_restore(iptables.render(new, install=True))
    before = raw_save(ns)
    diff = iptables.render_diff(old, new)
    done = ns.iptables_restore(diff, check=False)
    assert done.returncode != 0
    # It fails where it should: deleting a rule the node does not have.
    failed = int(re.search(r"line (\d+) failed", done.stderr).group(1))
    assert diff.splitlines()[failed - 1].startswith("-D LBCORE-SERVICES ")
    assert raw_save(ns) == before


def test_every_rule_shape_loads_into_the_kernel(ns):
    # The golden Services (udp, sctp, affinity, weights, no endpoint, loopback), names
    # that look like restore syntax, a name cut to fit xt_comment, and IPv6.
    services = golden_services() + [
        Service("COMMIT", "10.96.1.1", 80, endpoints=[Endpoint("10.1.0.1", 80)]),
        Service("ns/-j:ACCEPT", "10.96.1.2", 80, affinity_timeout=1, endpoints=[Endpoint("10.1.0.2", 80)]),
        Service("n" * 253, "10.96.1.3", 80, endpoints=[Endpoint("10.1.0.3", 65535)]),
        Service("ns/web6:http", "fd00::1", 80, affinity_timeout=86400,
                endpoints=[Endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535)]),
        Service("ns/empty6:http", "fd00::2", 80),
    ]
    ns.ipset_restore(ipset.render(services))
    ns.iptables_restore(iptables.render(services, install=True))
    ns.iptables_restore(iptables.render(services, family=6, install=True), ipv6=True)
    saved = ns.run("iptables-save").stdout + ns.run("ip6tables-save").stdout
    assert saved.count("--match-set") == len(ns.set_names()) == 3 + 1 + 1
    assert '--comment "COMMIT virtual IP"' in saved
    assert "-j DNAT --to-destination [ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535" in saved
