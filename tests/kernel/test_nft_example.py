"""The Kubernetes sample dump, rendered by examples/render_from_kubernetes.py, loads into
a real kernel's nftables in a throw-away namespace."""

from __future__ import annotations

from _nft_netns import NftNetns, kernel

from test_example_kubernetes import render_example

pytestmark = kernel


def test_sample_dump_applies_in_a_namespace(tmp_path):
    render_example(tmp_path)
    with NftNetns() as ns:
        ns.nft((tmp_path / "nft.rules").read_text())
        v4 = ns.run("nft", "list", "table", "ip", "lbcore").stdout
        v6 = ns.run("nft", "list", "table", "ip6", "lbcore").stdout
    assert v4.count(": goto ") == 10  # every IPv4 Service has an endpoint to go to
    assert "10.96.45.12 . tcp . 80 : goto pick-tcp-random-" in " ".join(v4.split())
    assert "10.244.1.7 . 8080" in v4 and "10.244.3.4 . 8080" not in v4  # not ready: no slot
    assert "chain sticky-" in v4 and "map affinity-" in v4  # shop/cart is sticky
    assert "fd00:10:244:1::28 . 9200" in v6
