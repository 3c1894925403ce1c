"""The nft sink's read-back, `read_existing`, on listings recorded from nft 1.0.6
(``nft -j -t list chains``, ``maps``, ``sets`` of a ruleset with lbcore's tables beside
an ``inet filter`` table and an ``ip other`` table whose objects are named lbcore).
The sink against the real kernel is tests/kernel/test_agent_nft.py."""

from __future__ import annotations

import json

from lbcore import Endpoint, Service
from lbcore.agent.sinks.nft import read_existing
from lbcore.render import nft

META = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
CHAINS = [
    {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter",
               "hook": "input", "prio": 0, "policy": "accept"}},
    {"chain": {"family": "ip", "table": "lbcore", "name": "pick-tcp-random-1", "handle": 1}},
    {"chain": {"family": "ip", "table": "lbcore", "name": "nat-output", "handle": 2, "type": "nat",
               "hook": "output", "prio": -100, "policy": "accept"}},
    {"chain": {"family": "ip", "table": "other", "name": "lbcore", "handle": 1}},
]
MAPS = [
    {"map": {"family": "ip", "name": "service-ips", "table": "lbcore",
             "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 3, "map": "verdict"}},
    {"map": {"family": "ip6", "name": "affinity-AB-60", "table": "lbcore", "type": "ipv6_addr", "handle": 1,
             "map": "mark", "size": 65536, "flags": ["timeout"]}},
]
SETS = [
    {"set": {"family": "ip", "name": "hairpin", "table": "lbcore", "type": ["integer", "ipv4_addr"], "handle": 4,
             "size": 65536, "flags": ["timeout"], "timeout": 1}},
    {"set": {"family": "ip", "name": "lbcore", "table": "other", "type": "ipv4_addr", "handle": 2}},
]


def listing(objects: list[dict]) -> str:
    return json.dumps({"nftables": [META, *objects]})


def test_read_existing_keeps_lbcores_objects_and_nothing_else():
    assert read_existing([listing(CHAINS), listing(MAPS), listing(SETS)]) == {
        ("ip", "chain", "pick-tcp-random-1"),
        ("ip", "chain", "nat-output"),
        ("ip", "map", "service-ips"),
        ("ip6", "map", "affinity-AB-60"),
        ("ip", "set", "hairpin"),
    }
    assert read_existing([listing([])] * 3) == set()  # a node without nftables objects


def test_what_is_read_back_is_what_the_renderer_takes():
    found = read_existing([listing(CHAINS), listing(MAPS), listing(SETS)])
    payload = nft.render([Service("web", "10.96.0.1", 80, endpoints=[Endpoint("10.1.0.1", 80)])], existing=found)
    # ip: synced in place (pick-tcp-random-1 is wanted: flushed, kept); ip6: the stale
    # affinity map goes, and the table is synced in place too.
    assert "flush chain ip lbcore pick-tcp-random-1\n" in payload
    assert "delete map ip lbcore service-ips\n" in payload and "delete set ip lbcore hairpin" not in payload
    assert "delete map ip6 lbcore affinity-AB-60\n" in payload and "delete table" not in payload
