"""The full payload synced in place (``render(..., existing=...)``) with the real ``nft``
in a namespace: sticky clients keep their endpoints across it while Services come and
go and stale objects disappear; a changed affinity timeout gets a fresh map; the
tables list exactly as the replacing payload leaves them on an empty node, but for
the clients in the affinity maps; a refused transaction changes nothing.

Topology as in test_nft_traffic.py: backends on 127.0.0.1, vips and client addresses
elsewhere in 127/8, a sentinel on each vip so an answer really is a DNAT.  ``existing``
is read back as the agent's nft sink reads it (`read_existing`).
"""

from __future__ import annotations

import collections
import json
import random
import re

import pytest
from _nft_netns import FOREIGN, NftNetns, kernel
from test_nft_apply import TABLES, mutate, random_services
from test_nft_traffic import PORTS, backend_ports, clients, endpoints, visit

from lbcore import Endpoint, Service
from lbcore.agent.sinks.nft import read_existing
from lbcore.render import nft

pytestmark = kernel

STICKY, OTHER, ADDED = "127.1.0.1", "127.1.0.2", "127.1.0.3"


@pytest.fixture
def ns():
    with NftNetns() as netns:
        netns.nft(FOREIGN)
        yield netns


def existing(ns: NftNetns) -> set[tuple[str, str, str]]:
    return read_existing(ns.run("nft", "-j", "-t", "list", kind).stdout for kind in ("chains", "maps", "sets"))


def in_place(ns: NftNetns, services: list[Service]) -> str:
    """The full payload for ``services`` given what ``ns`` holds now, applied."""
    payload = nft.render(services, existing=existing(ns))
    ns.nft(payload)
    return payload


def without_clients(listing: str) -> str:
    """A `NftNetns.ruleset` listing with the affinity maps' elements taken out."""
    return re.sub(r"(\tmap affinity-[^\n]*\n(?:\t\t(?!elements)[^\n]*\n)*)\t\telements = [^\n]*\n", r"\1", listing)


def clients_held(ns: NftNetns, name: str) -> dict[str, str]:
    """Client -> endpoint id in the affinity map ``name`` of ip lbcore."""
    listed = ns.run("nft", "-j", "list", "map", "ip", "lbcore", name).stdout
    [held] = [item["map"] for item in json.loads(listed)["nftables"] if "map" in item]
    return {element[0]["elem"]["val"]: element[1] for element in held.get("elem", ())}


def affinity_maps(ns: NftNetns) -> list[str]:
    return sorted(name for family, kind, name in existing(ns) if name.startswith("affinity-") and family == "ip")


def test_sticky_clients_keep_their_endpoints_while_services_come_and_go(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:5]), f"{STICKY}:80", f"{OTHER}:80", f"{ADDED}:80")
    sticky = Service("shop/cart:http", STICKY, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1))
    other = Service("shop/other:http", OTHER, 80, endpoints=endpoints(1, 1, 1, 1, 1))
    leaving_sticky = Service("shop/old:http", "127.1.0.4", 80, affinity_timeout=60, endpoints=endpoints(1, 1))
    foreign = ns.ruleset("ip foreign")
    ns.nft(nft.render([sticky, other, leaving_sticky]))
    # What an earlier lbcore left behind: an affinity map named as it named them, and a
    # chain nothing uses.
    ns.nft("add map ip lbcore affinity-DP6GJWPH4PNGMFW6 { typeof ip saddr : meta mark; flags dynamic,timeout; }\n"
           "add chain ip lbcore sticky-DP6GJWPH4PNGMFW6\n")
    sources = clients(1200)
    first = visit(ns, STICKY, sources)
    assert set(first) == set(PORTS[:3])
    [kept] = [name for name in affinity_maps(ns) if name.endswith("-600")]
    assert len(clients_held(ns, kept)) == 1200

    added = Service("shop/new:http", ADDED, 80, endpoints=endpoints(0, 0, 0, 1))
    new = [sticky, added]  # other and leaving_sticky go
    payload = in_place(ns, new)
    assert "delete table" not in payload

    assert visit(ns, STICKY, sources) == first  # 0 moved
    assert set(visit(ns, ADDED, [None] * 10)) == {PORTS[3]}
    assert set(backend_ports(ns.connect_all([(OTHER, 80, None)] * 5))) == {80}  # the sentinel: no rule left
    assert affinity_maps(ns) == [kept] and len(clients_held(ns, kept)) == 1200
    listed = ns.ruleset(*TABLES)
    assert "pick-tcp-random-5" not in listed and "DP6GJWPH4PNGMFW6 " not in listed
    with NftNetns() as fresh:
        fresh.nft(nft.render(new))
        assert without_clients(listed) == fresh.ruleset(*TABLES)
    assert ns.ruleset("ip foreign") == foreign

    # The control: the payload that replaces the tables moves about 2 in 3 of them.
    ns.nft(nft.render(new))
    after = visit(ns, STICKY, sources)
    moved = sum(a != b for a, b in zip(first, after))
    assert moved > 600, moved


def test_a_changed_timeout_gets_a_fresh_map_and_the_old_one_goes(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{STICKY}:80")
    sticky = Service("shop/cart:http", STICKY, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1))
    ns.nft(nft.render([sticky]))
    sources = clients(300)
    visit(ns, STICKY, sources)
    [old_map] = affinity_maps(ns)
    longer = Service("shop/cart:http", STICKY, 80, affinity_timeout=1200, endpoints=endpoints(1, 1, 1))
    in_place(ns, [longer])
    [new_map] = affinity_maps(ns)
    assert old_map.endswith("-600") and new_map == old_map.replace("-600", "-1200")
    assert clients_held(ns, new_map) == {}
    visit(ns, STICKY, sources)
    listed = ns.run("nft", "list", "map", "ip", "lbcore", new_map).stdout
    assert listed.count(" timeout 20m ") == 300  # the clients that came back, with the new timeout


@pytest.mark.parametrize("seed", range(4))
def test_in_place_lists_as_the_replacing_payload_on_an_empty_node(seed):
    rng = random.Random(seed)
    old = random_services(rng, [f"ns{i % 3}/svc{i}:p" for i in range(30)])
    new = mutate(rng, old)
    with NftNetns() as synced, NftNetns() as empty:
        synced.nft(FOREIGN)
        synced.nft(nft.render(old))
        before = synced.ruleset("ip foreign")
        in_place(synced, new)
        empty.nft(nft.render(new))
        assert synced.ruleset(*TABLES) == empty.ruleset(*TABLES)
        in_place(synced, new)  # again: nothing changes
        assert synced.ruleset(*TABLES) == empty.ruleset(*TABLES)
        assert synced.ruleset("ip foreign") == before != ""


def test_a_refused_transaction_changes_nothing_not_even_the_clients(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{STICKY}:80")
    sticky = Service("shop/cart:http", STICKY, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1))
    stale = Service("shop/other:http", OTHER, 80, endpoints=endpoints(1, 1))
    ns.nft(nft.render([sticky, stale]))
    first = visit(ns, STICKY, clients(200))
    [held] = affinity_maps(ns)
    clients_before = clients_held(ns, held)
    before = ns.ruleset(*TABLES, "ip foreign")
    payload = nft.render([sticky], existing=existing(ns))
    assert "delete chain ip lbcore pick-tcp-random-2" in payload  # it would delete something
    # An element whose key is already there with another value: refused after nft sent
    # the flushes and deletes, and none of them may stay.
    key = payload.split("add element ip lbcore tcp-sticky-slots {\n")[1].split(" : ")[0].strip()
    done = ns.nft(payload + f"add element ip lbcore tcp-sticky-slots {{ {key} : 0x1 }}\n", check=False)
    assert done.returncode != 0 and "File exists" in done.stderr
    assert re.sub(r" expires \S+", "", ns.ruleset(*TABLES, "ip foreign")) == re.sub(r" expires \S+", "", before)
    assert clients_held(ns, held) == clients_before
    assert visit(ns, STICKY, clients(200)) == first


def test_ipv6_clients_stay_too(ns):
    ns.run("ip", "-6", "addr", "add", "fd00::1/128", "dev", "lo")
    ns.run("ip", "-6", "route", "add", "local", "fd00:99::/120", "dev", "lo")
    ns.run("sysctl", "-q", "net.ipv6.ip_nonlocal_bind=1")
    ns.serve("[::1]:18001", "[::1]:18002", "[::1]:18003", "[fd00::1]:81")
    six = [Endpoint("::1", p) for p in (18001, 18002, 18003)]
    sticky6 = Service("sticky6", "fd00::1", 81, affinity_timeout=60, endpoints=six)
    ns.nft(nft.render([sticky6, Service("web", STICKY, 80, endpoints=endpoints(1))]))
    sources = [f"fd00:99::{i:x}" for i in range(1, 201)]
    first = visit(ns, "fd00::1", sources, port=81)
    assert len(collections.Counter(first)) == 3
    in_place(ns, [sticky6])  # the IPv4 Service goes; the ip6 table is synced in place too
    assert visit(ns, "fd00::1", sources, port=81) == first
