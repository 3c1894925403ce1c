"""Renderers: the same Service models as kernel configuration text.

Pure functions: models in, text out, in a deterministic order, with no side effects and
no shelling out.  Applying the text is the caller's job (``iptables-restore --noflush``,
``ipset restore``, ``ipvsadm -R``, ``nft -f``).
"""

from ..models import SCHEDULERS

#: The schedulers each backend runs itself.  The userspace forwarder runs them all, IPVS
#: all but the two it has no scheduler for (p2c, ring); the IPVS, iptables and nftables
#: renderers refuse the others unless asked for their documented fallback
#: (``fallback=True``, ``--fallback``).  `lbcore check` prints it.
BACKEND_SCHEDULERS = {
    "ipvs": ("rr", "wrr", "lc", "wlc", "dh", "sh", "mh"),
    "forward": SCHEDULERS,
    "nft": ("rr", "wrr", "dh", "sh", "mh"),
    "iptables": ("rr", "wrr"),
}
