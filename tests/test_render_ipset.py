"""lbcore.render.ipset: one fixed-size ``hash:ip`` set per endpoint chain of an affinity
Service, named as the chain, created idempotently; diffs create before and destroy after.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from lbcore import ConfigError, Endpoint, Service
from lbcore.render import ipset, iptables

from test_render_iptables import assert_golden, golden_services, tampered


def sticky(name: str, *addresses: str, timeout: int = 600) -> Service:
    # One vip per name: Services must not share a vip, port and protocol.
    vip = f"fd00::{len(name)}" if ":" in addresses[0] else f"10.96.0.{len(name)}"
    return Service(name, vip, 80, affinity_timeout=timeout,
                   endpoints=[Endpoint(a, 8080) for a in addresses])


def set_names(services: list[Service]) -> list[str]:
    return re.findall(r"^create (\S+) ", ipset.render(services), flags=re.M)


def test_golden_sets():
    services = golden_services() + [sticky("ns/web6:http", "fd00::2", "fd00::3")]
    assert_golden("iptables-ipset.txt", ipset.render(services))


def test_a_set_per_endpoint_chain_of_affinity_services_named_as_the_chain():
    services = golden_services()
    created = set_names(services)
    rules = iptables.render(services)
    referenced = re.findall(r"--match-set (\S+) src -j (\S+)", rules)
    assert sorted(created) == sorted(s for s, _ in referenced)
    assert all(s == chain for s, chain in referenced)  # the set is the chain's own
    assert all(len(name) <= 31 for name in created)  # ipset's IPSET_MAXNAMELEN - 1
    assert len(created) == 3  # ns2/sticky:https's three endpoints, nothing else


def test_sets_are_sized_for_ten_thousand_clients_and_created_idempotently():
    [line] = ipset.render([sticky("ns/web:http", "10.1.0.1")]).splitlines()
    assert line.endswith(" hash:ip family inet hashsize 4096 maxelem 65536 timeout 0 -exist")
    [line6] = ipset.render([sticky("ns/web:http", "fd00::2")]).splitlines()
    assert " family inet6 " in line6


def test_diff_creates_new_sets_and_cleanup_destroys_gone_ones():
    old = [sticky("ns/a:p", "10.1.0.1", "10.1.0.2"), sticky("ns/bb:p", "10.2.0.1")]
    new = [sticky("ns/a:p", "10.1.0.2", "10.1.0.3"), dataclasses.replace(old[1], affinity_timeout=None)]
    old_sets, new_sets = set(set_names(old)), set(set_names(new))
    created = re.findall(r"^create (\S+) .* -exist$", ipset.render_diff(old, new), flags=re.M)
    destroyed = re.findall(r"^destroy (\S+)$", ipset.render_cleanup(old, new), flags=re.M)
    assert set(created) == new_sets - old_sets and len(created) == 1
    assert set(destroyed) == old_sets - new_sets and len(destroyed) == 2


def test_diff_of_unchanged_or_retimed_services_is_empty():
    old = [sticky("ns/a:p", "10.1.0.1", "10.1.0.2", timeout=600)]
    retimed = [dataclasses.replace(old[0], affinity_timeout=30)]  # the SET rules carry it
    for new in (old, [dataclasses.replace(old[0])], retimed):
        assert ipset.render_diff(old, new) == ipset.render_cleanup(old, new) == ""


def test_services_without_affinity_need_no_set():
    assert ipset.render([Service("ns/a:p", "10.96.0.1", 80, endpoints=[Endpoint("10.1.0.1", 80)])]) == ""


@pytest.mark.parametrize("name", ['web" -j ACCEPT', "web\ndestroy"])
def test_a_tampered_name_is_refused(name):
    service = tampered(name)
    for render in (ipset.render, lambda s: ipset.render_diff([], s), lambda s: ipset.render_cleanup(s, [])):
        with pytest.raises(ConfigError) as err:
            render([service])
        assert err.value.field == "services[0].name"
