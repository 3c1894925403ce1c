"""The Kubernetes sample dump, rendered by examples/render_from_kubernetes.py, loads into
a real kernel: ipset, iptables and ip6tables in a throw-away namespace."""

from __future__ import annotations

from _iptables_netns import Netns, kernel

from test_example_kubernetes import render_example

pytestmark = kernel


def test_sample_dump_applies_in_a_namespace(tmp_path):
    render_example(tmp_path)
    with Netns() as ns:
        ns.run("ipset", "restore", input=(tmp_path / "ipset.restore").read_text())
        ns.run("iptables-restore", "--noflush", input=(tmp_path / "iptables.restore").read_text())
        ns.run("ip6tables-restore", "--noflush", input=(tmp_path / "ip6tables.restore").read_text())
        saved = ns.run("iptables-save", "-t", "nat").stdout
        saved6 = ns.run("ip6tables-save", "-t", "nat").stdout
        sets = ns.run("ipset", "list", "-n").stdout.split()
    assert saved.count("-j DNAT --to-destination") == 19  # 21 usable endpoints, 2 of them IPv6
    assert "-A OUTPUT -m comment --comment \"lbcore service portals\" -j LBCORE-SERVICES" in saved
    assert "--to-destination [fd00:10:244:1::28]:9200" in saved6
    assert len([s for s in sets if s.startswith("LBCORE-SVE-")]) == 2  # shop/cart's two endpoints
