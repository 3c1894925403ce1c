"""Rendered nftables tables carry real TCP connections in a namespace.

Topology as in test_iptables_traffic.py: backends on 127.0.0.1 ports answer with their
port and the client address they saw; vips are other 127.x addresses (all of 127/8 is
local on lo), so the client's connections are locally generated and take nat output
(DNAT) and filter output (REJECT).  A sentinel listens on each vip:port itself: a
connection that escaped the rules would reach it, so every backend answer really is a
DNAT and "refused" really is the REJECT.  Client source addresses come from 127/8 too.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import pytest
from _nft_netns import NftNetns, kernel

from lbcore import Endpoint, Service
from lbcore.render import nft

pytestmark = kernel

VIP = "127.1.0.1"
PORTS = [18001 + i for i in range(10)]


@pytest.fixture
def ns():
    with NftNetns() as netns:
        yield netns


def backend_ports(answers: list[str]) -> list[int]:
    return [int(answer.split()[0]) for answer in answers]  # raises on "refused"/"timeout"


def assert_binomial(counts: collections.Counter, shares: dict[int, float], total: int) -> None:
    # Each count is Binomial(total, share): within 5 standard deviations, a false failure
    # has odds of about 1 in 1.7 million per count.
    for port, share in shares.items():
        sigma = math.sqrt(total * share * (1 - share))
        assert abs(counts[port] - total * share) <= 5 * sigma, (port, counts, shares)


def endpoints(*weights: int) -> list[Endpoint]:
    return [Endpoint("127.0.0.1", port, weight=w) for port, w in zip(PORTS, weights)]


def clients(n: int, first: int = 0) -> list[str]:
    """``n`` distinct client addresses: 127.2.0.1 onwards (any 127/8 address is local)."""
    return [f"127.{2 + i // 65024}.{i // 254 % 256}.{1 + i % 254}" for i in range(first, first + n)]


def visit(ns: NftNetns, vip: str, sources: list[str | None], port: int = 80) -> list[int]:
    return backend_ports(ns.connect_all([(vip, port, source) for source in sources]))


def test_rr_splits_evenly_and_every_connection_lands(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{VIP}:80")
    ns.nft(nft.render([Service("web", VIP, 80, endpoints=endpoints(1, 1, 1))]))
    ports = visit(ns, VIP, [None] * 600)
    assert set(ports) == set(PORTS[:3])  # the sentinel on port 80 never answered
    assert_binomial(collections.Counter(ports), {p: 1 / 3 for p in PORTS[:3]}, 600)


def test_udp_services_balance_stick_and_refuse(ns):
    # Separate maps per protocol: a UDP Service has its own, and UDP goes through the
    # same pick chains' kind; no hidden tcp match drops it (nft 1.0.6 added one to the
    # first rule of a map typed "tcp dport", see lbcore.render.nft).
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{VIP}:53", "127.1.0.2:53", udp=True)
    ns.nft(nft.render([
        Service("dns", VIP, 53, protocol="udp", endpoints=endpoints(1, 1, 1)),
        Service("sticky-dns", "127.1.0.2", 53, protocol="udp", affinity_timeout=60, endpoints=endpoints(1, 1, 1)),
        Service("empty-dns", "127.1.0.3", 53, protocol="udp"),
        Service("web", VIP, 80, endpoints=endpoints(1)),  # a TCP Service beside them
    ]))
    answers = backend_ports(ns.ask_udp([(VIP, 53, None)] * 300))
    assert_binomial(collections.Counter(answers), {p: 1 / 3 for p in PORTS[:3]}, 300)
    sources = clients(60)
    sticky = backend_ports(ns.ask_udp([("127.1.0.2", 53, s) for s in sources]))
    assert len(set(sticky)) == 3 and backend_ports(ns.ask_udp([("127.1.0.2", 53, s) for s in sources])) == sticky
    assert ns.ask_udp([("127.1.0.3", 53, None)]) == ["refused"]


def test_wrr_splits_by_weight_and_skips_weight_zero(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{VIP}:80")
    ns.nft(nft.render([Service("web", VIP, 80, scheduler="wrr", endpoints=endpoints(1, 3, 0))]))
    counts = collections.Counter(visit(ns, VIP, [None] * 800))
    assert counts[PORTS[2]] == 0
    assert_binomial(counts, {PORTS[0]: 0.25, PORTS[1]: 0.75}, 800)


def test_sh_keeps_each_client_on_one_endpoint_and_follows_weights(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{VIP}:80")
    ns.nft(nft.render([Service("web", VIP, 80, scheduler="sh", endpoints=endpoints(1, 2, 3))]))
    sources = clients(1200)
    first = visit(ns, VIP, sources)
    assert visit(ns, VIP, sources) == first
    assert_binomial(collections.Counter(first), {PORTS[0]: 1 / 6, PORTS[1]: 2 / 6, PORTS[2]: 3 / 6}, 1200)


def test_dh_sends_each_destination_to_one_endpoint_and_spreads_destinations(ns):
    # dh hashes the destination, the vip: one endpoint per Service whatever the client,
    # and Services spread over the endpoints.  300 Services on 127.3.x.y.
    vips = [f"127.3.{i // 250}.{1 + i % 250}" for i in range(300)]
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), *(f"{vip}:80" for vip in vips))
    ns.nft(nft.render([Service(f"dh{i}", vip, 80, scheduler="dh", endpoints=endpoints(1, 1, 1))
                       for i, vip in enumerate(vips)]))
    sources = clients(3)
    answers = backend_ports(ns.connect_all([(vip, 80, s) for vip in vips for s in sources]))
    per_vip = [set(answers[i : i + 3]) for i in range(0, len(answers), 3)]
    assert all(len(ports) == 1 for ports in per_vip)
    assert_binomial(collections.Counter(p for ports in per_vip for p in ports),
                    {p: 1 / 3 for p in PORTS[:3]}, 300)


def moved(before: list[int], after: list[int]) -> float:
    return sum(a != b for a, b in zip(before, after)) / len(before)


def test_mh_moves_about_one_client_in_ten_when_one_of_ten_endpoints_leaves(ns):
    # The same 1,500 clients through mh (lbcore's Maglev table as data) and through
    # sh, which is jhash ... mod n re-rendered for the endpoints that are left.
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS), f"{VIP}:80", "127.1.0.2:80")
    ten = endpoints(*[1] * 10)
    nine = ten[:4] + ten[5:]
    old = [Service("mh", VIP, 80, scheduler="mh", endpoints=ten),
           Service("sh", "127.1.0.2", 80, scheduler="sh", endpoints=ten)]
    new = [dataclasses.replace(s, endpoints=nine) for s in old]
    ns.nft(nft.render(old))
    sources = clients(1500)
    mh_before, sh_before = visit(ns, VIP, sources), visit(ns, "127.1.0.2", sources)
    assert visit(ns, VIP, sources) == mh_before  # no affinity: the hash alone keeps them
    ns.nft(nft.render_diff(old, new))
    mh_after, sh_after = visit(ns, VIP, sources), visit(ns, "127.1.0.2", sources)
    assert PORTS[4] not in mh_after + sh_after
    print(f"\n1 of 10 endpoints removed, 1,500 clients: mh moved {moved(mh_before, mh_after):.1%}, "
          f"jhash mod n (sh) moved {moved(sh_before, sh_after):.1%}")
    assert moved(mh_before, mh_after) <= 0.15  # the ideal is 1/10
    assert moved(sh_before, sh_after) > moved(mh_before, mh_after) + 0.10
    # Every client of the endpoint that left moved (it is gone), and most of the others
    # stayed where they were.
    stayed = [b == a for b, a in zip(mh_before, mh_after) if b != PORTS[4]]
    assert sum(stayed) / len(stayed) >= 0.95


@pytest.mark.slow
def test_affinity_keeps_ten_thousand_clients_on_their_endpoint(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{VIP}:80")
    sticky = Service("web", VIP, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1))
    ns.nft(nft.render([sticky]))
    sources = clients(10_000)
    first = visit(ns, VIP, sources)
    assert_binomial(collections.Counter(first), {p: 1 / 3 for p in PORTS[:3]}, len(sources))
    assert visit(ns, VIP, sources) == first  # 0 moved
    [chain] = [line for line in ns.run("nft", "list", "table", "ip", "lbcore").stdout.splitlines()
               if line.strip().startswith("map affinity-")]
    held = ns.run("nft", "list", "map", "ip", "lbcore", chain.split()[1]).stdout
    assert held.count(" expires ") == 10_000


def test_affinity_survives_a_diff_and_an_endpoint_takes_only_its_clients_along(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]), f"{VIP}:80")
    two = [Service("web", VIP, 80, affinity_timeout=600, endpoints=endpoints(1, 1))]
    three = [Service("web", VIP, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1))]
    ns.nft(nft.render(two))
    sources = clients(300)
    first = visit(ns, VIP, sources)
    assert set(first) == set(PORTS[:2])
    ns.nft(nft.render_diff(two, three))  # a third endpoint joins: nobody moves
    assert visit(ns, VIP, sources) == first
    assert PORTS[2] in visit(ns, VIP, clients(300, first=300))
    one_left = [Service("web", VIP, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1)[1:])]
    ns.nft(nft.render_diff(three, one_left))  # the first endpoint leaves
    after = visit(ns, VIP, sources)
    assert all(b == a for b, a in zip(first, after) if b != PORTS[0])  # the others stay
    assert PORTS[0] not in after


def test_service_without_usable_endpoint_is_refused_at_once(ns):
    ns.serve("127.1.0.2:80", "127.1.0.3:80", "127.0.0.1:18001")
    ns.nft(nft.render([
        Service("empty", "127.1.0.2", 80),
        Service("quiesced", "127.1.0.3", 80, endpoints=[Endpoint("127.0.0.1", 18001, weight=0)]),
    ]))
    for vip in ("127.1.0.2", "127.1.0.3"):
        assert ns.connect_all([(vip, 80, None)] * 3) == ["refused"] * 3


def test_terminating_endpoints_serve_when_none_is_ready(ns):
    ns.serve("127.0.0.1:18001", "127.0.0.1:18002", f"{VIP}:80")
    draining = Endpoint("127.0.0.1", 18001, ready=False, serving=True, terminating=True)
    gone = Endpoint("127.0.0.1", 18002, ready=False, serving=False, terminating=True)
    ns.nft(nft.render([Service("web", VIP, 80, endpoints=[draining, gone])]))
    assert set(visit(ns, VIP, [None] * 50)) == {18001}


def test_the_packet_mark_comes_through_a_sticky_pick_unchanged(ns):
    # Another table marks the first packet before DNAT and counts, after lbcore's
    # restore, the packets that still carry the mark (0x4000 is kube-proxy's bit).
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:2]), f"{VIP}:80")
    ns.nft("""table ip other {
        chain marker { type route hook output priority -150; ct state new ip daddr 127.1.0.1 meta mark set 0x4321; }
        chain tally { type filter hook output priority -80;
            ct state new ip daddr 127.0.0.1 meta mark 0x4321 counter
            ct state new ip daddr 127.0.0.1 counter
        }
    }""")
    ns.nft(nft.render([Service("web", VIP, 80, affinity_timeout=60, endpoints=endpoints(1, 1))]))
    visit(ns, VIP, clients(40) * 2)
    counters = ns.run("nft", "list", "chain", "ip", "other", "tally").stdout
    assert counters.count("counter packets 80 ") == 2, counters
    assert "elements" not in ns.run("nft", "list", "map", "ip", "lbcore", "saved-marks").stdout


def test_hairpin_traffic_is_masqueraded(ns):
    # An endpoint reaching its own Service is masqueraded, so the reply comes back
    # through conntrack.  MASQUERADE needs a global-scope address: the endpoint is
    # 192.0.2.10, beside 192.0.2.1, which MASQUERADE picks (as in the iptables test).
    ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "lo")
    ns.run("ip", "addr", "add", "192.0.2.10/24", "dev", "lo")
    ns.serve("192.0.2.10:18100", f"{VIP}:80")
    ns.nft(nft.render([Service("web", VIP, 80, endpoints=[Endpoint("192.0.2.10", 18100)])]))
    assert ns.connect_all([(VIP, 80, "192.0.2.10"), (VIP, 80, "127.0.0.2")]) == [
        "18100 192.0.2.1",  # masqueraded
        "18100 127.0.0.2",  # not hairpin: the client's own address
    ]


def test_ipv6_services_balance_stick_and_refuse(ns):
    ns.run("ip", "-6", "addr", "add", "fd00::1/128", "dev", "lo")
    ns.run("ip", "-6", "addr", "add", "fd00::2/128", "dev", "lo")
    # Clients from fd00:99::/120: local by route, bindable without being assigned.
    ns.run("ip", "-6", "route", "add", "local", "fd00:99::/120", "dev", "lo")
    ns.run("sysctl", "-q", "net.ipv6.ip_nonlocal_bind=1")
    ns.serve("[::1]:18001", "[::1]:18002", "[fd00::1]:80", "[fd00::1]:81", "[fd00::2]:80")
    six = [Endpoint("::1", 18001), Endpoint("::1", 18002)]
    ns.nft(nft.render([
        Service("web6", "fd00::1", 80, endpoints=six),
        Service("sticky6", "fd00::1", 81, affinity_timeout=60, endpoints=six),
        Service("empty6", "fd00::2", 80),
    ]))
    assert set(visit(ns, "fd00::1", [None] * 60)) == {18001, 18002}
    sources = [f"fd00:99::{i:x}" for i in range(1, 101)]
    sticky = visit(ns, "fd00::1", sources, port=81)
    assert set(sticky) == {18001, 18002} and visit(ns, "fd00::1", sources, port=81) == sticky
    assert ns.connect_all([("fd00::2", 80, None)]) == ["refused"]


def test_traffic_from_another_host_takes_prerouting_and_forward(ns):
    # A second namespace plays a client host behind a veth pair; the vips are nobody's
    # address, like ClusterIPs (see test_iptables_traffic.py for the sysctls).
    with NftNetns() as client:
        ns.run("ip", "link", "add", "c0", "type", "veth", "peer", "name", "c1", "netns", client.name)
        ns.run("ip", "addr", "add", "10.99.0.1/24", "dev", "c0")
        ns.run("ip", "link", "set", "c0", "up")
        ns.run("ip", "route", "add", "default", "via", "10.99.0.2")
        ns.run("sysctl", "-q", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.ip_forward=1",
               "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.c0.send_redirects=0")
        client.run("ip", "addr", "add", "10.99.0.2/24", "dev", "c1")
        client.run("ip", "link", "set", "c1", "up")
        client.run("ip", "route", "add", "default", "via", "10.99.0.1")
        ns.serve(*(f"127.0.0.1:{p}" for p in PORTS[:3]))
        ns.nft(nft.render([
            Service("web", "10.99.1.1", 80, endpoints=endpoints(1, 1, 1)),
            Service("sticky", "10.99.1.3", 80, affinity_timeout=60, endpoints=endpoints(1, 1, 1)),
            Service("empty", "10.99.1.2", 80),
        ]))
        answers = client.connect_all([("10.99.1.1", 80, None)] * 300)
        assert_binomial(collections.Counter(backend_ports(answers)), {p: 1 / 3 for p in PORTS[:3]}, 300)
        assert {a.split()[1] for a in answers} == {"10.99.0.2"}  # not masqueraded
        assert len(set(backend_ports(client.connect_all([("10.99.1.3", 80, None)] * 20)))) == 1
        assert client.connect_all([("10.99.1.2", 80, None)]) == ["refused"]
