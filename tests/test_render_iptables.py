"""lbcore.render.iptables: the exact text (golden files), kube-proxy's names and
probabilities, what is refused, and the partial sync checked against a model of
``iptables-restore --noflush``.  The kernel proofs are in tests/kernel/test_iptables_*.py.
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import hashlib
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import ConfigError, Endpoint, Service
from lbcore.render import iptables
from lbcore.render._iptables_names import chosen_endpoints, hash16
from lbcore.render._common import paused_gc

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    """Compare with tests/golden/<name>; LBCORE_UPDATE_GOLDEN=1 rewrites it instead, and
    then fails: a rewritten file proves nothing until its diff is read and the test rerun."""
    path = GOLDEN / name
    if os.environ.get("LBCORE_UPDATE_GOLDEN"):
        changed = not path.exists() or path.read_text() != text
        path.write_text(text)
        pytest.fail(f"LBCORE_UPDATE_GOLDEN: {'rewrote' if changed else 'unchanged'} {path}; "
                    "review `git diff tests/golden` and rerun without it")
    assert text == path.read_text()


def golden_services() -> list[Service]:
    """One of each shape: kube-proxy's fixture Services, weights, affinity, no endpoint,
    udp and sctp, the terminating fallback, quiesced and loopback endpoints."""
    return [
        Service("ns1/svc1:p80", "172.30.0.41", 80, endpoints=[Endpoint("10.180.0.1", 80)]),
        Service("ns4/svc4:p80", "172.30.0.44", 80,
                endpoints=[Endpoint("10.180.0.5", 80), Endpoint("10.180.0.4", 80)]),
        Service("ns6/svc6:p80", "172.30.0.46", 80),
        Service("ns2/sticky:https", "172.30.0.50", 443, affinity_timeout=10800,
                endpoints=[Endpoint("10.180.1.1", 8443), Endpoint("10.180.1.2", 8443),
                           Endpoint("10.180.1.3", 8443)]),
        Service("ns2/weighted:http", "172.30.0.51", 80, scheduler="wrr",
                endpoints=[Endpoint("10.180.2.1", 80, weight=5), Endpoint("10.180.2.2", 80, weight=3),
                           Endpoint("10.180.2.3", 80, weight=2), Endpoint("10.180.2.4", 80, weight=0)]),
        Service("kube-system/kube-dns:dns", "172.30.0.10", 53, protocol="udp",
                endpoints=[Endpoint("10.180.3.1", 53)]),
        Service("ns3/signal:sctp", "172.30.0.52", 3868, protocol="sctp",
                endpoints=[Endpoint("10.180.4.1", 3868)]),
        Service("ns3/draining:http", "172.30.0.53", 80, endpoints=[
            Endpoint("10.180.5.1", 80, ready=False, serving=True, terminating=True),
            Endpoint("10.180.5.2", 80, ready=False, serving=False, terminating=True)]),
        Service("ns3/quiesced:http", "172.30.0.54", 80, endpoints=[Endpoint("10.180.6.1", 80, weight=0)]),
        Service("local/dev:http", "127.1.0.1", 80, endpoints=[Endpoint("127.0.0.1", 8080)]),
    ]


def test_golden_sync_payload():
    assert_golden("iptables-sync.txt", iptables.render(golden_services()))


def test_golden_install_payload():
    assert_golden("iptables-install.txt", iptables.render(golden_services(), install=True))


def test_golden_ipv6_payload():
    v6 = [
        Service("ns1/web6:http", "fd00:10:96::1", 80, affinity_timeout=60,
                endpoints=[Endpoint("fd00:10:180::2", 8080), Endpoint("fd00:10:180::1", 8080)]),
        Service("ns1/empty6:http", "fd00:10:96::2", 80),
        Service("ns1/web:http", "10.96.0.1", 80, endpoints=[Endpoint("10.180.0.1", 8080)]),
    ]
    text = iptables.render(v6, family=6)
    assert "10.96.0.1" not in text  # the IPv4 Service belongs to the iptables payload
    assert_golden("iptables-ipv6.txt", text)


def test_golden_partial_sync():
    old = golden_services()
    new = list(old)
    new[1] = dataclasses.replace(old[1], endpoints=[Endpoint("10.180.0.4", 80), Endpoint("10.180.0.6", 80)])
    new[2] = dataclasses.replace(old[2], endpoints=[Endpoint("10.180.7.1", 80)])  # gains one
    new[4] = dataclasses.replace(old[4], endpoints=())  # loses all
    del new[6]  # goes away
    new.append(Service("ns0/new:http", "172.30.0.60", 80, endpoints=[Endpoint("10.180.8.1", 80)]))
    assert_golden("iptables-diff.txt", iptables.render_diff(old, new))


# -- kube-proxy's names and numbers -------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    # reference/kube-proxy.md §1.2: upstream fixtures and real clusters.
    ("ns1/svc1:p80tcp", "XPGD46QRK7WJZT7O"),
    ("ns4/svc4:p80tcp", "4SW47YFZTEDKD3PK"),
    ("kube-system/kube-dns:dnsudp", "TCOU7JCQXEZGVUNU"),
    ("default/kubernetes:httpstcp", "NPX46M4PTMTKRN6Y"),
    ("ns1/svc1:p80tcp10.180.0.1:80", "SXIVWICOYRO3J4NJ"),
    # §1.3: the SEP chains of ns4/svc4 in TestOverallIPTablesRules.
    ("ns4/svc4:p80tcp10.180.0.4:80", "UKSFD7AGPMPPLUHC"),
    ("ns4/svc4:p80tcp10.180.0.5:80", "C6EBXVWJJZMIWKLZ"),
])
def test_kube_proxy_hash_vectors(text, expected):
    assert hash16([text]) == [expected]


@settings(max_examples=200)
@given(st.lists(st.text(max_size=40), max_size=30))
def test_hash16_is_base32_of_sha256(texts):
    expected = [base64.b32encode(hashlib.sha256(t.encode()).digest()).decode()[:16] for t in texts]
    assert hash16(texts) == expected


def test_chain_names_are_kube_proxys_with_lbcore_prefix_and_fit():
    text = iptables.render(golden_services())
    assert "-j LBCORE-SVC-XPGD46QRK7WJZT7O" in text
    assert ":LBCORE-SVE-UKSFD7AGPMPPLUHC - [0:0]" in text  # kube-proxy's KUBE-SEP-UKSF...
    chains = re.findall(r"^(?::|-N )(\S+)", text, flags=re.M)
    assert all(c.startswith("LBCORE-") and len(c) <= 28 for c in chains)


def split_rules(service: Service, **options: object) -> list[str]:
    svc = next(l.split()[-1] for l in iptables.render([service], **options).splitlines()
               if l.startswith("-A LBCORE-SERVICES"))
    return [l for l in iptables.render([service], **options).splitlines()
            if l.startswith(f"-A {svc} ") and "--match-set" not in l]


def probabilities(rules: list[str]) -> list[str | None]:
    return [m.group(1) if (m := re.search(r"--probability (\S+)", r)) else None for r in rules]


def endpoints(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, weight=w) for i, w in enumerate(weights)]


def test_rr_split_is_one_over_n_with_ten_decimals_and_last_unconditional():
    rules = split_rules(Service("s", "10.96.0.1", 80, endpoints=endpoints(1, 7, 1)))
    # rr ignores weights other than 0, as IPVS rr does.
    assert probabilities(rules) == ["0.3333333333", "0.5000000000", None]
    assert probabilities(split_rules(Service("s", "10.96.0.1", 80, endpoints=endpoints(1)))) == [None]


@settings(max_examples=200)
@given(st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=12))
def test_wrr_probabilities_give_each_endpoint_its_weight_share(weights):
    eps = endpoints(*weights)
    rules = split_rules(Service("s", "10.96.0.1", 80, scheduler="wrr", endpoints=eps))
    weight_of = {e.address: e.weight for e in eps}
    total, passing = sum(weights), 1.0
    for rule, p in zip(rules, probabilities(rules)):
        chance = 1.0 if p is None else float(p)
        address = re.search(r'-> ([^"]+)"', rule).group(1)
        # Each probability is rounded to 10 decimals: shares are exact to about 1e-9.
        assert abs(passing * chance - weight_of[address] / total) < 1e-8
        passing *= 1 - chance


def test_wrr_with_equal_weights_is_rr():
    rr = Service("s", "10.96.0.1", 80, endpoints=endpoints(4, 4, 4, 4))
    assert iptables.render([rr]) == iptables.render([dataclasses.replace(rr, scheduler="wrr")])


@pytest.mark.parametrize("scheduler", ["lc", "wlc", "dh", "sh", "mh", "p2c", "ring"])
def test_schedulers_iptables_cannot_express_are_refused_by_name(scheduler):
    service = Service("ns1/db:pg", "10.96.0.5", 5432, scheduler=scheduler, endpoints=endpoints(1, 2))
    with pytest.raises(ConfigError) as err:
        iptables.render([service])
    assert err.value.field == "scheduler" and err.value.value == scheduler
    assert "ns1/db:pg" in str(err.value) and "fallback=True" in str(err.value)
    with pytest.raises(ConfigError):
        iptables.render_diff([], [service])


@pytest.mark.parametrize("scheduler, as_", sorted(iptables.FALLBACK.items()))
def test_fallback_renders_the_documented_scheduler(scheduler, as_):
    service = Service("ns1/db:pg", "10.96.0.5", 5432, scheduler=scheduler, endpoints=endpoints(1, 3))
    mapped = dataclasses.replace(service, scheduler=as_)
    assert iptables.render([service], fallback=True) == iptables.render([mapped])
    assert as_ == ("rr" if scheduler in ("lc", "dh") else "wrr")


def test_weight_zero_and_unusable_endpoints_get_no_chain():
    service = Service("s", "10.96.0.1", 80, endpoints=[
        Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80, weight=0),
        Endpoint("10.0.0.3", 80, ready=False)])
    text = iptables.render([service])
    assert "10.0.0.1:80" in text and "10.0.0.2" not in text and "10.0.0.3" not in text
    assert "--probability" not in text


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.booleans(), st.booleans()), max_size=6))
def test_the_diff_knows_which_table_a_service_renders_into_without_rendering_it(conditions):
    endpoints_ = [Endpoint(f"10.0.0.{i + 1}", 80, weight=w, ready=r, serving=s, terminating=t)
                  for i, (w, r, s, t) in enumerate(conditions)]
    service = Service("s", "10.96.0.1", 80, endpoints=endpoints_)
    assert iptables._has_endpoints(service) == bool(chosen_endpoints(service))


def test_no_usable_endpoint_is_rejected_in_filter_not_nat():
    for endpoints_ in ([], [Endpoint("10.0.0.1", 80, weight=0)], [Endpoint("10.0.0.1", 80, ready=False)]):
        text = iptables.render([Service("ns/s:p", "10.96.0.1", 80, endpoints=endpoints_)])
        filter_table, nat_table = text.split("*nat")
        assert ('-A LBCORE-SERVICES -m comment --comment "ns/s:p has no endpoints" '
                "-m tcp -p tcp -d 10.96.0.1 --dport 80 -j REJECT") in filter_table
        assert "10.96.0.1" not in nat_table


def test_order_is_deterministic_whatever_the_input_order():
    services = golden_services()
    expected = iptables.render(services)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = [dataclasses.replace(s, endpoints=rng.sample(s.endpoints, len(s.endpoints)))
                    for s in rng.sample(services, len(services))]
        assert iptables.render(shuffled) == expected
        assert iptables.render_diff(services, shuffled) == ""


def chain_of_each_command(payload: str) -> list[list[str]]:
    """Per transaction, the chains iptables-nft notes for each command: the chain it
    acts on and the chain it jumps to (nft-cache.c, nft_cache_level_set)."""
    transactions, names = [], []
    for line in payload.splitlines():
        if line == "COMMIT":
            transactions.append(names)
            names = []
        elif line.startswith(":"):
            names.append(line[1:].split()[0])
        elif line.startswith("-"):
            names.append(line.split()[1])
            if jump := re.search(r" -j (LBCORE-\S+)", line):
                names.append(jump.group(1))
    return transactions


def test_commands_come_in_descending_chain_order_so_iptables_nft_stays_linear():
    # See "Order" in lbcore.render.iptables: every command's chain, and every chain
    # declaration, sorts at or below everything noted before it in its transaction,
    # apart from the few fixed chains (and a jump's target, which is declared earlier).
    services = golden_services() + [Service(f"ns/s{i}:p", f"10.97.0.{i}", 80, endpoints=endpoints(1, 1, 1))
                                    for i in range(1, 60)]
    new = services[5:] + [Service("ns/z:p", "10.98.0.1", 80, endpoints=endpoints(1))]
    fixed = {"LBCORE-SERVICES", "LBCORE-POSTROUTING", "LBCORE-MARK-MASQ"}
    for payload in (iptables.render(services), iptables.render(services, install=True),
                    iptables.render_diff(services, new)):
        for names in chain_of_each_command(payload):
            hashed = [n for n in names if n.startswith("LBCORE-") and n not in fixed]
            declared_first = [n for n in dict.fromkeys(hashed)]
            assert declared_first == sorted(declared_first, reverse=True)
            assert all(n > f for n in hashed for f in fixed)


def quicksort_depth(names: list[str]) -> int:
    """How deep iptables-save's chain sort recurses (nft-cache.c __nft_chain_list_sort:
    the first chain is the pivot, smaller ones go left): the depth of the search tree
    built by inserting the chains in creation order."""
    depth, stack = 0, [(names, 1)]
    while stack:
        items, level = stack.pop()
        if items:
            depth = max(depth, level)
            pivot, rest = items[0], items[1:]
            stack += [([n for n in rest if n < pivot], level + 1), ([n for n in rest if n > pivot], level + 1)]
    return depth


def test_large_payloads_create_chains_in_an_order_iptables_save_can_sort():
    services = [Service(f"ns/s{i}:p", f"10.97.{i // 250}.{i % 250 + 1}", 80, endpoints=endpoints(1, 1, 1, 1))
                for i in range(1100)]  # 5,500 chains
    nat = iptables.render(services).split("*nat\n")[1]
    created = list(dict.fromkeys(re.findall(r"^:(LBCORE-SV\S+)", nat, flags=re.M)))
    assert len(created) == 5500
    # In plain descending order the sort would recurse 5,500 deep; 15 pivots first cut it
    # to a sixteenth (plus the 4 levels of the pivots).
    assert quicksort_depth(sorted(created, reverse=True)) == 5500
    assert quicksort_depth(created) <= 5500 // 16 + 5
    small = iptables.render(services[:100]).split("*nat\n")[1]
    assert len(re.findall(r"^:LBCORE-SV", small, flags=re.M)) == 500  # no pivots: each chain once


def test_long_names_are_cut_in_comments_only():
    name = "n" * 253
    text = iptables.render([Service(name, "fd00::1", 80, endpoints=[
        Endpoint("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535)])], family=6)
    comments = re.findall(r'--comment "([^"]*)"', text)
    assert max(map(len, comments)) == 255  # xt_comment's limit, reached exactly
    assert f"{hash16([name + 'tcp'])[0]}" in text  # the chain name hashes the whole name


# -- what is refused ----------------------------------------------------------------

@pytest.mark.parametrize("name", [
    'web" -j ACCEPT', "web\n-A INPUT -j ACCEPT", "web\nCOMMIT", "-j ACCEPT", "web app",
    "web'", "web\\", "",
])
def test_the_model_refuses_names_that_could_carry_a_rule(name):
    with pytest.raises(ConfigError) as err:
        Service(name, "10.96.0.1", 80)
    assert err.value.field == "name"


@pytest.mark.parametrize("name", ["COMMIT", "ns/-j:ACCEPT", "a--dport", "x:-A"])
def test_names_the_model_accepts_stay_inside_their_quotes(name):
    services = [Service(name, "10.96.0.1", 80, endpoints=endpoints(1, 1)),
                Service(name, "10.96.0.2", 81, protocol="udp")]
    lines = iptables.render(services).splitlines()
    assert [l for l in lines if not l.startswith(("-", ":", "#"))] == ["*filter", "COMMIT", "*nat", "COMMIT"]
    for line in (l for l in lines if l.startswith(("-", ":"))):
        # Outside the quotes of its comment, a rule has no trace of the name.
        assert name not in re.sub(r'--comment "[^"]*"', "", line)


def tampered(name: str) -> Service:
    service = Service("web", "10.96.0.1", 80, endpoints=endpoints(1))
    object.__setattr__(service, "name", name)  # bypasses the frozen model's validation
    return service


@pytest.mark.parametrize("name", ['web" -j ACCEPT', "web\nCOMMIT", None])
def test_the_renderer_refuses_a_tampered_name_too(name):
    for render in (lambda s: iptables.render(s), lambda s: iptables.render_diff([], s),
                   lambda s: iptables.render_diff(s, [])):
        with pytest.raises(ConfigError) as err:
            render([tampered(name)])
        assert err.value.field == "services[0].name"


def test_services_that_would_share_a_chain_or_a_match_are_refused():
    web = Service("ns/web:http", "10.96.0.1", 80)
    with pytest.raises(ConfigError, match=r"services\[1\]\.name: 'ns/web:http' is also services\[0\]"):
        iptables.render([web, Service("ns/web:http", "10.96.0.2", 80)])
    with pytest.raises(ConfigError, match=r"services\[1\]: '10.96.0.1:80/tcp' is also served by services\[0\]"):
        iptables.render([web, Service("ns/other:http", "10.96.0.1", 80)])
    with pytest.raises(ConfigError, match="is not an lbcore Service"):
        iptables.render([web, "web"])
    # Same name, other protocol or other family (dual stack): other chains.
    iptables.render([web, Service("ns/web:http", "10.96.0.1", 80, protocol="udp"),
                     Service("ns/web:http", "fd00::1", 80)])


def test_family_must_be_4_or_6():
    with pytest.raises(ConfigError, match="family: 5 must be 4 or 6"):
        iptables.render([], family=5)


def test_import_lbcore_does_not_import_the_renderers():
    code = "import sys, lbcore; print(any(m.startswith('lbcore.render') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- partial sync, against a model of iptables-restore --noflush --------------------

class Tables:
    """What ``iptables-restore --noflush`` does with lbcore's lines, per table: a chain
    line creates or flushes, ``-N`` creates, -A appends, -I N inserts at N, -D deletes
    the first rule with that text, -C checks, -X deletes an empty chain nothing jumps
    to.  Any failure raises, as the real tool fails the table."""

    def __init__(self) -> None:
        self.chains: dict[str, dict[str, list[str]]] = {
            "filter": {"INPUT": [], "FORWARD": [], "OUTPUT": []},
            "nat": {"PREROUTING": [], "INPUT": [], "OUTPUT": [], "POSTROUTING": []},
        }

    def restore(self, payload: str) -> None:
        table = None
        for line in payload.splitlines():
            if not line or line.startswith("#") or line == "COMMIT":
                continue
            if line.startswith("*"):
                table = self.chains[line[1:]]
                continue
            assert table is not None
            if line.startswith(":"):
                table[line[1:].split()[0]] = []
                continue
            command, chain, *rest = line.split(" ", 2)
            spec = rest[0] if rest else ""
            if command == "-N":
                assert chain not in table
                table[chain] = []
            elif command == "-A":
                table[chain].append(spec)
            elif command == "-I":
                position, spec = spec.split(" ", 1)
                assert int(position) <= len(table[chain]) + 1
                table[chain].insert(int(position) - 1, spec)
            elif command == "-D":
                table[chain].remove(spec)
            elif command == "-C":
                assert spec in table.get(chain, [])
            elif command == "-X":
                assert table[chain] == []
                assert not any(f"-j {chain}" in rule for rules in table.values() for rule in rules)
                del table[chain]
            else:
                raise AssertionError(line)


def random_services(rng: random.Random, count: int) -> list[Service]:
    services = []
    for i in rng.sample(range(count * 2), count):
        eps = [Endpoint(f"10.{i}.0.{j}", rng.choice([80, 8080]), weight=rng.choice([0, 1, 1, 3]),
                        ready=rng.random() > 0.2, terminating=rng.random() < 0.3)
               for j in rng.sample(range(1, 9), rng.randint(0, 4))]
        services.append(Service(
            f"ns{i % 3}/s{i}:p", f"10.96.{i}.{rng.choice([1, 2])}", rng.choice([80, 443]),
            protocol=rng.choice(["tcp", "udp"]), scheduler=rng.choice(["rr", "wrr"]),
            affinity_timeout=rng.choice([None, 30]), endpoints=eps))
    return services


@settings(max_examples=150, deadline=None)
@given(st.randoms(use_true_random=False))
def test_partial_sync_from_old_equals_full_render_of_new(rng):
    old = random_services(rng, 12)
    pool = old + random_services(rng, 12)
    # The new set: a mix of kept objects, equal copies, changed and new Services
    # (a name used twice would be refused; keep the first).
    new: dict[tuple[str, str, int], Service] = {}
    for service in rng.sample(pool, rng.randint(0, len(pool))):
        if rng.random() < 0.3:
            service = dataclasses.replace(service)
        new.setdefault((service.name, service.protocol, service.family), service)
    addresses = set()
    new_list = [s for s in new.values()
                if (s.vip, s.port, s.protocol) not in addresses
                and not addresses.add((s.vip, s.port, s.protocol))]

    partial, full = Tables(), Tables()
    partial.restore(iptables.render(old, install=True))
    partial.restore(iptables.render_diff(old, new_list))
    full.restore(iptables.render(new_list, install=True))
    assert partial.chains == full.chains


def test_partial_sync_of_one_endpoint_touches_one_service():
    services = [Service(f"ns/s{i}:p", f"10.96.0.{i}", 80, endpoints=endpoints(1, 1, 1)) for i in range(1, 50)]
    new = list(services)
    new[20] = dataclasses.replace(services[20], endpoints=endpoints(1, 1))
    diff = iptables.render_diff(services, new)
    assert "LBCORE-SERVICES" not in diff  # the services chain is not touched
    # The service chain rewritten, the gone endpoint's chain flushed, then deleted.
    assert diff.count("\n:") == 2 and diff.count("\n-X ") == 1
    assert "*filter" not in diff


def test_partial_sync_edits_the_services_chain_rule_by_rule():
    services = [Service(f"ns/s{i}:p", f"10.96.0.{i}", 80, endpoints=endpoints(1)) for i in range(1, 6)]
    new = services[:2] + services[3:] + [Service("ns/s0:p", "10.96.0.9", 80, endpoints=endpoints(1))]
    diff = iptables.render_diff(services, new).splitlines()
    assert [l.split(" -m")[0] for l in diff if "LBCORE-SERVICES" in l] == [
        "-D LBCORE-SERVICES", "-I LBCORE-SERVICES 1"]
    assert sum(l.startswith("-X ") for l in diff) == 2  # s3's service and endpoint chains


# -- the garbage collector pause ----------------------------------------------------

@pytest.mark.parametrize("enabled", [True, False])
def test_paused_gc_restores_the_collector_state(enabled):
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(ZeroDivisionError), paused_gc():
            assert not gc.isenabled()
            1 / 0
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_slow_start_is_refused_or_dropped_with_fallback():
    ramping = Service("web", "10.96.0.10", 80, scheduler="wrr", slow_start=30,
                      endpoints=[Endpoint("10.1.0.5", 8080), Endpoint("10.1.0.6", 8080, weight=3)])
    with pytest.raises(ConfigError) as error:
        iptables.render([ramping])
    assert error.value.field == "slow_start"
    assert "'web'" in str(error.value) and "fallback=True" in str(error.value)
    with pytest.raises(ConfigError):
        iptables.render_diff([], [ramping])
    plain = dataclasses.replace(ramping, slow_start=None)
    assert iptables.render([ramping], fallback=True) == iptables.render([plain])
    assert iptables.render([dataclasses.replace(plain, panic_threshold=50)]) == iptables.render([plain])
