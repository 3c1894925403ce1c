"""Render a Kubernetes dump into the payloads a node applies: iptables and ipset, or nftables.

    python examples/render_from_kubernetes.py OUTDIR [DUMP]   # DUMP: examples/k8s-dump.yaml

Reads the Services and EndpointSlices (as `kubectl get svc,endpointslices -A -o yaml`
prints them), maps them as kube-proxy does, and writes into OUTDIR the payloads in the
order a node applies them, then prints the commands:

    ipset.restore     ipset restore              (ClientIP affinity sets, first)
    iptables.restore  iptables-restore --noflush (IPv4 Services; the once-per-node
                                                  install form, with the jumps)
    ip6tables.restore ip6tables-restore --noflush (IPv6 Services, same form)
    nft.rules         nft -f                     (the nftables alternative: both
                                                  families' tables, one transaction)

Later syncs use `lbcore render iptables NEW --diff OLD` instead of the install form
(`lbcore render nft NEW --diff OLD` for nftables).
"""

import os
import sys

from lbcore.render import ipset, iptables, nft
from lbcore.sources import load_files

out_dir = sys.argv[1]
dump = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "k8s-dump.yaml")
notes: list[str] = []
services = load_files([dump], notes=notes)
for note in notes:
    print(f"note: {note}")

payloads = {
    "ipset.restore": ("ipset restore", ipset.render(services)),
    "iptables.restore": ("iptables-restore --noflush", iptables.render(services, install=True)),
    "ip6tables.restore": ("ip6tables-restore --noflush", iptables.render(services, install=True, family=6)),
    "nft.rules": ("nft -f", nft.render(services)),
}
os.makedirs(out_dir, exist_ok=True)
by_family = {family: sum(s.family == family for s in services) for family in (4, 6)}
print(f"{len(services)} services ({by_family[4]} IPv4, {by_family[6]} IPv6) from {dump}")
for name, (command, text) in payloads.items():
    with open(os.path.join(out_dir, name), "w") as f:
        f.write(text)
    print(f"{command} < {os.path.join(out_dir, name)}    # {text.count(chr(10))} lines")
