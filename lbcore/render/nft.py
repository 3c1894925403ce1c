"""Services as ``nft -f`` input: lbcore's own nftables table per address family.

Layout.  ``table ip lbcore`` for the IPv4 Services, ``table ip6 lbcore`` for the IPv6
ones (the same with ``ip6``); nothing outside them is touched.  A Service is a few map
elements.  The chains are fixed, plus one small chain per way of picking in use,
shared by every Service that picks that way, and one chain per sticky Service::

    nat-prerouting, nat-output   ip daddr . meta l4proto . th dport vmap @service-ips
    @service-ips                 vip . protocol . port : goto pick-tcp-random-3
    pick-tcp-random-3            meta l4proto tcp dnat ip addr . port to
                                   ip daddr . tcp dport . numgen random mod 3 map @tcp-endpoints
    @tcp-endpoints               vip . port . slot : endpoint ip . port
    filter-input, -forward,      ct state new ip daddr . meta l4proto . th dport
      -output                      @no-endpoint-services goto reject-chain
    reject-chain                 TCP reset, else ICMP port unreachable
    nat-postrouting              masquerade a DNATed connection whose source is its
                                   new destination (hairpin), found through @hairpin

The slot comes from ``numgen random`` (rr, wrr) or a ``jhash`` of the client address
(sh, mh; with its port for ``sh-port``/``mh-port``) or of the destination (dh), with the
fixed seed `JHASH_SEED` so every node hashes alike; `lbcore.render._nft_slots` says which
endpoint owns each slot (mh: lbcore's own Maglev table).  Everything that carries a port
comes in one copy per protocol (``tcp-endpoints``, ``udp-endpoints``, ...): nft 1.0.6
cannot declare a map whose value is an address and a ``th dport`` so that it reads back
from the kernel, and one declared with ``tcp dport`` makes nft add a hidden ``meta
l4proto tcp`` to the first rule that uses it (measured), which would lose UDP.

No Service name reaches the kernel: the tables are keyed by address, the shared chains
named by how they pick and a sticky Service's chain by kube-proxy's hash of its name, so
a hostile name cannot inject anything.  kube-proxy's nftables mode (reference/
kube-proxy.md §4) gives each Service a chain and an anonymous map: 10,000 x 10 of
those cost nft 11.8 s of CPU to load, these tables 0.8 s (bench/README.md).

Schedulers: rr, wrr, sh, dh and mh run in the kernel (`BACKEND_SCHEDULERS`).  The
others need connection counts (or, for ring, a ring lookup) and are refused with a
`ConfigError` naming the Service and the scheduler, unless ``fallback=True``, which
renders them as `FALLBACK` says (the iptables renderer's rule: lc as rr, wlc, p2c and
ring as wrr).  A ``balance_factor`` (bounded loads) needs connection counts too: refused,
or dropped with ``fallback=True``; so is a ``slow_start`` (the kernel cannot ramp an
endpoint up).

ClientIP affinity.  A sticky Service has its own chain, ``sticky-<hash>``, and map,
``affinity-<hash>-<timeout>``: client -> the id of its endpoint
(`_nft_slots.endpoint_ids`), with the Service's timeout, refreshed by every new
connection, up to `AFFINITY_SIZE` clients.  A client found there whose endpoint's id
is still in ``@tcp-endpoint-ids`` goes to it; else its entry is deleted and it picks
afresh through ``@tcp-sticky-slots``, which names ids.  So an endpoint that leaves
takes its own clients' stickiness with it and nobody else's, as kube-proxy's sets per
endpoint do, with one structure per Service instead of one per endpoint.

Marks.  The id goes from one lookup to the next in the packet mark, the only register
nftables keeps between rules.  A sticky chain first saves the mark in
``@saved-marks`` under the connection's ``ct id``; ``restore-prerouting`` and
``restore-output`` (priority -90, right after DNAT at -100; the output one a route
chain, so the packet is routed again with its own mark) put it back.  So lbcore owns
no mark bit: kube-proxy's masquerade bit 0x4000 and every other mark pass through
unchanged; only a chain of another table hooked between -100 and -90 could see the
id, on the first packet of a sticky connection.  Hairpin traffic (an endpoint reaching
its own Service) is found without a mark or a list of endpoints: nat-postrouting puts
the connection's ``ct id . ip saddr`` into ``@hairpin``, masquerades it if ``ct id . ip
daddr`` is then there (source and new destination are one address), and takes the
entry out again; the ct id keeps other connections out of the comparison.  A
loopback destination is left alone: MASQUERADE out of lo has no address to take and
drops the packet (as lbcore.render.iptables leaves loopback endpoints out).

Syncing.  ``nft -f`` applies a file as one transaction: all of it or, when the kernel
refuses any part, nothing.

- `render`: the whole table, two ways.  Given nothing more, it begins ``add table`` +
  ``delete table``, so applying it replaces whatever lbcore had (stale chains and
  elements included) with exactly this state, atomically, and applying it twice gives
  the same table; the affinity maps start empty, so sticky clients pick afresh once.
  Given ``existing``, what the tables hold now (``nft -j -t list chains``, ``maps``,
  ``sets``; `lbcore.agent.sinks.nft.read_existing`), it syncs them in place as
  kube-proxy's full sync does: the same rules and elements, the stale objects deleted,
  and the affinity maps of the Services that stay sticky kept with their clients (a
  map's name carries its timeout, so a new timeout is a new, empty map).  Established
  connections keep their NAT either way (it lives in conntrack).  Apply it at start,
  after a failed sync and now and then, as kube-proxy does its full syncs.  In place
  it deletes a stale chain in the transaction that drops the map element pointing at
  it, which kernels before 6.2 are likely to refuse (see `render_diff`; only 6.18 was
  tried): the payload without ``existing`` applies there.
- `render_diff`: only the elements of the Services that changed, the chains that come
  into use or change, and those that fall out of use, deleted in the same transaction
  as the map elements that pointed at them.  kube-proxy flushes such chains and deletes
  them a second later because kernels before 6.2 release a chain that a deleted map
  element referenced late (``Device or resource busy``); on Linux 6.2 and later one
  transaction is enough (tests/kernel/test_nft_apply.py proves it on 6.18).  On an
  older kernel such a diff fails and changes nothing: apply the full payload then.  A
  diff applied to anything but the old state fails (it deletes elements that are not
  there) and changes nothing.
- `render_delete`: removes both tables, or one, whether or not they exist.

Applying on a node::

    lbcore render nft services.yaml | nft -f -                  # at start (replaces the tables)
    lbcore render nft new.yaml --diff old.yaml | nft -f -       # each sync
    nft delete table ip lbcore; nft delete table ip6 lbcore     # remove lbcore
"""

from __future__ import annotations

import itertools
import operator
import re
from typing import Iterable, NamedTuple

from ..errors import ConfigError
from ..hashing import HASH_SEED
from ..models import PROTOCOLS, Service
from . import BACKEND_SCHEDULERS, iptables
# The cyclic GC paused while a payload is built, as the iptables renderer does: a full
# render allocates some 50,000 containers, and the collections they trigger walked the
# caller's whole heap (a 10,000 x 10 render: 390 ms with it, 115 ms without, measured
# beside 500,000 live objects).
from ._common import paused_gc
from ._iptables_names import Key, changed_keys, check_services, hash16
from ._nft_slots import endpoint_ids, slot_count, slot_table

__all__ = [
    "render",
    "render_diff",
    "render_delete",
    "TABLE",
    "FALLBACK",
    "JHASH_SEED",
    "AFFINITY_SIZE",
    "BACKEND_SCHEDULERS",
]

TABLE = "lbcore"
#: ``fallback=True``: what a scheduler nft cannot run is rendered as, by the iptables
#: renderer's rule for it; a scheduler that rule does not name is refused either way.
FALLBACK = {scheduler: iptables.FALLBACK[scheduler] for scheduler in iptables.FALLBACK
            if scheduler not in BACKEND_SCHEDULERS["nft"]}
#: lbcore's key-hash seed cut to jhash's 32 bits: fixed, so every node's jhash agrees.
JHASH_SEED = HASH_SEED & 0xFFFFFFFF
#: The most clients a sticky Service's map holds (kernel memory is taken per client,
#: not reserved), as `lbcore.render.ipset.MAXELEM` for the iptables sets.
AFFINITY_SIZE = 65536

_RUNS = frozenset(BACKEND_SCHEDULERS["nft"])
_IDENTIFIER = re.compile(r"[A-Za-z_.][A-Za-z0-9_./-]*")
_FAMILIES = (4, 6)


class _Family(NamedTuple):
    """What differs between the ip and ip6 tables."""

    name: str  # the nft family and the address expression: ip, ip6
    address: str  # the address type: ipv4_addr, ipv6_addr

    @property
    def service(self) -> str:
        """A packet's key for its Service, before DNAT."""
        return f"{self.name} daddr . meta l4proto . th dport"


_FAMILY = {4: _Family("ip", "ipv4_addr"), 6: _Family("ip6", "ipv6_addr")}
_SERVICE_IPS = "service-ips"
_NO_ENDPOINTS = "no-endpoint-services"
_LOOPBACK = {"ip": "127.0.0.0/8", "ip6": "::1"}
# The per-protocol maps, by role: "endpoints" -> "tcp-endpoints", ...
_ROLES = ("endpoints", "sticky-slots", "endpoint-ids")
#: The maps and sets lbcore fills, in payload order.
_FILLED = (_SERVICE_IPS, _NO_ENDPOINTS,
           *(f"{protocol}-{role}" for protocol in PROTOCOLS for role in _ROLES))


def render(
    services: Iterable[Service],
    *,
    fallback: bool = False,
    family: int | None = None,
    existing: Iterable[tuple[str, str, str]] | None = None,
) -> str:
    """The full ``nft -f`` payload: lbcore's tables carry exactly ``services``.

    ``existing``: None (the default) replaces each table, affinity maps included.  To
    keep the sticky clients, pass what lbcore's tables hold now: every chain, map and
    set, each as a triple ``(family, kind, name)`` with family ``"ip"`` or ``"ip6"``
    and kind ``"chain"``, ``"map"`` or ``"set"``, as ``nft -j -t list chains`` (maps,
    sets) shows them.  A table with something listed is then synced in place: every
    rule and every element lbcore writes is written again, the affinity map of a
    Service that stays sticky with the same timeout keeps its clients (the map's name
    carries the timeout; the key is the table's address), the dynamic ``saved-marks``
    and ``hairpin`` keep theirs, and every listed object the new state does not have is
    deleted.  It then lists exactly as the payload without ``existing`` does applied
    to an empty node, but for those kept elements.  A table with nothing listed is
    replaced.  One transaction either way; idempotent.  The list must be complete: an
    object left out is neither flushed nor deleted, so it keeps what it held beside
    what the payload adds.  Raises `ConfigError` for a triple that is not one (a name
    must be an nft identifier).

    ``family`` 4 or 6 renders only that table; None (the default) both, in one
    transaction.  Raises `ConfigError` for a scheduler nft cannot run (see
    ``fallback``) and for what `lbcore.render._iptables_names.check_services` refuses.
    O(n log n + e log e + the slots + the existing objects).

    >>> from lbcore import Endpoint, Service
    >>> web = Service("web", "10.96.0.10", 80, endpoints=[Endpoint("10.1.0.5", 8080)])
    >>> print(render([web], family=4).split("}\\nadd element")[1], end="")
     ip lbcore service-ips {
        10.96.0.10 . tcp . 80 : goto pick-tcp-random-1
    >>> held = [("ip", "chain", "nat-output"), ("ip", "map", "service-ips"), ("ip", "chain", "pick-tcp-random-2")]
    >>> print(render([web], family=4, existing=held).split("table ip lbcore {")[0], end="")
    add table ip lbcore
    flush chain ip lbcore nat-output
    flush chain ip lbcore pick-tcp-random-2
    delete map ip lbcore service-ips
    delete chain ip lbcore pick-tcp-random-2
    """
    with paused_gc():
        held = _checked_existing(existing)
        checked = check_services(services)
        _refuse_unrunnable(checked, fallback)
        out = []
        for fam in _families(family):
            keys = sorted(key for key in checked if key[2] == fam)
            here = {(kind, name) for table, kind, name in held if table == _FAMILY[fam].name}
            out.append(_full_table(_FAMILY[fam], [_render_service(checked[key], fam, fallback) for key in keys], here))
        return "".join(out)


def _checked_existing(existing: Iterable[tuple[str, str, str]] | None) -> list[tuple[str, str, str]]:
    """``existing`` as `render` takes it, each triple checked: a name goes into the
    payload, so it must be an nft identifier (nft's scanner: a letter, ``_`` or ``.``,
    then letters, digits and ``_./-``), which cannot end a command or open a block."""
    held = []
    for i, item in enumerate(existing or ()):
        try:
            family, kind, name = item
        except (TypeError, ValueError):
            raise ConfigError(f"existing[{i}]", item, "must be a (family, kind, name) triple") from None
        if family not in ("ip", "ip6"):
            raise ConfigError(f"existing[{i}].family", family, "must be ip or ip6 (lbcore's tables)")
        if kind not in ("chain", "map", "set"):
            raise ConfigError(f"existing[{i}].kind", kind, "must be chain, map or set")
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            raise ConfigError(f"existing[{i}].name", name,
                              "is not an nft name (a letter, _ or . then letters, digits, _ . / -)")
        held.append((family, kind, name))
    return held


def render_diff(
    old_services: Iterable[Service],
    new_services: Iterable[Service],
    *,
    fallback: bool = False,
    family: int | None = None,
) -> str:
    """The ``nft -f`` payload that turns the tables of ``render(old_services)`` into
    those of ``render(new_services)``: one transaction, empty when nothing changed.

    ``new_services`` are checked as `render` checks them; ``old_services`` are taken
    as the Services of the previous payload, which were.  Only the Services that
    differ are written: their map elements are deleted and added (a changed value is
    a delete and an add), the chains that come into use or change are written, and
    those no Service uses any more are deleted after the elements that pointed at
    them.  An unchanged Service costs one identity test (an equal copy, one
    comparison).  O(n) in Services plus the size of the changed ones, and O(n) more
    when a shared chain may have fallen out of use (the other Services are searched
    for it).

    >>> from lbcore import Endpoint, Service
    >>> old = Service("web", "10.96.0.10", 80, endpoints=[Endpoint("10.1.0.5", 8080)])
    >>> new = Service("web", "10.96.0.10", 80, endpoints=[Endpoint("10.1.0.6", 8080)])
    >>> print(render_diff([old], [new]), end="")
    delete element ip lbcore tcp-endpoints {
        10.96.0.10 . 80 . 0
    }
    add element ip lbcore tcp-endpoints {
        10.96.0.10 . 80 . 0 : 10.1.0.6 . 8080
    }
    """
    with paused_gc():
        old = _indexed(old_services)
        new = check_services(new_services)
        _refuse_unrunnable(new, fallback)  # as render(new_services) would
        changed = changed_keys(old, new)
        out = []
        for fam in _families(family):
            keys = [key for key in changed if key[2] == fam]
            if keys:
                out.append(_diff_table(_FAMILY[fam], keys, old, new, fallback))
        return "".join(out)


def _indexed(services: Iterable[Service]) -> dict[Key, Service]:
    """``services`` by `Key`, as `check_services` gives them, with no check but their
    type: the old side of a diff, rendered before.  A few passes in C."""
    services = list(services)
    if not all(map(isinstance, services, itertools.repeat(Service))):
        return check_services(services)  # which names the culprit
    vips = list(map(_vip_of, services))
    families = [6 if ":" in vip else 4 for vip in vips]
    return dict(zip(zip(map(_name_of, services), map(_protocol_of, services), families), services))


def render_delete(family: int | None = None) -> str:
    """``nft -f`` input removing lbcore's tables (``family`` 4 or 6: that one), whether
    or not they exist: everything lbcore put in the kernel goes, nothing else.

    >>> print(render_delete(), end="")
    add table ip lbcore
    delete table ip lbcore
    add table ip6 lbcore
    delete table ip6 lbcore
    """
    return "".join(_delete_table(_FAMILY[fam]) for fam in _families(family))


# -- one Service ------------------------------------------------------------------------


class _Rendered(NamedTuple):
    """A Service as nft sees it.  ``chain``: (name, rules) of the chain @service-ips
    sends it to (None: no endpoint takes new connections); ``affinity``: the name of a
    sticky Service's affinity map, and then that chain is its own too (None: a shared
    pick chain).  ``elements``: its elements by map or set name, "key" or "key : value"."""

    chain: tuple[str, str] | None
    affinity: str | None
    elements: dict[str, list[str]]


def _families(family: int | None) -> tuple[int, ...]:
    if family is None:
        return _FAMILIES
    if family not in _FAMILIES:
        raise ConfigError("family", family, "must be 4 or 6 (or None for both)")
    return (family,)


def _scheduler(service: Service, fallback: bool) -> str:
    """The scheduler nft runs for ``service``: its own, or its fallback."""
    scheduler = service.scheduler
    if service.balance_factor is not None and not fallback:
        raise ConfigError(
            "balance_factor", service.balance_factor,
            f"of service {service.name!r} cannot be expressed in nftables (bounded loads need "
            "connection counts); drop it, or fallback=True to render the scheduler without the bound",
        )
    if service.slow_start and not fallback:
        raise ConfigError(
            "slow_start", service.slow_start,
            f"of service {service.name!r} cannot be expressed in nftables (the kernel cannot "
            "ramp an endpoint up); drop it, or fallback=True to render the scheduler without slow start",
        )
    if scheduler in _RUNS:
        return scheduler
    if fallback and scheduler in FALLBACK:
        return FALLBACK[scheduler]
    instead = f", or fallback=True to render it as {FALLBACK[scheduler]}" if scheduler in FALLBACK else ""
    needs = "a ring lookup" if scheduler == "ring" else "connection counts"
    raise ConfigError(
        "scheduler", scheduler,
        f"of service {service.name!r} cannot run in nftables (it needs {needs}); "
        f"use one of {', '.join(BACKEND_SCHEDULERS['nft'])}{instead}",
    )


def _refuse_unrunnable(checked: dict[Key, Service], fallback: bool) -> None:
    """Raise `ConfigError` for the first Service, in key order, nft cannot run."""
    if _RUNS.issuperset(map(_scheduler_of, checked.values())) and not any(
        map(_balance_factor_of, checked.values())
    ) and not any(map(_slow_start_of, checked.values())):
        return
    for key in sorted(checked):
        _scheduler(checked[key], fallback)


def _slot(fam: _Family, protocol: str, kind: str, size: int) -> str:
    """The expression that picks one of ``size`` slots by ``kind``."""
    if kind == "random":
        return f"numgen random mod {size}"
    x = fam.name
    hashed = {"source": f"{x} saddr", "source-port": f"{x} saddr . {protocol} sport",
              "destination": f"{x} daddr"}[kind]
    return f"jhash {hashed} mod {size} seed {JHASH_SEED:#010x}"


def _dnat(fam: _Family, protocol: str) -> str:
    """The start of a rule that DNATs ``protocol`` to what a map lookup on (vip, port,
    ...) gives."""
    x = fam.name
    return f"meta l4proto {protocol} dnat {x} addr . port to {x} daddr . {protocol} dport"


def _shared_chain(fam: _Family, protocol: str, kind: str, size: int) -> tuple[str, str]:
    """The pick chain every Service without affinity that picks this way shares."""
    return (f"pick-{protocol}-{kind}-{size}",
            f"{_dnat(fam, protocol)} . {_slot(fam, protocol, kind, size)} map @{protocol}-endpoints")


def _affinity_name(name: str, timeout: int) -> str:
    """A sticky Service's affinity map: ``affinity-<hash>-<timeout>``.  The name carries
    all that its entries depend on besides the Service: the timeout they were written
    with (the key, the client address, is the table's family).  So a map found under
    the wanted name can be kept by a full sync, and a changed timeout is a new map."""
    return f"affinity-{name}-{timeout}"


def _sticky_chain(fam: _Family, protocol: str, name: str, kind: str, size: int, timeout: int) -> tuple[str, str]:
    """A sticky Service's own chain, ``sticky-<hash>`` (its map: `_affinity_name`)."""
    x = fam.name
    affinity = "@" + _affinity_name(name, timeout)
    remember = f"update {affinity} {{ {x} saddr timeout {timeout}s : meta mark }}"
    to_id = f"{_dnat(fam, protocol)} . meta mark map @{protocol}-endpoint-ids"
    slot = f"{x} daddr . {protocol} dport . {_slot(fam, protocol, kind, size)}"
    return f"sticky-{name}", "\n".join((
        "update @saved-marks { ct id : meta mark }",
        # A client seen before whose endpoint is still there: refresh it, go there.
        f"meta mark set {x} saddr map {affinity} {remember} {to_id}",
        # Its endpoint left (or the client is new): forget it, pick afresh.
        f"delete {affinity} {{ {x} saddr : meta mark }}",
        f"meta mark set {slot} map @{protocol}-sticky-slots {remember} {to_id}",
    ))


def _render_service(service: Service, family: int, fallback: bool) -> _Rendered:
    fam = _FAMILY[family]
    table = slot_table(service, _scheduler(service, fallback))
    protocol = service.protocol
    vip = f"{service.vip} . {service.port}"
    key = f"{service.vip} . {protocol} . {service.port}"
    owners = table.owners
    if not owners:
        return _Rendered(None, None, {_NO_ENDPOINTS: [key]})
    timeout = service.affinity_timeout
    affinity = None
    if timeout is None:
        chain = _shared_chain(fam, protocol, table.hash, len(owners))
        elements = {f"{protocol}-endpoints": [f"{vip} . {s} : {e.ip} . {e.port}" for s, e in enumerate(owners)]}
    else:
        [name] = hash16([service.name + protocol])  # kube-proxy's, as in lbcore.render.iptables
        chain = _sticky_chain(fam, protocol, name, table.hash, len(owners), timeout)
        affinity = _affinity_name(name, timeout)
        ids = endpoint_ids(owners)
        distinct = sorted({e.address: e for e in owners}.items())
        elements = {
            f"{protocol}-sticky-slots": [f"{vip} . {s} : {ids[e.address]:#010x}" for s, e in enumerate(owners)],
            f"{protocol}-endpoint-ids": [f"{vip} . {ids[a]:#010x} : {e.ip} . {e.port}" for a, e in distinct],
        }
    elements[_SERVICE_IPS] = [f"{key} : goto {chain[0]}"]
    return _Rendered(chain, affinity, elements)


def _shared_chain_of(service: Service, fallback: bool) -> str | None:
    """The name of the shared pick chain `_render_service` gives ``service``, if any,
    without rendering it."""
    if service.affinity_timeout is not None:
        return None
    kind, size = slot_count(service, _scheduler(service, fallback))
    return f"pick-{service.protocol}-{kind}-{size}" if size else None


# -- the full table ---------------------------------------------------------------------


def _full_table(fam: _Family, rendered: list[_Rendered], existing: set[tuple[str, str]]) -> str:
    """The full payload of one table; ``existing``: the (kind, name) of each object it
    holds now, empty to replace it (see `render`)."""
    x, address, t = fam.name, fam.address, f"{fam.name} {TABLE}"
    service_key = f"{address} . inet_proto . inet_service"
    # The sets and maps as (kind, name, declaration), then the chains as (name, hook or
    # None, rules), in payload order.
    sets = [("map", _SERVICE_IPS, (f"type {service_key} : verdict",)),
            ("set", _NO_ENDPOINTS, (f"type {service_key}",))]
    for p in PROTOCOLS:
        service = f"{x} daddr . {p} dport"
        sets += [
            ("map", f"{p}-endpoints", (f"typeof {service} . numgen random mod 1 : {service}",)),
            ("map", f"{p}-sticky-slots", (f"typeof {service} . numgen random mod 1 : meta mark",)),
            ("map", f"{p}-endpoint-ids", (f"typeof {service} . meta mark : {service}",)),
        ]
    sets += [
        ("map", "saved-marks", ("typeof ct id : meta mark", "size 65536", "flags dynamic,timeout", "timeout 1s")),
        ("set", "hairpin", (f"typeof ct id . {x} saddr", "size 65536", "flags dynamic,timeout", "timeout 1s")),
        *(("map", r.affinity, _affinity_declaration(fam)) for r in rendered if r.affinity is not None),
    ]
    # Before DNAT (kube-proxy's dstnat - 10), where REJECT is valid on every kernel.
    check = f"ct state new {fam.service} @{_NO_ENDPOINTS} goto reject-chain"
    restore = "ct state new meta mark set ct id map @saved-marks delete @saved-marks { ct id : meta mark }"
    chains = [
        ("nat-prerouting", "type nat hook prerouting priority -100", f"{fam.service} vmap @{_SERVICE_IPS}"),
        ("nat-output", "type nat hook output priority -100", f"{fam.service} vmap @{_SERVICE_IPS}"),
        ("nat-postrouting", "type nat hook postrouting priority 100", "\n".join((
            f"ct status dnat {x} daddr != {_LOOPBACK[x]} update @hairpin {{ ct id . {x} saddr }}",
            f"ct status dnat ct id . {x} daddr @hairpin delete @hairpin {{ ct id . {x} saddr }} "
            "masquerade fully-random",
            f"ct status dnat delete @hairpin {{ ct id . {x} saddr }}",
        ))),
        *((f"filter-{hook}", f"type filter hook {hook} priority -110", check)
          for hook in ("input", "forward", "output")),
        ("reject-chain", None, "meta l4proto tcp reject with tcp reset\nreject"),
        ("restore-prerouting", "type filter hook prerouting priority -90", restore),
        ("restore-output", "type route hook output priority -90", restore),
        *((name, None, rules) for name, rules in sorted(  # a shared chain once
            {r.chain[0]: r.chain[1] for r in rendered if r.chain is not None and r.affinity is None}.items())),
        *((r.chain[0], None, r.chain[1]) for r in rendered if r.affinity is not None),
    ]
    filled: dict[str, list[str]] = {name: [] for name in _FILLED}
    for r in rendered:
        for name, elements in r.elements.items():
            filled[name] += elements
    elements = "".join(_elements("add", t, name, filled[name]) for name in _FILLED)
    body = "".join((f"table {t} {{\n", *(_block(kind, name, *lines) for kind, name, lines in sets),
                    *(_chain(*chain) for chain in chains), "}\n"))
    if not existing:
        return f"add table {t}\ndelete table {t}\n{body}{elements}"
    # In place, as kube-proxy's full sync: the chains there are flushed and the body adds
    # their rules again; what is no longer wanted is deleted once nothing refers to it
    # (rules first, then maps, whose elements may name chains, then chains).  The
    # affinity maps wanted and the dynamic sets keep what the kernel put in them; every
    # other map and set is deleted and declared again, empty, where kube-proxy flushes
    # it: a rule that looks a map up makes the kernel check every element the map
    # holds, flushed ones included, as the rule goes in (3 ms per sticky chain beside
    # 20,000 endpoints, measured), and a new map has none yet.  The body's declarations
    # are no-ops for the objects still there.
    kept = {("map", r.affinity) for r in rendered if r.affinity is not None}
    kept |= {("map", "saved-marks"), ("set", "hairpin")}
    there = sorted(name for kind, name in existing if kind == "chain")
    wanted = {name for name, _, _ in chains}
    return "".join((
        f"add table {t}\n",
        *(f"flush chain {t} {name}\n" for name in there),
        *(f"delete {kind} {t} {name}\n" for kind, name in sorted(existing - kept) if kind != "chain"),
        *(f"delete chain {t} {name}\n" for name in there if name not in wanted),
        body, elements,
    ))


def _affinity_declaration(fam: _Family) -> tuple[str, ...]:
    """A ClientIP map: client -> endpoint id, each entry with its own timeout."""
    return f"typeof {fam.name} saddr : meta mark", f"size {AFFINITY_SIZE}", "flags dynamic,timeout"


def _block(kind: str, name: str, *lines: str) -> str:
    body = "".join(f"        {line}\n" for line in lines)
    return f"    {kind} {name} {{\n{body}    }}\n"


def _chain(name: str, base: str | None, rules: str) -> str:
    return _block("chain", name, *([f"{base}; policy accept;"] if base else []), *rules.split("\n") if rules else ())


def _elements(verb: str, table: str, name: str, elements: list[str]) -> str:
    if not elements:
        return ""
    return f"{verb} element {table} {name} {{\n    " + ",\n    ".join(elements) + "\n}\n"


def _delete_table(fam: _Family) -> str:
    return f"add table {fam.name} {TABLE}\ndelete table {fam.name} {TABLE}\n"


# -- the diff ---------------------------------------------------------------------------


def _diff_table(fam: _Family, keys: list[Key], old: dict[Key, Service], new: dict[Key, Service],
                fallback: bool) -> str:
    t = f"{fam.name} {TABLE}"
    family = keys[0][2]
    before = [_render_service(old[key], family, fallback) for key in keys if key in old]
    after = [_render_service(new[key], family, fallback) for key in keys if key in new]
    deletes, adds = [], []
    for name in _FILLED:
        was, now = _by_key(before, name), _by_key(after, name)
        deletes.append(_elements("delete", t, name, [key for key, text in was.items() if now.get(key) != text]))
        adds.append(_elements("add", t, name, [text for key, text in now.items() if was.get(key) != text]))
    # A shared chain belongs to every Service that picks its way: it goes only when no
    # Service uses it any more.
    old_shared = {r.chain[0] for r in before if r.chain and r.affinity is None}
    new_shared = dict(r.chain for r in after if r.chain and r.affinity is None)
    gone_shared = old_shared - new_shared.keys()
    for key, service in new.items() if gone_shared else ():  # until all are found in use
        if key[2] == family:
            gone_shared.discard(_shared_chain_of(service, fallback))  # type: ignore[arg-type]
            if not gone_shared:
                break
    old_own = dict(r.chain for r in before if r.affinity is not None)
    new_own = dict(r.chain for r in after if r.affinity is not None)
    old_maps = {r.affinity for r in before if r.affinity is not None}
    new_maps = {r.affinity for r in after if r.affinity is not None}
    # A chain goes after the elements that point at it; an affinity map comes before the
    # rules that use it and goes after the last rule that did (its chain deleted, or
    # flushed for a new timeout).
    chains = [f"delete chain {t} {name}\n" for name in sorted(gone_shared | (old_own.keys() - new_own.keys()))]
    declaration = "; ".join(_affinity_declaration(fam))
    chains += [f"add map {t} {name} {{ {declaration}; }}\n" for name in sorted(new_maps - old_maps)]
    # A shared chain may be there already for an unchanged Service: add is a no-op then,
    # and the flush makes its rule go in once.
    written = {name: rules for name, rules in new_shared.items() if name not in old_shared}
    written.update((name, rules) for name, rules in new_own.items() if old_own.get(name) != rules)
    for name, rules in sorted(written.items()):
        lines = "".join(f"add rule {t} {name} {rule}\n" for rule in rules.split("\n"))
        chains.append(f"add chain {t} {name}\nflush chain {t} {name}\n{lines}")
    chains += [f"delete map {t} {name}\n" for name in sorted(old_maps - new_maps)]
    return "".join(deletes) + "".join(chains) + "".join(adds)


def _by_key(rendered: list[_Rendered], name: str) -> dict[str, str]:
    """The elements of ``name`` in ``rendered``: key -> the whole element text."""
    return {text.split(" : ", 1)[0]: text for r in rendered for text in r.elements.get(name, ())}


_scheduler_of = operator.attrgetter("scheduler")
_balance_factor_of = operator.attrgetter("balance_factor")  # None, or a number >= 1
_slow_start_of = operator.attrgetter("slow_start")  # None, 0 (off) or seconds
_vip_of = operator.attrgetter("vip")
_name_of = operator.attrgetter("name")
_protocol_of = operator.attrgetter("protocol")
