"""examples/render_from_kubernetes.py: the sample dump round-trips into rules a kernel takes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from lbcore.render import ipset, iptables, nft
from lbcore.sources import load_files

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
DUMP = os.path.join(ROOT, "examples", "k8s-dump.yaml")


def render_example(out_dir) -> str:
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "render_from_kubernetes.py"), str(out_dir)],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_example_writes_the_renderers_payloads(tmp_path):
    out = render_example(tmp_path)
    services = load_files([DUMP])
    assert (tmp_path / "ipset.restore").read_text() == ipset.render(services)
    assert (tmp_path / "iptables.restore").read_text() == iptables.render(services, install=True)
    assert (tmp_path / "ip6tables.restore").read_text() == iptables.render(services, install=True, family=6)
    assert (tmp_path / "nft.rules").read_text() == nft.render(services)
    assert "11 services (10 IPv4, 1 IPv6)" in out
    assert out.count("note: ") == 3  # headless, ExternalName, node ports: said, not silent
    v4 = (tmp_path / "iptables.restore").read_text()
    # Every IPv4 service gets its portal; the frontend's not-ready and draining endpoints
    # get no chain while ready ones exist; the sticky cart checks its sets first.
    assert len(re.findall(r"^-A LBCORE-SERVICES .* -j LBCORE-SVC-", v4, re.M)) == 10
    assert "--to-destination 10.244.1.7:8080" in v4
    assert "10.244.3.4:8080" not in v4 and "10.244.2.9:8080" not in v4
    assert re.search(r'"shop/cart -> 10.244.1.12:8080" -m set --match-set LBCORE-SVE-\w+ src', v4)
