"""ClientIP affinity sets as ``ipset restore`` input, for lbcore's iptables payloads.

Each endpoint chain of a Service with ``affinity_timeout`` has a ``hash:ip`` set of the
same name (``LBCORE-SVE-<hash>``, 27 characters; ipset allows 31) holding the clients
stuck to that endpoint (see `lbcore.render.iptables`).  Apply `render` (or
`render_diff`) before the iptables payload that matches on the sets, and
`render_cleanup` after the iptables diff that stopped using them: a set that a rule
still references cannot be destroyed.

Sizing.  The clients are added by the kernel from the packet path (the ``SET`` target),
and there a hash set never grows: measured here, a set created with hashsize 64 took
exactly 768 clients (64 buckets x bucketsize 12) and silently dropped the rest.  So each
set is created at its final size, `HASHSIZE` 4096 buckets: with 10,000 random clients in
one set a bucket overflows 12 with probability 2e-6 (Poisson, mean 2.44), under 1 % for
any of the 4096; measured, one set took 9,960 distinct clients and dropped none, and the
namespace test keeps 10,000 clients sticky.  Kernel memory is about 64 KiB per set
(2,000 sets took 129 MB of slab here).  `MAXELEM` caps a set at 65536 clients.

Every set is created with the same parameters: ``create -exist`` fails on an existing
set whose timeout differs (measured), and ``timeout 0`` (timeouts enabled, no
default) leaves the timeout to each ``SET --add-set ... --timeout T`` rule, so a Service
may change its timeout without its sets being re-created (clients already in a set keep
the timeout they were added with until they reconnect).
"""

from __future__ import annotations

from typing import Iterable

from ..models import Service
from ._iptables_names import ChainNames, changed_keys, check_services, in_key_order, name_chains

__all__ = ["render", "render_diff", "render_cleanup", "HASHSIZE", "MAXELEM"]

HASHSIZE = 4096
MAXELEM = 65536
_FAMILY = {4: "inet", 6: "inet6"}


def render(services: Iterable[Service]) -> str:
    """``ipset restore`` lines creating every affinity set of ``services`` (both
    address families).  Idempotent: existing sets keep their clients.  O(n log n + e log e).

    >>> from lbcore import Endpoint, Service
    >>> sticky = Service("ns1/svc1:p80", "172.30.0.41", 80, affinity_timeout=10800,
    ...                  endpoints=[Endpoint("10.180.0.1", 80)])
    >>> print(render([sticky]), end="")
    create LBCORE-SVE-SXIVWICOYRO3J4NJ hash:ip family inet hashsize 4096 maxelem 65536 timeout 0 -exist
    """
    return _lines(f"create {name} {_create_options(family)} -exist"
                  for name, family in _sets(name_chains(in_key_order(check_services(services)))))


def render_diff(old_services: Iterable[Service], new_services: Iterable[Service]) -> str:
    """``ipset restore`` lines creating the affinity sets ``new_services`` has and
    ``old_services`` had not; apply before the iptables diff.  O(n log n) plus the size
    of the changed Services.
    """
    old_sets, new_sets = _changed_sets(old_services, new_services)
    kept = set(old_sets)
    return _lines(f"create {name} {_create_options(family)} -exist"
                  for name, family in new_sets if (name, family) not in kept)


def render_cleanup(old_services: Iterable[Service], new_services: Iterable[Service]) -> str:
    """``ipset restore`` lines destroying the affinity sets ``old_services`` had and
    ``new_services`` has not; apply after the iptables diff.  O(n log n) plus the size
    of the changed Services.
    """
    old_sets, new_sets = _changed_sets(old_services, new_services)
    kept = set(new_sets)
    return _lines(f"destroy {name}" for name, family in old_sets if (name, family) not in kept)


def _create_options(family: int) -> str:
    return f"hash:ip family {_FAMILY[family]} hashsize {HASHSIZE} maxelem {MAXELEM} timeout 0"


def _lines(lines: Iterable[str]) -> str:
    text = "\n".join(lines)
    return text + "\n" if text else ""


def _sets(named: ChainNames) -> list[tuple[str, int]]:
    """(set name, address family) of every affinity set, in payload order."""
    sets = []
    start = 0
    for service, count in zip(named.services, named.counts):
        if service.affinity_timeout is not None:
            sets += [(chain, service.family) for chain in named.endpoint_chains[start : start + count]]
        start += count
    return sets


def _changed_sets(
    old_services: Iterable[Service], new_services: Iterable[Service]
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The affinity sets of the Services that changed, before and after."""
    old = check_services(old_services)
    new = check_services(new_services)
    changed = changed_keys(old, new)
    old_sets = _sets(name_chains([old[key] for key in changed if key in old]))
    new_sets = _sets(name_chains([new[key] for key in changed if key in new]))
    return old_sets, new_sets
