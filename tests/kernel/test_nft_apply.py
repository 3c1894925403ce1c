"""Applying the nft payloads with the real ``nft -f`` in a namespace: the full payload is
idempotent and replaces whatever lbcore had, a rejected transaction changes nothing, a
diff on top of the full payload lands exactly where the full payload of the new state
does, chains that fall out of use go in the same transaction as the elements that
pointed at them, and another tool's table survives all of it.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from _nft_netns import FOREIGN, NftNetns, kernel

from lbcore import Endpoint, Service
from lbcore.render import nft

from test_render_nft import golden_services

pytestmark = kernel

TABLES = ("ip lbcore", "ip6 lbcore")


@pytest.fixture
def ns():
    with NftNetns() as netns:
        netns.nft(FOREIGN)
        yield netns


def foreign(ns: NftNetns) -> str:
    return ns.ruleset("ip foreign")


def test_full_payload_twice_gives_the_same_tables_and_leaves_the_foreign_one(ns):
    before = foreign(ns)
    ns.nft(nft.render(golden_services()))
    once = ns.ruleset(*TABLES)
    ns.nft(nft.render(golden_services()))
    assert ns.ruleset(*TABLES) == once
    assert "pick-tcp-random-2" in once and "sticky-" in once and "ip6 lbcore" in once
    assert foreign(ns) == before


def test_full_payload_replaces_every_stale_chain_and_element(ns):
    old = golden_services()
    ns.nft(nft.render(old))
    new = [s for s in old if s.affinity_timeout is None][:3]
    ns.nft(nft.render(new))
    with NftNetns() as fresh:
        fresh.nft(nft.render(new))
        assert ns.ruleset(*TABLES) == fresh.ruleset(*TABLES)


def test_the_listing_applies_back(ns):
    # An operator can save `nft list table` and load it again (nft 1.0.6 cannot read
    # "th dport" back in a map's value type, hence "tcp dport" there).
    ns.nft(nft.render(golden_services()))
    saved = {table: ns.run("nft", "list", "table", *table.split()).stdout for table in TABLES}
    listed = ns.ruleset(*TABLES)
    ns.nft(nft.render_delete())
    ns.nft("".join(saved.values()))
    assert ns.ruleset(*TABLES) == listed


def test_a_transaction_the_kernel_refuses_changes_nothing(ns):
    ns.nft(nft.render(golden_services()))
    before = ns.ruleset(*TABLES) + foreign(ns)
    # The kernel refuses an element whose key is already there with another value
    # (EEXIST), after nft has sent it all: the delete table and the whole new state
    # went into the same transaction, and none of it may stay.
    payload = nft.render(golden_services()[:2])
    key = payload.split("add element ip lbcore tcp-endpoints {\n")[1].split(" : ")[0].strip()
    bad = payload + f"add element ip lbcore tcp-endpoints {{ {key} : 192.0.2.99 . 9 }}\n"
    done = ns.nft(bad, check=False)
    assert done.returncode != 0 and "File exists" in done.stderr
    assert ns.ruleset(*TABLES) + foreign(ns) == before
    # A diff with a bad element at its end: nothing of it either.
    diff = nft.render_diff(golden_services(), golden_services()[:2])
    done = ns.nft(diff + "delete element ip lbcore hairpin { 192.0.2.98 . 192.0.2.98 }\n", check=False)
    assert done.returncode != 0
    assert ns.ruleset(*TABLES) + foreign(ns) == before


def random_services(rng: random.Random, names: list[str], first: int = 0) -> list[Service]:
    result = []
    for i, name in enumerate(names, first):
        six = rng.random() < 0.25
        endpoints = [
            Endpoint(f"fd00:{i}::{j}" if six else f"10.{i}.0.{j}", rng.choice([8080, 8443]),
                     weight=rng.choice([0, 1, 1, 2, 5]), ready=rng.random() > 0.2,
                     terminating=rng.random() < 0.3)
            for j in rng.sample(range(1, 12), rng.randint(0, 5))
        ]
        scheduler = rng.choice(["rr", "wrr", "sh", "dh", "mh"])
        flags = [f"{scheduler}-port"] if scheduler in ("sh", "mh") and rng.random() < 0.3 else []
        result.append(Service(
            name, f"fd00:96::{i:x}" if six else f"10.96.{i}.1", rng.choice([80, 443]),
            protocol=rng.choice(["tcp", "udp", "sctp"]), scheduler=scheduler, sched_flags=flags,
            endpoints=endpoints, affinity_timeout=rng.choice([None, None, 60, 10800]),
        ))
    return result


def mutate(rng: random.Random, old: list[Service]) -> list[Service]:
    new = [s for s in old if rng.random() > 0.15]  # some Services go away
    new += random_services(rng, [f"ns9/new{i}:p" for i in range(3)], first=100)
    for i in rng.sample(range(len(new)), len(new) // 3):  # others change
        fresh = random_services(rng, [new[i].name], first=int(new[i].vip.split(".")[2])
                                if "." in new[i].vip else 200)[0]
        if fresh.family != new[i].family:
            continue
        endpoints = {(e.ip, e.port): e for e in new[i].endpoints[:2] + fresh.endpoints[:3]}
        new[i] = dataclasses.replace(
            new[i], scheduler=fresh.scheduler, sched_flags=fresh.sched_flags,
            endpoints=list(endpoints.values()), affinity_timeout=fresh.affinity_timeout)
    return new


@pytest.mark.parametrize("seed", range(6))
def test_a_diff_on_the_full_payload_lands_where_the_new_full_payload_does(seed):
    rng = random.Random(seed)
    old = random_services(rng, [f"ns{i % 3}/svc{i}:p" for i in range(30)])
    new = mutate(rng, old)
    with NftNetns() as partial, NftNetns() as full:
        for netns in (partial, full):
            netns.nft(FOREIGN)
        partial.nft(nft.render(old))
        diff = nft.render_diff(old, new)
        assert diff
        partial.nft(diff)
        full.nft(nft.render(new))
        assert partial.ruleset(*TABLES) == full.ruleset(*TABLES)
        assert foreign(partial) == foreign(full) != ""
        assert nft.render_diff(new, new) == ""


def test_chains_that_fall_out_of_use_go_in_the_same_transaction(ns):
    # pick-tcp-random-3 and a sticky Service's own chain are pointed at by @service-ips
    # elements; each diff deletes the elements and the chains together.  Kernels before
    # 6.2 release such a chain late (EBUSY); back and forth at once, twenty times, and
    # the chains are gone after every removal.
    three = [Endpoint(f"10.1.0.{i}", 80) for i in range(1, 4)]
    with_them = [Service("a", "10.96.0.1", 80, endpoints=three),
                 Service("b", "10.96.0.2", 80, affinity_timeout=60, endpoints=three)]
    without = [Service("a", "10.96.0.1", 80, endpoints=three[:2])]
    ns.nft(nft.render(with_them))
    forth, back = nft.render_diff(with_them, without), nft.render_diff(without, with_them)
    assert "delete chain ip lbcore pick-tcp-random-3" in forth and "delete chain ip lbcore sticky-" in forth
    for _ in range(20):
        ns.nft(forth)
        listed = ns.ruleset("ip lbcore")
        assert "pick-tcp-random-3" not in listed and "chain sticky-" not in listed and "map affinity-" not in listed
        ns.nft(back)
    with NftNetns() as fresh:
        fresh.nft(nft.render(with_them))
        assert ns.ruleset(*TABLES) == fresh.ruleset(*TABLES)
    # The kernel does track the reference: the chain first, then the element, fails.
    chain = "delete chain ip lbcore pick-tcp-random-3\n"
    reordered = chain + forth.replace(chain, "")
    done = ns.nft(reordered, check=False)
    assert done.returncode != 0 and "Device or resource busy" in done.stderr


def test_a_diff_from_the_wrong_state_fails_and_changes_nothing(ns):
    old = golden_services()
    new = old[:1]
    ns.nft(nft.render(new))
    before = ns.ruleset(*TABLES)
    done = ns.nft(nft.render_diff(old, new), check=False)
    assert done.returncode != 0 and "No such file or directory" in done.stderr
    assert ns.ruleset(*TABLES) == before


def test_render_delete_removes_lbcore_and_nothing_else(ns):
    before = foreign(ns)
    ns.nft(nft.render_delete())  # nothing to remove: still fine
    ns.nft(nft.render(golden_services()))
    ns.nft(nft.render_delete(family=6))
    assert ns.ruleset("ip6 lbcore") == "" and ns.ruleset("ip lbcore") != ""
    ns.nft(nft.render_delete())
    assert ns.ruleset(*TABLES) == "\n"
    assert foreign(ns) == before
    tables = ns.run("nft", "list", "tables").stdout.split("\n")
    assert [t for t in tables if t] == ["table ip foreign"]


def test_every_rule_shape_loads_and_no_name_reaches_the_kernel(ns):
    # Names that look like nft syntax, the longest name, every scheduler, flag and
    # protocol, affinity, no endpoint, IPv6: all load, and no name is in the tables.
    services = golden_services() + [
        Service(name, f"10.96.1.{i}", 80, affinity_timeout=1 if i % 2 else None,
                endpoints=[Endpoint(f"10.1.1.{i}", 65535)])
        for i, name in enumerate(["COMMIT", "ns/table:ip", "delete-table", "x" * 253], 1)
    ]
    ns.nft(nft.render(services))
    listed = ns.run("nft", "list", "ruleset").stdout
    assert "COMMIT" not in listed and "xxxx" not in listed and "delete-table" not in listed
    assert listed.count("table ") == 3
