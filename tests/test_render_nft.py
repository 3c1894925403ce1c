"""lbcore.render.nft: the exact text (golden files), the slot tables behind it, what is
refused, hostile names, the diff checked against a model of ``nft -f`` on random model
sets, and ``lbcore render nft``.  The kernel proofs are in tests/kernel/test_nft_*.py.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import random
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import ConfigError, Endpoint, Service
from lbcore.balancers import maglev_table
from lbcore.models import SCHEDULERS
from lbcore.render import BACKEND_SCHEDULERS, iptables, nft
from lbcore.render._nft_slots import endpoint_ids, maglev_size, slot_cap, slot_count, slot_table

from test_render_iptables import assert_golden
from test_render_iptables import golden_services as iptables_golden_services

ROOT = Path(__file__).parent.parent


def golden_services() -> list[Service]:
    """The iptables golden Services (kube-proxy's fixtures, weights, affinity, no
    endpoint, udp and sctp, the terminating fallback, quiesced and loopback endpoints)
    and what only nft runs: sh with a not-ready endpoint, dh, sticky mh by client port,
    IPv6 with and without endpoints."""
    return iptables_golden_services() + [
        Service("ns5/source:http", "172.30.0.60", 80, scheduler="sh",
                endpoints=[Endpoint("10.180.9.1", 80, weight=2), Endpoint("10.180.9.2", 80, ready=False),
                           Endpoint("10.180.9.3", 80)]),
        Service("ns5/maglev:http", "172.30.0.61", 80, scheduler="mh", affinity_timeout=60,
                sched_flags=["mh-port"], endpoints=[Endpoint("10.180.9.4", 80), Endpoint("10.180.9.5", 80)]),
        Service("ns5/destination:http", "172.30.0.62", 80, scheduler="dh",
                endpoints=[Endpoint("10.180.9.6", 80, weight=5), Endpoint("10.180.9.7", 80)]),
        Service("ns6/web6:http", "fd00:10:96::1", 80, affinity_timeout=30,
                endpoints=[Endpoint("fd00:10:180::2", 8080), Endpoint("fd00:10:180::1", 8080)]),
        Service("ns6/empty6:http", "fd00:10:96::2", 80),
    ]


def test_golden_full_payload():
    assert_golden("nft-full.txt", nft.render([s for s in golden_services() if s.scheduler != "mh"]))


def test_golden_diff():
    old = golden_services()
    new = list(old)
    new[1] = dataclasses.replace(old[1], endpoints=[Endpoint("10.180.0.4", 80), Endpoint("10.180.0.6", 80)])
    new[2] = dataclasses.replace(old[2], endpoints=[Endpoint("10.180.7.1", 80)])  # gains one
    new[3] = dataclasses.replace(old[3], endpoints=old[3].endpoints[1:])  # sticky, loses one
    new[4] = dataclasses.replace(old[4], endpoints=())  # loses all
    del new[6]  # goes away
    new.append(Service("ns0/new:http", "172.30.0.70", 80, endpoints=[Endpoint("10.180.8.1", 80)]))
    assert_golden("nft-diff.txt", nft.render_diff(old, new))


# -- the slot tables ---------------------------------------------------------------------


def shares(owners: list[Endpoint]) -> dict[str, Fraction]:
    counts = collections.Counter(e.address for e in owners)
    return {address: Fraction(count, len(owners)) for address, count in counts.items()}


def test_rr_gives_each_endpoint_that_takes_connections_one_slot():
    service = Service("s", "10.96.0.1", 80, endpoints=[
        Endpoint("10.1.0.3", 80), Endpoint("10.1.0.1", 80), Endpoint("10.1.0.2", 80, weight=0),
        Endpoint("10.1.0.4", 80, ready=False)])
    table = slot_table(service, "rr")
    assert table.hash == "random" and [e.ip for e in table.owners] == ["10.1.0.1", "10.1.0.3"]
    assert slot_count(service, "rr") == ("random", 2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 2**31 - 1) | st.integers(1, 20), min_size=1, max_size=40))
def test_wrr_shares_are_the_weights_to_one_part_in_2048(weights):
    service = Service("s", "10.96.0.1", 80, scheduler="wrr",
                      endpoints=[Endpoint(f"10.1.{i // 250}.{i % 250 + 1}", 80, weight=w) for i, w in enumerate(weights)])
    table = slot_table(service, "wrr")
    assert len(table.owners) <= slot_cap(len(weights))
    assert slot_count(service, "wrr") == ("random", len(table.owners))
    got, total = shares(table.owners), sum(weights)
    for endpoint in service.endpoints:
        assert abs(got.get(endpoint.address, 0) - Fraction(endpoint.weight, total)) <= Fraction(1, 2048)
    if total // math.gcd(*weights) <= slot_cap(len(weights)):  # small enough to be exact
        assert all(got[e.address] == Fraction(e.weight, total) for e in service.endpoints)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.booleans(), st.booleans()), max_size=12),
       st.sampled_from(["rr", "wrr", "sh", "dh", "mh"]), st.booleans())
def test_slot_count_is_the_size_of_the_slot_table(endpoints, scheduler, port_flag):
    # The diff finds shared chains still in use by slot_count, without building tables.
    service = Service("s", "10.96.0.1", 80, scheduler=scheduler,
                      sched_flags=[f"{scheduler}-port"] if port_flag and scheduler in ("sh", "mh") else [],
                      endpoints=[Endpoint(f"10.1.0.{i + 1}", 80, weight=w, ready=r, serving=sv, terminating=t)
                                 for i, (w, r, t, sv) in enumerate(endpoints)])
    table = slot_table(service, scheduler)
    assert slot_count(service, scheduler) == (table.hash, len(table.owners))
    usable = {e.address for e in service.usable_endpoints if e.weight > 0}
    assert {e.address for e in table.owners} <= usable  # never a slot for one that takes none
    if scheduler in ("rr", "dh", "sh", "mh") and usable:
        assert {e.address for e in table.owners} == usable  # and every one that does has one


def test_sh_tiles_every_listed_endpoint_and_hands_a_down_ones_slots_on():
    up = [Endpoint("10.1.0.1", 80, weight=2), Endpoint("10.1.0.2", 80), Endpoint("10.1.0.3", 80)]
    service = Service("s", "10.96.0.1", 80, scheduler="sh", endpoints=up)
    table = slot_table(service, "sh")
    assert table.hash == "source" and [e.ip[-1] for e in table.owners] == ["1", "1", "2", "3"]
    # 10.1.0.2 not ready: its slot goes to the next one's owner, nobody else moves.
    down = dataclasses.replace(service, endpoints=[up[0], dataclasses.replace(up[1], ready=False), up[2]])
    assert [e.ip[-1] for e in slot_table(down, "sh").owners] == ["1", "1", "3", "3"]
    flagged = dataclasses.replace(service, sched_flags=("sh-port",))
    assert slot_table(flagged, "sh").hash == "source-port"


def test_dh_ignores_weights_as_ipvs_does():
    service = Service("s", "10.96.0.1", 80, scheduler="dh",
                      endpoints=[Endpoint("10.1.0.1", 80, weight=5), Endpoint("10.1.0.2", 80)])
    table = slot_table(service, "dh")
    assert table.hash == "destination" and [e.ip for e in table.owners] == ["10.1.0.1", "10.1.0.2"]


def test_mh_loads_lbcores_own_maglev_table_with_the_fallback_resolved():
    endpoints = [Endpoint(f"10.1.0.{i}", 80, weight=1 + i % 2) for i in range(1, 8)]
    endpoints[3] = dataclasses.replace(endpoints[3], ready=False)
    service = Service("s", "10.96.0.1", 80, scheduler="mh", endpoints=endpoints[::-1])
    table = slot_table(service, "mh")
    size = maglev_size(7)
    assert len(table.owners) == size == 2039
    # lbcore.Maglev's table key: every listed endpoint by address, weight at least 1.
    listed = sorted(endpoints, key=lambda e: e.address)
    entries = maglev_table(size, tuple((e.address, max(e.weight, 1)) for e in listed))
    for slot, entry in enumerate(entries):
        owner = listed[entry]
        if not owner.ready:  # the next slot whose owner takes connections
            nxt = slot
            while not listed[entries[nxt]].ready:
                nxt = (nxt + 1) % size
            owner = listed[entries[nxt]]
        assert table.owners[slot] == owner


def test_maglev_size_is_an_ipvs_size_at_least_200_times_the_endpoints():
    assert [maglev_size(n) for n in (1, 2, 3, 5, 6, 9, 10, 11, 20, 21)] == [
        251, 509, 1021, 1021, 2039, 2039, 2039, 4093, 4093, 8191]


def test_endpoint_ids_are_unique_and_follow_the_address_alone():
    endpoints = [Endpoint(f"10.1.{i // 250}.{i % 250 + 1}", 80) for i in range(1000)]
    ids = endpoint_ids(endpoints)
    assert len(set(ids.values())) == 1000 and all(0 <= v < 2**32 for v in ids.values())
    assert endpoint_ids(endpoints[500:]) == {e.address: ids[e.address] for e in endpoints[500:]}


# -- what is refused ---------------------------------------------------------------------


def test_backend_schedulers_say_what_each_renderer_does():
    assert set(BACKEND_SCHEDULERS["nft"]) | set(nft.FALLBACK) == set(SCHEDULERS)
    assert nft.FALLBACK == {"lc": "rr", "wlc": "wrr", "p2c": "wrr", "ring": "wrr"}
    for scheduler in SCHEDULERS:
        service = [Service("s", "10.96.0.1", 80, scheduler=scheduler, endpoints=[Endpoint("10.1.0.1", 80)])]
        for backend, module in (("nft", nft), ("iptables", iptables)):
            if scheduler in BACKEND_SCHEDULERS[backend]:
                module.render(service)
            else:
                with pytest.raises(ConfigError):
                    module.render(service)


@pytest.mark.parametrize("scheduler, instead", [("lc", "rr"), ("wlc", "wrr")])
def test_what_needs_connection_counts_is_refused_or_falls_back(scheduler, instead):
    services = [Service("ns/web:http", "10.96.0.1", 80, scheduler=scheduler,
                        endpoints=[Endpoint("10.1.0.1", 80, weight=3), Endpoint("10.1.0.2", 80)])]
    with pytest.raises(ConfigError) as caught:
        nft.render(services)
    assert str(caught.value) == (
        f"scheduler: {scheduler!r} of service 'ns/web:http' cannot run in nftables (it needs "
        f"connection counts); use one of rr, wrr, dh, sh, mh, or fallback=True to render it as {instead}")
    with pytest.raises(ConfigError):
        nft.render_diff([], services)
    as_instead = [dataclasses.replace(services[0], scheduler=instead)]
    assert nft.render(services, fallback=True) == nft.render(as_instead)


def test_family_must_be_4_6_or_none():
    with pytest.raises(ConfigError, match="family: 5 must be 4 or 6"):
        nft.render([], family=5)
    assert "ip6" not in nft.render([], family=4) and "table ip " not in nft.render([], family=6)


def test_two_services_on_one_address_are_refused():
    with pytest.raises(ConfigError, match="one Service per vip, port and protocol"):
        nft.render([Service("a", "10.96.0.1", 80), Service("b", "10.96.0.1", 80)])


HOSTILE = ['web" ; flush ruleset ; "', "web\nflush ruleset", "web } } table ip x {", "w'b;{}"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_refused_by_the_model_and_by_the_renderer(name):
    with pytest.raises(ConfigError, match="is not a valid service name"):
        Service(name, "10.96.0.1", 80)
    tampered = Service("web", "10.96.0.1", 80, endpoints=[Endpoint("10.1.0.1", 80)])
    object.__setattr__(tampered, "name", name)  # a frozen model changed behind its back
    for render in (lambda: nft.render([tampered]), lambda: nft.render_diff([], [tampered])):
        with pytest.raises(ConfigError, match=r"services\[0\]\.name: .* is not a valid service name"):
            render()


def test_no_service_name_reaches_the_payload():
    services = golden_services()
    text = nft.render(services) + nft.render_diff(services, services[:3])
    for service in services:
        assert service.name not in text
        assert service.name.split("/")[0] + "/" not in text


# -- the diff against a model of nft -f ------------------------------------------------------


class Kernel:
    """What lbcore's payloads do to the kernel's tables, by the rules `nft -f` follows
    on Linux 6.18 (checked by tests/kernel/test_nft_apply.py): one transaction, all or
    nothing; adding an existing map key with another value, deleting what is not there,
    or deleting a chain an element still points to, fails it.  A ``table { }`` block
    adds: what is there stays, with its elements, and a chain's rules are appended."""

    def __init__(self) -> None:
        self.tables: dict[str, dict] = {}

    def existing(self) -> set[tuple[str, str, str]]:
        """Every object, as `nft.render` takes ``existing`` (maps and sets apart as the
        declarations say)."""
        found = set()
        for name, table in self.tables.items():
            family = name.split()[0]
            found |= {(family, "chain", chain) for chain in table["chains"]}
            found |= {(family, "set" if key in table["sets"] else "map", key) for key in table["maps"]}
        return found

    def learn(self, table: str, name: str, key: str, value: str) -> None:
        """An element the kernel itself writes (a client in an affinity map)."""
        self.tables[table]["maps"][name][key] = value

    def apply(self, payload: str) -> None:
        tables = {name: {kind: (set(objects) if kind == "sets" else
                                {key: type(value)(value) for key, value in objects.items()})
                         for kind, objects in table.items()}
                  for name, table in self.tables.items()}
        for command, table, rest in _commands(payload):
            _run(tables, command, table, rest)
        for name, table in tables.items():
            _check_references(name, table)
        self.tables = tables

    def state(self) -> dict:
        return {name: {kind: (sorted(objects) if kind == "sets" else
                              {k: (sorted(v) if isinstance(v, set) else v) for k, v in objects.items()})
                       for kind, objects in table.items()} for name, table in self.tables.items()}


def _commands(payload: str):
    """(command, table, rest) for each command of a payload, blocks folded."""
    lines = iter(payload.split("\n"))
    for line in lines:
        if not line:
            continue
        if line.endswith("{"):
            block = [line]
            depth = line.count("{") - line.count("}")
            while depth:
                more = next(lines)
                block.append(more)
                depth += more.count("{") - more.count("}")
            line = "\n".join(block)
        words = line.split(" ", 4)
        if words[0] == "table":
            yield "define", f"{words[1]} {words[2]}", line
        elif words[1] in ("element", "chain", "rule", "map", "set"):
            yield f"{words[0]} {words[1]}", f"{words[2]} {words[3]}", words[4] if len(words) > 4 else ""
        else:
            yield f"{words[0]} table", f"{words[2]} {words[3]}", ""


def _run(tables: dict, command: str, table: str, rest: str) -> None:
    if command == "add table":
        tables.setdefault(table, {"chains": {}, "maps": {}, "sets": set()})
    elif command == "delete table":
        del tables[table]  # KeyError: not there
    elif command == "define":
        _define(tables.setdefault(table, {"chains": {}, "maps": {}, "sets": set()}), rest)
    else:
        target = tables[table]
        name, _, body = rest.partition(" ")
        if command == "add element":
            elements = target["maps"][name]
            for element in _element_list(body):
                key, _, value = element.partition(" : ")
                assert elements.get(key, value) == value, f"{name} {key}: File exists"
                elements[key] = value
        elif command == "delete element":
            for key in _element_list(body):
                del target["maps"][name][key]
        elif command == "add chain":
            target["chains"].setdefault(name, [])
        elif command == "flush chain":
            target["chains"][name] = []
        elif command == "add rule":
            target["chains"][name].append(body)
        elif command == "delete chain":
            del target["chains"][name]
            assert not _pointing_at(target, name), f"delete chain {name}: Device or resource busy"
        elif command == "add map":
            target["maps"].setdefault(name, {})
        elif command in ("delete map", "delete set"):
            assert (name in target["sets"]) == (command == "delete set"), f"{command} {name}: wrong kind"
            del target["maps"][name]
            target["sets"].discard(name)
            assert not _pointing_at(target, name), f"{command} {name}: Device or resource busy"
        else:
            raise AssertionError(command)


def _pointing_at(table: dict, name: str) -> list[str]:
    """The rules and elements that refer to the chain or map ``name``."""
    rules = [rule for rules in table["chains"].values() for rule in rules
             if re.search(rf"(@|goto |jump ){re.escape(name)}(\s|$)", rule)]
    return rules + [v for elements in table["maps"].values() for v in elements.values() if v == f"goto {name}"]


def _element_list(body: str) -> list[str]:
    inner = body.strip()[1:-1]
    return [e.strip() for e in inner.split(",") if e.strip()]


def _define(table: dict, block: str) -> None:
    kind = name = None
    for line in block.split("\n")[1:]:
        words = line.split()
        if words[:1] in (["set"], ["map"], ["chain"]):
            kind, name = words[0], words[1]
            if kind == "chain":
                table["chains"].setdefault(name, [])
            else:
                table["maps"].setdefault(name, {})
                if kind == "set":
                    table["sets"].add(name)
        elif kind == "chain" and words and words[0] != "}" and not line.strip().startswith("type "):
            table["chains"][name].append(line.strip())


def _check_references(name: str, table: dict) -> None:
    for elements in table["maps"].values():
        for value in elements.values():
            if value.startswith("goto "):
                assert value[5:] in table["chains"], f"{name}: goto {value[5:]}: no such chain"
    for chain, rules in table["chains"].items():
        for rule in rules:
            for used in re.findall(r"@([\w-]+)", rule):
                assert used in table["maps"], f"{name} {chain}: @{used}: no such map"


def model_services(rng: random.Random, count: int, first: int = 0) -> list[Service]:
    result = []
    for i in range(first, first + count):
        six = rng.random() < 0.25
        endpoints = [
            Endpoint(f"fd00:{i}::{j}" if six else f"10.{i % 256}.0.{j}", rng.choice([80, 8080]),
                     weight=rng.choice([0, 1, 1, 2, 3]), ready=rng.random() > 0.2,
                     terminating=rng.random() < 0.3)
            for j in rng.sample(range(1, 12), rng.randint(0, 5))
        ]
        scheduler = rng.choice(["rr", "wrr", "sh", "dh", "mh", "lc", "wlc"])
        result.append(Service(
            f"ns{i % 4}/svc{i}", f"fd00:96::{i:x}" if six else f"10.96.{i // 256}.{i % 256}",
            rng.choice([80, 443]), protocol=rng.choice(["tcp", "udp", "sctp"]), scheduler=scheduler,
            sched_flags=[f"{scheduler}-port"] if scheduler in ("sh", "mh") and rng.random() < 0.3 else [],
            endpoints=endpoints, affinity_timeout=rng.choice([None, None, 60, 10800]),
        ))
    return result


def model_mutation(rng: random.Random, old: list[Service]) -> list[Service]:
    new = [s for s in old if rng.random() > 0.2]
    new += model_services(rng, rng.randint(0, 3), first=500)
    for i in rng.sample(range(len(new)), len(new) // 3):
        fresh = model_services(rng, 1, first=600)[0]
        if fresh.family == new[i].family:
            keep = list(new[i].endpoints[: rng.randint(0, 3)])
            addresses = {e.address for e in keep}
            keep += [e for e in fresh.endpoints if e.address not in addresses]
            new[i] = dataclasses.replace(new[i], endpoints=keep, scheduler=fresh.scheduler,
                                         sched_flags=fresh.sched_flags if fresh.scheduler == new[i].scheduler else (),
                                         affinity_timeout=fresh.affinity_timeout)
    return new


@pytest.mark.parametrize("seed", range(60))
def test_a_diff_on_the_full_payload_models_the_new_full_payload(seed):
    rng = random.Random(seed)
    old = model_services(rng, rng.randint(0, 40))
    new = model_mutation(rng, old)
    partial, full = Kernel(), Kernel()
    partial.apply(nft.render(old, fallback=True))
    partial.apply(nft.render_diff(old, new, fallback=True))
    full.apply(nft.render(new, fallback=True))
    assert partial.state() == full.state()
    assert nft.render_diff(new, [dataclasses.replace(s) for s in new], fallback=True) == ""


def test_the_model_fails_what_the_kernel_fails():
    kernel = Kernel()
    services = golden_services()
    kernel.apply(nft.render(services))
    with pytest.raises(KeyError):  # deleting what is not there
        kernel.apply(nft.render_diff(services + [Service("x", "10.96.9.9", 80)], services))
    moved = dataclasses.replace(services[0], endpoints=[Endpoint("10.180.0.99", 80)])
    with pytest.raises(AssertionError, match="File exists"):  # a key there with another value
        kernel.apply(nft.render_diff([], [moved]))
    sticky = [s for s in services if s.affinity_timeout and s.family == 4][0]
    gone = nft.render_diff(services, [s for s in services if s is not sticky])
    chain = re.search(r"delete chain ip lbcore \S+\n", gone).group()
    with pytest.raises(AssertionError, match="Device or resource busy"):  # an element points at it
        kernel.apply(chain + gone.replace(chain, ""))
    affinity = re.search(r"delete map ip lbcore \S+\n", gone).group()
    with pytest.raises(AssertionError, match="Device or resource busy"):  # its chain's rules use it
        kernel.apply(affinity + gone.replace(affinity, ""))
    before = kernel.state()
    kernel.apply(gone)
    assert kernel.state() != before


# -- the full sync in place --------------------------------------------------------------


def learn_clients(kernel: Kernel) -> set[tuple[str, str]]:
    """A client in every affinity map, as the kernel's own ``update`` puts one there."""
    maps = {(table, name) for table, t in kernel.tables.items() for name in t["maps"]
            if name.startswith("affinity-")}
    for table, name in maps:
        kernel.learn(table, name, "10.255.0.1", "0x00000001")
    return maps


def clients_taken_out(state: dict) -> set[tuple[str, str]]:
    """The maps of ``state`` that held `learn_clients`' client, which is taken out."""
    return {(table, name) for table, t in state.items() for name, elements in t["maps"].items()
            if elements.pop("10.255.0.1", None)}


@pytest.mark.parametrize("seed", range(60))
def test_a_full_sync_in_place_lands_on_the_new_full_payload_and_keeps_the_clients(seed):
    rng = random.Random(seed)
    old = model_services(rng, rng.randint(0, 40))
    new = model_mutation(rng, old)
    kernel, fresh = Kernel(), Kernel()
    kernel.apply(nft.render(old, fallback=True))
    learned = learn_clients(kernel)
    kernel.apply(nft.render(new, fallback=True, existing=kernel.existing()))
    fresh.apply(nft.render(new, fallback=True))
    state = kernel.state()
    kept = clients_taken_out(state)
    assert state == fresh.state()
    # Every affinity map the new state has under the same name (same Service, same
    # timeout) kept its client; the others are gone or new and empty.
    wanted = {(table, name) for table, t in fresh.tables.items() for name in t["maps"]}
    assert kept == learned & wanted
    again = kernel.state()
    kernel.apply(nft.render(new, fallback=True, existing=kernel.existing()))  # idempotent
    assert kernel.state() == again


def test_a_changed_timeout_is_a_fresh_map_and_the_old_one_goes():
    web = Service("web", "10.96.0.1", 80, affinity_timeout=60, endpoints=[Endpoint("10.1.0.1", 80)])
    kernel = Kernel()
    kernel.apply(nft.render([web]))
    [old_map] = learn_clients(kernel)
    longer = dataclasses.replace(web, affinity_timeout=120)
    payload = nft.render([longer], existing=kernel.existing())
    assert f"delete map ip lbcore {old_map[1]}\n" in payload
    kernel.apply(payload)
    [new_map] = [name for name in kernel.tables["ip lbcore"]["maps"] if name.startswith("affinity-")]
    assert new_map == old_map[1].replace("-60", "-120") and kernel.tables["ip lbcore"]["maps"][new_map] == {}
    # The same in a diff: the chain's rules move to the new map, then the old one goes.
    kernel, diffed = Kernel(), Kernel()
    kernel.apply(nft.render([longer]))
    diffed.apply(nft.render([web]))
    diffed.apply(nft.render_diff([web], [longer]))
    assert diffed.state() == kernel.state()


def test_without_existing_or_with_nothing_there_the_tables_are_replaced():
    services = golden_services()
    plain = nft.render(services)
    assert plain.count("delete table") == 2
    assert nft.render(services, existing=[]) == plain
    only_six = {("ip6", "chain", "nat-output")}  # the ip table holds nothing: replaced
    mixed = nft.render(services, existing=only_six)
    assert mixed.startswith(plain.split("add table ip6")[0])
    assert "delete table ip6" not in mixed and "flush chain ip6 lbcore nat-output\n" in mixed


@pytest.mark.parametrize("item, message", [
    (("ip", "chain"), r"existing\[0\]: \('ip', 'chain'\) must be a \(family, kind, name\) triple"),
    (("inet", "chain", "x"), r"existing\[0\]\.family: 'inet' must be ip or ip6"),
    (("ip", "flowtable", "x"), r"existing\[0\]\.kind: 'flowtable' must be chain, map or set"),
    (("ip", "chain", "x; flush ruleset"), r"existing\[0\]\.name: 'x; flush ruleset' is not an nft name"),
    (("ip", "map", "m\ndelete table ip foreign"), r"existing\[0\]\.name: .* is not an nft name"),
    (("ip", "set", "1x"), r"existing\[0\]\.name: '1x' is not an nft name"),
])
def test_a_bad_existing_object_is_refused_by_name(item, message):
    with pytest.raises(ConfigError, match=message):
        nft.render(golden_services(), existing=[item])


# -- lbcore render nft ------------------------------------------------------------------------


def lbcore(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lbcore", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def write_services(path: Path, services: list[dict]) -> str:
    import json

    path.write_text(json.dumps({"services": services}))
    return str(path)


def test_cli_prints_the_full_payload_and_the_diff(tmp_path):
    from lbcore.sources import load_files

    web = {"name": "web", "vip": "10.96.0.10", "port": 80, "scheduler": "mh",
           "endpoints": [{"ip": "10.1.0.5", "port": 8080}, {"ip": "10.1.0.6", "port": 8080}]}
    old = write_services(tmp_path / "old.json", [web])
    new = write_services(tmp_path / "new.json", [dict(web, endpoints=web["endpoints"][:1])])
    full = lbcore("render", "nft", old)
    assert full.returncode == 0 and full.stdout == nft.render(load_files([old]))
    six = lbcore("render", "nft", old, "--family", "6")
    assert six.stdout == nft.render(load_files([old]), family=6) and "ip6 lbcore" in six.stdout
    diff = lbcore("render", "nft", new, "--diff", old)
    assert diff.returncode == 0 and diff.stdout == nft.render_diff(load_files([old]), load_files([new]))


def test_cli_refuses_wlc_unless_fallback(tmp_path):
    path = write_services(tmp_path / "s.json", [{"name": "web", "vip": "10.96.0.10", "port": 80,
                                                  "scheduler": "wlc", "endpoints": [{"ip": "10.1.0.5", "port": 80}]}])
    refused = lbcore("render", "nft", path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("lbcore: error: scheduler: 'wlc' of service 'web' cannot run in nftables")
    assert lbcore("render", "nft", path, "--fallback").stdout.count("pick-tcp-random-1") == 2


def test_cli_check_says_which_schedulers_each_backend_runs():
    result = lbcore("check", str(ROOT / "examples" / "k8s-dump.yaml"))
    assert result.returncode == 0
    assert ("backends: forward runs every scheduler; ipvs runs rr, wrr, lc, wlc, dh, sh, mh; "
            "nft runs rr, wrr, dh, sh, mh; iptables runs rr, wrr") in result.stdout


def test_cli_bad_input_exits_2_naming_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - {name: web, vip: 10.96.0.300, port: 80}\n")
    missing = str(tmp_path / "old.yaml")
    result = lbcore("render", "nft", str(bad), "--diff", missing)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"lbcore: error: {bad}: services[0] (web): vip: '10.96.0.300' is not an IPv4 or IPv6 address",
        f"lbcore: error: {missing}: file: {missing!r} cannot be read: No such file or directory",
    ]


def test_cli_help_says_how_to_apply_and_remove():
    result = lbcore("render", "nft", "--help")
    assert result.returncode == 0
    for text in ("--diff OLD", "--fallback", "--family {4,6}", "nft -f", "nft delete table ip lbcore"):
        assert text in " ".join(result.stdout.split()), text


def test_slow_start_is_refused_or_dropped_with_fallback():
    ramping = Service("web", "10.96.0.10", 80, scheduler="wrr", slow_start=30,
                      endpoints=[Endpoint("10.1.0.5", 8080), Endpoint("10.1.0.6", 8080, weight=3)])
    with pytest.raises(ConfigError) as error:
        nft.render([ramping])
    assert error.value.field == "slow_start"
    assert "'web'" in str(error.value) and "fallback=True" in str(error.value)
    with pytest.raises(ConfigError):
        nft.render_diff([], [ramping])
    plain = dataclasses.replace(ramping, slow_start=None)
    assert nft.render([ramping], fallback=True) == nft.render([plain])
    assert nft.render([dataclasses.replace(plain, panic_threshold=50)]) == nft.render([plain])
