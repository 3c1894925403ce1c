"""The two twins that put an iptables payload's chains together
(lbcore/_pure/iptables_chains.py and lbcore/_fast/iptables_chains.pyx): the
compiled one loads where it should and writes exactly what the pure one writes.
"""

from __future__ import annotations

import importlib
import random
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import Endpoint, Service
from lbcore._pure import iptables_chains as pure
from lbcore.render import iptables
from lbcore._pure.iptables_chains import ChainColumns, ChainParts


def _compiled():
    try:
        return importlib.import_module("lbcore._fast.iptables_chains")
    except ImportError:
        pytest.skip("compiled twins not built (test_build.py fails if they should be)")


def random_services(rng: random.Random, count: int) -> list[Service]:
    """Every shape: both families, loopback endpoints, affinity, wrr weights, quiesced,
    unready and terminating endpoints, no endpoints, long names."""
    services = []
    for i in rng.sample(range(count * 4), count):
        v6 = rng.random() < 0.2
        eps = {}
        for j in rng.sample(range(1, 60), rng.choice([0, 1, 2, 3, 7, 12])):
            if v6:
                ip = rng.choice([f"fd00:{i:x}::{j:x}", "::1"])
            else:
                ip = rng.choice([f"10.{i % 250}.{j}.1", f"127.{i % 250}.0.{j}", f"192.168.{j}.9"])
            port = rng.choice([j, 8080, 65535])
            eps[(ip, port)] = Endpoint(ip, port, weight=rng.choice([0, 1, 1, 2, 1000]),
                                       ready=rng.random() > 0.1, terminating=rng.random() < 0.2)
        services.append(Service(
            f"ns{i % 5}/svc-{i}:p{'x' * rng.choice([0, 0, 40, 250])}"[:253],
            f"fd00:96::{i:x}" if v6 else f"10.96.{i // 250}.{i % 250}",
            rng.choice([80, 443]), protocol=rng.choice(["tcp", "udp", "sctp"]),
            scheduler=rng.choice(["rr", "wrr"]), affinity_timeout=rng.choice([None, None, 1, 86400]),
            endpoints=list(eps.values()),
        ))
    return services


def both_payloads(services: list[Service], **options: object) -> tuple[str, str]:
    """render(services) with the compiled twin, and with the pure one, whichever
    `iptables` selected (under LBCORE_NO_EXTENSIONS=1 it selected the pure one)."""
    texts = []
    for twin in (_compiled(), pure):
        with mock.patch.object(iptables, "join_payload", twin.join_payload):
            texts.append(iptables.render(services, **options))
    return texts[0], texts[1]


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from([0, 1, 5, 40]), st.sampled_from([4, 6]),
       st.booleans())
def test_the_twins_render_the_same_payload(rng, count, family, install):
    _compiled()
    compiled, pure_text = both_payloads(random_services(rng, count), family=family, install=install)
    assert compiled == pure_text


def test_the_twins_agree_on_a_payload_with_pivots():
    _compiled()
    services = random_services(random.Random(3), 1500)  # over 4,096 chains: 15 pivots come first
    compiled, pure_text = both_payloads(services)
    assert compiled == pure_text
    assert compiled.count(" - [0:0]\n") > iptables._PIVOT_THRESHOLD


def parts(chain: str, count: int, affinity: bool = False) -> ChainParts:
    return ChainParts(chain, f'\n-A {chain} -m comment --comment "s -> ', ('" -j ',) * count,
                      " -s ", " -j DNAT --to-destination ",
                      " -j SET --add-set " if affinity else None,
                      " src --exist --timeout 9" if affinity else None)


@pytest.mark.parametrize("names", [
    # Shared prefixes longer than the 16 bytes the compiled sort keys hold, names that
    # are prefixes of others, and names of every length around the key's end.
    ["A" * 40 + "B", "A" * 40 + "C", "A" * 40, "A" * 39, "A" * 40 + "B" * 3, "A" * 41],
    ["P" + "Q" * n for n in range(40)],
    ["X" * 9 + "Y" * 16 + tail for tail in ("", "a", "b", "ab", "ba", "aa")],
    ["c", "b", "a"],
])
def test_the_twins_order_any_names_alike(names):
    compiled = _compiled()
    rng = random.Random(5)
    rng.shuffle(names)
    # The first name is a service chain, the others its endpoints' chains.
    endpoints = names[1:]
    columns = ChainColumns([parts(names[0], len(endpoints), affinity=True)], [len(endpoints)],
                           endpoints, [f"10.0.0.{i}" for i in range(len(endpoints))],
                           [f"10.0.0.{i}:80" for i in range(len(endpoints))], frozenset(["10.0.0.1"]),
                           "TEST-MASQ")
    args = (["*nat"], [0, len(names) - 1], columns, ["COMMIT\n"])
    payload = compiled.join_payload(*args)
    assert payload == pure.join_payload(*args)
    # ... and alike is right: Python's descending str order, the pivots by rank first.
    declared = [line[1 : line.index(" ")] for line in payload.splitlines() if line.startswith(":")]
    descending = sorted(names, reverse=True)
    assert declared == [descending[0], descending[-1], *descending]
    # The hairpin rules jump to the chain the caller named (not the loopback endpoint).
    hairpins = [line for line in payload.splitlines() if line.endswith(" -j TEST-MASQ")]
    assert len(hairpins) == len(endpoints) - 1


def test_a_part_that_is_not_ascii_goes_to_the_pure_twin():
    compiled = _compiled()
    # Only a tampered model can bring one; the pure twin writes any text.
    args = ([], [], ChainColumns([parts("LBCORE-SVC-A", 1)], [1], ["LBCORE-SVE-B"], ["10.0.0.1"],
                                 ["10.0.0.1:80\u00e9"], frozenset(), "LBCORE-MARK-MASQ"), [])
    assert compiled.join_payload(*args) == pure.join_payload(*args)
    assert "10.0.0.1:80\u00e9" in compiled.join_payload(*args)


def test_nothing_to_join():
    compiled = _compiled()
    for module in (compiled, pure):
        assert module.join_payload([], [], ChainColumns([], [], [], [], [], frozenset(), "LBCORE-MARK-MASQ"), []) == ""
        none = ChainColumns([None], [0], [], [], [], frozenset(), "LBCORE-MARK-MASQ")
        assert module.join_payload(["a"], [], none, ["b"]) == "a\nb"
