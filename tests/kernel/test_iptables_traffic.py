"""Rendered iptables and ipset payloads carry real TCP connections in a namespace.

Topology: backends on 127.0.0.1 ports, each answering with its port and the client
address it saw; vips are other 127.x addresses (all of 127.0.0.0/8 is local on lo).  The
client runs in the namespace, so its connections are locally generated: they pass nat
OUTPUT (DNAT) and filter OUTPUT (REJECT), no PREROUTING, and DNAT from OUTPUT to
127.0.0.1 needs no ``route_localnet`` (that sysctl is for routing packets that arrive
from outside to 127/8).  A "sentinel" server listens on each vip:port itself: a
connection that escaped the rules would reach it, so "refused" really means REJECT and
every backend port answer really means DNAT.
"""

from __future__ import annotations

import collections
import math
import re

import pytest
from _iptables_netns import Netns, kernel

from lbcore import Endpoint, Service
from lbcore.render import ipset, iptables

pytestmark = kernel

VIP = "127.1.0.1"
PORTS = [18001, 18002, 18003]


@pytest.fixture
def ns():
    with Netns() as netns:
        yield netns


def apply(ns: Netns, services: list[Service]) -> None:
    ns.ipset_restore(ipset.render(services))
    ns.iptables_restore(iptables.render(services, install=True))


def backend_ports(answers: list[str]) -> list[int]:
    return [int(answer.split()[0]) for answer in answers]


def assert_binomial(counts: collections.Counter, shares: dict[int, float], total: int) -> None:
    # Each count is Binomial(total, share): within 5 standard deviations, a false failure
    # has odds of about 1 in 1.7 million per count.
    for port, share in shares.items():
        sigma = math.sqrt(total * share * (1 - share))
        assert abs(counts[port] - total * share) <= 5 * sigma, (port, counts, shares)


def endpoints(*weights: int) -> list[Endpoint]:
    return [Endpoint("127.0.0.1", port, weight=w) for port, w in zip(PORTS, weights)]


def test_every_connection_lands_and_rr_splits_evenly(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS), f"{VIP}:80")
    apply(ns, [Service("web", VIP, 80, endpoints=endpoints(1, 1, 1))])
    answers = ns.connect(VIP, 80, [None] * 600)
    ports = backend_ports(answers)  # raises on "refused"/"timeout"
    assert set(ports) == set(PORTS)  # the sentinel on port 80 never answered
    assert_binomial(collections.Counter(ports), {p: 1 / 3 for p in PORTS}, 600)


def test_wrr_splits_by_weight_and_skips_weight_zero(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS), f"{VIP}:80")
    weighted = [Endpoint("127.0.0.1", 18001, weight=1), Endpoint("127.0.0.1", 18002, weight=3),
                Endpoint("127.0.0.1", 18003, weight=0)]
    apply(ns, [Service("web", VIP, 80, scheduler="wrr", endpoints=weighted)])
    counts = collections.Counter(backend_ports(ns.connect(VIP, 80, [None] * 800)))
    assert counts[18003] == 0
    assert_binomial(counts, {18001: 0.25, 18002: 0.75}, 800)


def test_service_without_usable_endpoint_is_refused(ns):
    ns.serve(f"127.1.0.2:80", f"127.1.0.3:80", "127.0.0.1:18001")
    apply(ns, [
        Service("empty", "127.1.0.2", 80),
        Service("quiesced", "127.1.0.3", 80, endpoints=[Endpoint("127.0.0.1", 18001, weight=0)]),
    ])
    assert ns.connect("127.1.0.2", 80, [None] * 3) == ["refused"] * 3
    assert ns.connect("127.1.0.3", 80, [None] * 3) == ["refused"] * 3


def test_terminating_endpoints_serve_when_none_is_ready(ns):
    ns.serve("127.0.0.1:18001", "127.0.0.1:18002", f"{VIP}:80")
    draining = Endpoint("127.0.0.1", 18001, ready=False, serving=True, terminating=True)
    gone = Endpoint("127.0.0.1", 18002, ready=False, serving=False, terminating=True)
    apply(ns, [Service("web", VIP, 80, endpoints=[draining, gone])])
    assert set(backend_ports(ns.connect(VIP, 80, [None] * 50))) == {18001}


def distinct_sources(n: int) -> list[str]:
    # 127.2.0.1 onwards: every address of 127/8 is a local address a socket can bind.
    return [f"127.{2 + i // 65024}.{i // 254 % 256}.{1 + i % 254}" for i in range(n)]


@pytest.mark.slow
def test_affinity_keeps_ten_thousand_clients_on_their_backend(ns):
    # kube-proxy's -m recent lists hold 100 clients per endpoint; the ipset sets are
    # sized for 10,000 (lbcore.render.ipset.HASHSIZE), so this is the claim itself.
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS), f"{VIP}:80")
    sticky = Service("web", VIP, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1))
    apply(ns, [sticky])
    clients = distinct_sources(10_000)
    first = backend_ports(ns.connect(VIP, 80, clients))
    assert_binomial(collections.Counter(first), {p: 1 / 3 for p in PORTS}, len(clients))
    second = backend_ports(ns.connect(VIP, 80, clients))
    moved = sum(a != b for a, b in zip(first, second))
    assert moved == 0
    held = ns.run("ipset", "list", "-t").stdout
    assert sum(int(n) for n in re.findall(r"Number of entries: (\d+)", held)) == 10_000


def test_affinity_keeps_a_client_and_survives_a_partial_sync(ns):
    ns.serve(*(f"127.0.0.1:{p}" for p in PORTS), f"{VIP}:80")
    old = [Service("web", VIP, 80, affinity_timeout=600, endpoints=endpoints(1, 1))]
    apply(ns, old)
    clients = distinct_sources(300)
    first = backend_ports(ns.connect(VIP, 80, clients))
    assert len(set(first)) == 2
    assert backend_ports(ns.connect(VIP, 80, clients[:1] * 50)) == first[:1] * 50

    # A third endpoint joins: sticky clients stay where they are, as in lbcore.Affinity.
    new = [Service("web", VIP, 80, affinity_timeout=600, endpoints=endpoints(1, 1, 1))]
    ns.ipset_restore(ipset.render_diff(old, new))
    ns.iptables_restore(iptables.render_diff(old, new))
    ns.ipset_restore(ipset.render_cleanup(old, new))
    assert backend_ports(ns.connect(VIP, 80, clients)) == first
    newcomers = backend_ports(ns.connect(VIP, 80, distinct_sources(600)[300:]))
    assert 18003 in newcomers


def test_hairpin_traffic_is_masqueraded(ns):
    # An endpoint that reaches its own Service: its source is masqueraded, so the reply
    # comes back through conntrack.  MASQUERADE needs a global-scope address (127.0.0.1
    # is host scope), so the endpoint is 192.0.2.10 (TEST-NET-1, inside the namespace),
    # a secondary address beside 192.0.2.1, which MASQUERADE picks as the source.
    ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "lo")
    ns.run("ip", "addr", "add", "192.0.2.10/24", "dev", "lo")
    ns.serve("192.0.2.10:18100", f"{VIP}:80")
    apply(ns, [Service("web", VIP, 80, endpoints=[Endpoint("192.0.2.10", 18100)])])
    [from_endpoint] = ns.connect(VIP, 80, ["192.0.2.10"])
    [from_elsewhere] = ns.connect(VIP, 80, ["127.0.0.2"])
    assert from_endpoint == "18100 192.0.2.1"  # masqueraded
    assert from_elsewhere == "18100 127.0.0.2"  # not hairpin: the client's own address


def test_traffic_from_another_host_takes_the_prerouting_and_forward_hooks(ns):
    # A second namespace plays a client host, linked by a veth pair; the vips are not
    # addresses of either namespace, like ClusterIPs, so packets reach the balancer by
    # its route.  DNAT in PREROUTING to a 127.0.0.1 backend needs route_localnet on
    # the balancer: without it the kernel drops arriving packets bound for 127/8 as
    # martians.  A vip with no endpoint is forwarded (ip_forward, and a default route,
    # as a node has) and rejected in filter FORWARD; without the REJECT it would bounce
    # between the two namespaces until its TTL ran out.  Forwarding back out of the
    # interface it came in on makes the kernel send an ICMP redirect first, and that
    # uses up the per-host ICMP rate limit the REJECT's port-unreachable needs, so
    # redirects are off.
    with Netns() as client:
        ns.run("ip", "link", "add", "c0", "type", "veth", "peer", "name", "c1", "netns", client.name)
        ns.run("ip", "addr", "add", "10.99.0.1/24", "dev", "c0")
        ns.run("ip", "link", "set", "c0", "up")
        ns.run("ip", "route", "add", "default", "via", "10.99.0.2")
        ns.run("sysctl", "-q", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.ip_forward=1",
               "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.c0.send_redirects=0")
        client.run("ip", "addr", "add", "10.99.0.2/24", "dev", "c1")
        client.run("ip", "link", "set", "c1", "up")
        client.run("ip", "route", "add", "default", "via", "10.99.0.1")
        ns.serve(*(f"127.0.0.1:{p}" for p in PORTS))
        apply(ns, [
            Service("web", "10.99.1.1", 80, endpoints=endpoints(1, 1, 1)),
            Service("empty", "10.99.1.2", 80),
        ])
        answers = client.connect("10.99.1.1", 80, [None] * 300)
        counts = collections.Counter(backend_ports(answers))
        assert_binomial(counts, {p: 1 / 3 for p in PORTS}, 300)
        assert {a.split()[1] for a in answers} == {"10.99.0.2"}  # not masqueraded
        assert client.connect("10.99.1.2", 80, [None]) == ["refused"]
