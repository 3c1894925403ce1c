"""Services as ``iptables-restore --noflush`` input: kube-proxy's iptables layout under
lbcore's own chains (reference/kube-proxy.md §1, with ``LBCORE-`` for ``KUBE-``).

The layout::

    nat     PREROUTING, OUTPUT  -> LBCORE-SERVICES       -d vip --dport port per Service
            LBCORE-SVC-<hash>   ClientIP affinity checks, then the random split
            LBCORE-SVE-<hash>   one per endpoint: hairpin mark, affinity refresh, DNAT
            POSTROUTING         -> LBCORE-POSTROUTING    MASQUERADE what LBCORE-MARK-MASQ marked
    filter  INPUT, FORWARD, OUTPUT -> LBCORE-SERVICES    REJECT for a Service with no endpoint

The hashes are kube-proxy's (``KUBE-SVC-``/``KUBE-SEP-`` carry the same 16 letters).

Applying.  ``iptables-restore --noflush`` has no "insert if absent" and fails the whole
table when it deletes a rule that is not there, so no single payload can both add the
jumps from the built-in chains on a fresh node and leave them alone on the next apply.
lbcore therefore has two forms of the full payload:

- ``render(services, install=True)``, once per node: creates the chains the built-in
  chains jump to with ``-N`` and inserts the six jumps.  On a node where lbcore is
  already installed the ``-N`` fails and the table is left exactly as it was, so the
  jumps are never duplicated.
- ``render(services)``, every sync after that: checks each jump with ``-C`` and touches
  nothing outside lbcore's chains.  Applied twice it leaves the same ruleset; on a node
  without the jumps it fails and changes nothing in that table.

Both declare every lbcore chain (which flushes it under ``--noflush``) and fill it, so a
chain lbcore does not own is never touched.  iptables-restore commits each table at its
``COMMIT`` (measured with iptables 1.8.9, nf_tables and legacy): a table is all or
nothing, the filter table goes first, and a failure there stops before nat.

Order.  With ``--noflush``, iptables-nft (1.8.9 measured) notes the chain of every
command in a sorted linked list, scanned from its smallest name: commands on chains in
random order cost O(chains) each, and 10,000 Services x 10 endpoints (110,000 chains)
took over 20 minutes to load.  So every chain's commands come together, chains in
descending name order, and each jump goes to a chain whose name sorts higher (it must
be declared first): the services chain < ``LBCORE-SVC-`` < ``LBCORE-SVE-`` (kube-proxy's
``SEP`` sorts below ``SVC``, hence ``SVE``, "service endpoint").  Each lookup then stops
at once and the load is linear.  `render_diff` deletes chains in a second, separate
nat transaction for the same reason; they are empty and unreferenced after the first.
Large payloads first declare 15 evenly spread chains (see `_save_pivots`): chains
created in name order would make iptables-save overflow its stack.  What remains is
the jump targets: an endpoint chain is noted again when its service chain jumps to
it, and that lookup passes the endpoint chains that sort below it, so loading stays
O(chains x endpoints) (10,000 x 10: 171 s, against the 20 minutes of random order).

`render_diff` is kube-proxy's partial sync (KEP-3453) without its one cost that grows
with the cluster: kube-proxy rewrites the whole services chain on every sync (0.95 s for
10,000 Services measured here), lbcore deletes and inserts single rules in it (``-D``
by rule text, ``-I`` at the position the full payload would give it), so the result is
the full payload's ruleset exactly and a one-endpoint change costs one Service's chains.

ClientIP affinity uses ipset instead of ``-m recent``: xt_recent keeps 100 addresses per
list by default, and past that clients silently change backend.  Each endpoint chain
has a ``hash:ip`` set of the same name (see `lbcore.render.ipset`, applied first): the
service chain sends a client found in an endpoint's set to that endpoint before the
random split, and the endpoint chain adds or refreshes the client with the Service's
timeout.  A set per endpoint, as in kube-proxy's nftables mode, because a set can only
say whether a client is in it, not which endpoint it belongs to.

Schedulers: ``rr`` splits evenly (1/n, 1/(n-1), ... as ``%0.10f``; the last rule takes
the rest), ``wrr`` by weight (w_i / sum of w_j for j >= i).  iptables cannot count
connections or hash, so ``lc``, ``wlc``, ``dh``, ``sh``, ``mh``, ``p2c`` and ``ring`` (and
with them a ``balance_factor``) raise `ConfigError` unless ``fallback=True``, which
renders them as `FALLBACK` says.  The kernel cannot ramp an endpoint up either: a
``slow_start`` is refused, or dropped with ``fallback=True``.
"""

from __future__ import annotations

import bisect
import collections
import functools
import operator
from typing import TYPE_CHECKING, Iterable, Sequence

from .._twins import twin
from ..errors import ConfigError
from ..models import Endpoint, Service
from ._common import paused_gc
from ._iptables_names import (
    MARK_MASQ_CHAIN,
    ChainNames,
    Key,
    changed_keys,
    check_services,
    in_key_order,
    name_chains,
)

if TYPE_CHECKING:
    from .._pure.iptables_chains import ChainColumns, ChainParts, chain_name, chain_texts, join_payload
else:
    _chains = twin("iptables_chains")
    ChainColumns, ChainParts = _chains.ChainColumns, _chains.ChainParts
    chain_name, chain_texts, join_payload = _chains.chain_name, _chains.chain_texts, _chains.join_payload

__all__ = [
    "render",
    "render_diff",
    "SERVICES_CHAIN",
    "POSTROUTING_CHAIN",
    "MARK_MASQ_CHAIN",
    "MASQUERADE_MARK",
    "FALLBACK",
    "HOOKS",
]

SERVICES_CHAIN = "LBCORE-SERVICES"
POSTROUTING_CHAIN = "LBCORE-POSTROUTING"
#: kube-proxy's mark (``--iptables-masquerade-bit`` 14, written as kube-proxy writes it),
#: so on a node that runs both, either proxy's POSTROUTING masquerades the other's.
MASQUERADE_MARK = "0x00004000"
#: ``fallback=True``: what a scheduler iptables cannot express is rendered as.  The
#: unweighted ones (IPVS ``lc`` and ``dh`` ignore weights but 0) split evenly, the
#: weighted ones by weight (``p2c`` and ``ring`` weigh their endpoints too).  Connection
#: counts, hash stickiness and the bound of a ``balance_factor`` are lost; ClientIP
#: affinity stays as the Service configures it.
FALLBACK = {"lc": "rr", "dh": "rr", "wlc": "wrr", "sh": "wrr", "mh": "wrr", "p2c": "wrr", "ring": "wrr"}

_PORTALS = f'-m comment --comment "lbcore service portals" -j {SERVICES_CHAIN}'
#: (table, built-in chain, rule): the only rules lbcore writes outside its own chains.
#: kube-proxy's hooks, plus filter INPUT: an lbcore vip may be a local address.
HOOKS = (
    ("filter", "INPUT", f"-m conntrack --ctstate NEW {_PORTALS}"),
    ("filter", "FORWARD", f"-m conntrack --ctstate NEW {_PORTALS}"),
    ("filter", "OUTPUT", f"-m conntrack --ctstate NEW {_PORTALS}"),
    ("nat", "PREROUTING", _PORTALS),
    ("nat", "OUTPUT", _PORTALS),
    ("nat", "POSTROUTING", f'-m comment --comment "lbcore postrouting rules" -j {POSTROUTING_CHAIN}'),
)
_CHECK_NOTE = (
    "# lbcore: a failing -C line means lbcore is not installed in this table; "
    "apply the payload rendered with install=True once"
)
_NAT_FIXED_RULES = (
    f"-A {MARK_MASQ_CHAIN} -j MARK --or-mark {MASQUERADE_MARK}",
    f"-A {POSTROUTING_CHAIN} -m mark ! --mark {MASQUERADE_MARK}/{MASQUERADE_MARK} -j RETURN",
    # Clear the mark so a packet that traverses the stack again is not masqueraded twice.
    f"-A {POSTROUTING_CHAIN} -j MARK --xor-mark {MASQUERADE_MARK}",
    f'-A {POSTROUTING_CHAIN} -m comment --comment "lbcore service traffic requiring SNAT" '
    "-j MASQUERADE --random-fully",
)
_PIVOTS = 15
_PIVOT_THRESHOLD = 4096
# xt_comment keeps at most 255 characters (XT_MAX_COMMENT_LEN 256 with the NUL); the
# longest comment is "<name> -> [<39-character IPv6>]:65535", so names are cut to fit.
_MAX_LABEL = 255 - len(" -> [ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")


def render(
    services: Iterable[Service], *, fallback: bool = False, install: bool = False, family: int = 4
) -> str:
    """The full ``iptables-restore --noflush`` payload for ``services``.

    ``install=True`` gives the once-per-node form that adds the jumps from the built-in
    chains (see the module docstring).  ``family`` 4 renders the IPv4 Services for
    ``iptables-restore``, 6 the IPv6 ones for ``ip6tables-restore``.  Chains of Services
    that are gone are not removed (this payload does not know them; unreferenced, they
    are inert): `render_diff` removes them.  O(n log n + e log e) in Services and
    endpoints; 10,000 Services x 10 endpoints: about 0.3 s with the compiled chain
    writer, 0.8 s with its pure twin (bench/README.md).

    >>> from lbcore import Endpoint, Service
    >>> web = Service("ns1/svc1:p80", "172.30.0.41", 80, endpoints=[Endpoint("10.180.0.1", 80)])
    >>> print(*[l for l in render([web]).splitlines() if l.startswith("-A LBCORE-SERVICES")])
    -A LBCORE-SERVICES -m comment --comment "ns1/svc1:p80 virtual IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j LBCORE-SVC-XPGD46QRK7WJZT7O
    """
    create = "-N {}" if install else ":{} - [0:0]"
    head = ["*filter", create.format(SERVICES_CHAIN)]
    with paused_gc():
        by_key = check_services(services, family)
        _refuse_inexpressible(by_key, fallback)
        checked = in_key_order(by_key)
        named = name_chains(checked)
        portals: list[str] = []
        for service, chain, count in zip(checked, named.chains, named.counts):
            if count:
                portals.append(f"-A {SERVICES_CHAIN} {_portal(service, chain)}")
            else:
                head.append(f"-A {SERVICES_CHAIN} {_reject(service)}")
        head += [*_hooks("filter", install), "COMMIT"]
        head += ["*nat", create.format(POSTROUTING_CHAIN), f":{MARK_MASQ_CHAIN} - [0:0]", *_NAT_FIXED_RULES]
        tail = [create.format(SERVICES_CHAIN), *portals, *_hooks("nat", install), "COMMIT\n"]
        columns = _chain_columns(named, fallback)
        chains = len(named.endpoint_chains) + len(columns.parts) - columns.parts.count(None)
        return join_payload(head, _pivot_ranks(chains), columns, tail)


def render_diff(
    old_services: Iterable[Service],
    new_services: Iterable[Service],
    *,
    fallback: bool = False,
    family: int = 4,
) -> str:
    """The partial ``iptables-restore --noflush`` payload that turns the ruleset of
    ``render(old_services)`` into that of ``render(new_services)``.

    Only the Services that differ are written: their chains are rewritten, endpoint
    chains that did not change are left alone, chains that went away are flushed and
    deleted (``-X``), and each Service's rule in ``LBCORE-SERVICES`` (nat: its jump;
    filter: its REJECT) is deleted by its text and inserted at its place in the full
    order.  A Service object found unchanged by identity costs nothing but a lookup,
    an equal copy one comparison.  Empty when nothing changed.  The ``-D`` lines fail
    the table, changing nothing, if the node is not in the old state; re-apply the
    full payload then, as kube-proxy does after a failed partial restore.
    O(n) in Services plus the size of the changed ones (O(n log n) when a rule of
    ``LBCORE-SERVICES`` moves).

    >>> from lbcore import Endpoint, Service
    >>> old = Service("ns1/svc1:p80", "172.30.0.41", 80, endpoints=[Endpoint("10.180.0.1", 80)])
    >>> new = Service("ns1/svc1:p80", "172.30.0.41", 80, endpoints=[Endpoint("10.180.0.2", 80)])
    >>> render_diff([old], [old])
    ''
    >>> print(render_diff([old], [new]), end="")
    *nat
    :LBCORE-SVE-SXIVWICOYRO3J4NJ - [0:0]
    :LBCORE-SVE-LXVODXWDISEETFEF - [0:0]
    -A LBCORE-SVE-LXVODXWDISEETFEF -m comment --comment "ns1/svc1:p80" -s 10.180.0.2 -j LBCORE-MARK-MASQ
    -A LBCORE-SVE-LXVODXWDISEETFEF -m comment --comment "ns1/svc1:p80" -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
    :LBCORE-SVC-XPGD46QRK7WJZT7O - [0:0]
    -A LBCORE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j LBCORE-SVE-LXVODXWDISEETFEF
    COMMIT
    *nat
    -X LBCORE-SVE-SXIVWICOYRO3J4NJ
    COMMIT
    """
    old = check_services(old_services, family)
    new = check_services(new_services, family)
    _refuse_inexpressible(new, fallback)  # as render(new_services) would
    changed = changed_keys(old, new)
    if not changed:
        return ""
    old_chains, old_rules = _rendered([old[key] for key in changed if key in old], fallback)
    new_chains, new_rules = _rendered([new[key] for key in changed if key in new], fallback)
    # A chain that goes away is flushed now and deleted in a second transaction: see
    # "Order" in the module docstring.
    deleted = sorted(old_chains.keys() - new_chains.keys(), reverse=True)
    written = sorted(
        [(c, text) for c, text in new_chains.items() if old_chains.get(c) != text]
        + [(c, f":{c} - [0:0]") for c in deleted],
        reverse=True,
    )
    removals: dict[str, list[str]] = {"filter": [], "nat": []}
    inserts: dict[str, list[tuple[Key, str]]] = {"filter": [], "nat": []}
    for key in changed:
        old_rule, new_rule = old_rules.get(key), new_rules.get(key)
        if old_rule != new_rule:
            if old_rule is not None:
                table, spec = old_rule
                removals[table].append(f"-D {SERVICES_CHAIN} {spec}")
            if new_rule is not None:
                table, spec = new_rule
                inserts[table].append((key, spec))
    out: list[str] = []
    for table, body in (
        ("filter", removals["filter"] + _inserted("filter", inserts["filter"], new)),
        ("nat", [text for _, text in written] + removals["nat"] + _inserted("nat", inserts["nat"], new)),
        ("nat", [f"-X {chain}" for chain in deleted]),
    ):
        if body:
            out += [f"*{table}", *body, "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def _pivot_ranks(count: int) -> list[int]:
    """The ranks, in descending name order, of the few of ``count`` chains to be created
    first, in breadth-first order of a balanced search tree over them: median first,
    then the quartiles, and so on.

    iptables-save (nft 1.8.9) sorts the chains with a recursive quicksort whose pivot is
    the chain created first; chains created in name order make it recurse once per
    chain, and past about 100,000 chains it overflowed its 8 MB stack (measured: 120,000
    chains, SIGSEGV, in either order).  15 pivots made first cut the recursion 16-fold
    and cost the restore at most 15 more comparisons per command.  Not needed for small
    rulesets, so none below `_PIVOT_THRESHOLD` chains.
    """
    if count < _PIVOT_THRESHOLD:
        return []
    pivots = [i * count // (_PIVOTS + 1) for i in range(1, _PIVOTS + 1)]
    ordered, ranges = [], collections.deque([(0, len(pivots))])
    while ranges:
        low, high = ranges.popleft()
        if low < high:
            middle = (low + high) // 2
            ordered.append(pivots[middle])
            ranges += [(low, middle), (middle + 1, high)]
    return ordered




def _hooks(table: str, install: bool) -> list[str]:
    """A table's jumps from the built-in chains: inserted when installing, else checked."""
    if install:
        return [f"-I {builtin} 1 {spec}" for t, builtin, spec in HOOKS if t == table]
    return [_CHECK_NOTE, *(f"-C {builtin} {spec}" for t, builtin, spec in HOOKS if t == table)]


def _refuse_inexpressible(checked: dict[Key, Service], fallback: bool) -> None:
    """Raise `ConfigError` for the first Service, in key order, whose scheduler iptables
    cannot express, unless ``fallback``.  One pass in C when there is none."""
    if fallback or (
        _EXPRESSIBLE.issuperset(map(_scheduler_of, checked.values()))
        and not any(map(_slow_start_of, checked.values()))
    ):
        return
    for service in in_key_order(checked):
        _split(service, fallback)


def _split(service: Service, fallback: bool) -> str:
    """``rr`` or ``wrr``: how the Service's connections are split in iptables."""
    scheduler = service.scheduler
    if service.slow_start and not fallback:
        raise ConfigError(
            "slow_start", service.slow_start,
            f"of service {service.name!r} cannot be expressed in iptables (the kernel cannot "
            "ramp an endpoint up); drop it, or fallback=True to render the split without slow start",
        )
    if scheduler in _EXPRESSIBLE:
        return scheduler
    if not fallback:
        bound = "" if service.balance_factor is None else f" with balance_factor {service.balance_factor:g}"
        raise ConfigError(
            "scheduler", scheduler,
            f"of service {service.name!r}{bound} cannot be expressed in iptables (no connection "
            f"counts, no hashing); use rr or wrr, or fallback=True to render it as "
            f"{FALLBACK[scheduler]}" + (" without the bound" if bound else ""),
        )
    return FALLBACK[scheduler]


_EXPRESSIBLE = frozenset(("rr", "wrr"))
_scheduler_of = operator.attrgetter("scheduler")
_slow_start_of = operator.attrgetter("slow_start")  # None, 0 (off) or seconds


def _has_endpoints(service: Service) -> bool:
    """Whether `chosen_endpoints` is non-empty, without building it.  O(e), usually O(1)."""
    endpoints = service.endpoints
    for endpoint in endpoints:
        if endpoint.ready and endpoint.weight:
            return True
    if any(endpoint.ready for endpoint in endpoints):
        return False  # ready ones exist, so they are the usable ones, all quiesced
    return any(e.serving and e.terminating and e.weight for e in endpoints)


def _rendered(
    services: list[Service], fallback: bool
) -> tuple[dict[str, str], dict[Key, tuple[str, str]]]:
    """The chains of ``services`` (name -> text) and each one's (table, LBCORE-SERVICES
    rule) by key.  Chain names differ between Services of one family, so one dict
    holds them all."""
    named = name_chains(services)
    texts = chain_texts(_chain_columns(named, fallback))
    rules: dict[Key, tuple[str, str]] = {}
    for service, chain, count in zip(services, named.chains, named.counts):
        key = (service.name, service.protocol, service.family)
        rules[key] = ("nat", _portal(service, chain)) if count else ("filter", _reject(service))
    return dict(zip(map(chain_name, texts), texts)), rules


def _inserted(table: str, inserts: list[tuple[Key, str]], new: dict[Key, Service]) -> list[str]:
    """``-I`` lines putting each rule where the full payload of ``new`` has it: at its
    key's rank among the Services of ``new`` that render into ``table``.  Inserting in
    ascending position after every deletion does it: all rules before it are in place
    by then.  O(n log n), and nothing when there is nothing to insert."""
    if not inserts:
        return []
    in_nat = table == "nat"
    keys = sorted(key for key, service in new.items() if _has_endpoints(service) == in_nat)
    positioned = sorted((bisect.bisect_left(keys, key) + 1, spec) for key, spec in inserts)
    return [f"-I {SERVICES_CHAIN} {position} {spec}" for position, spec in positioned]


def _label(service: Service) -> str:
    """The Service's name as comments show it, cut to fit xt_comment.

    Names are [A-Za-z0-9._:/-] (checked twice), so inside quotes nothing needs escaping.
    """
    return service.name[:_MAX_LABEL]


def _match(service: Service) -> str:
    p = service.protocol
    return f"-m {p} -p {p} -d {service.vip} --dport {service.port}"


def _portal(service: Service, chain: str) -> str:
    return f'-m comment --comment "{_label(service)} virtual IP" {_match(service)} -j {chain}'


def _reject(service: Service) -> str:
    # In filter, not nat: REJECT is only valid in INPUT, FORWARD, OUTPUT and chains
    # called from them (iptables-extensions(8); kube-proxy does the same).
    return f'-m comment --comment "{_label(service)} has no endpoints" {_match(service)} -j REJECT'


def _chain_columns(named: ChainNames, fallback: bool) -> ChainColumns:
    """What the chains of the Services in ``named`` are made of."""
    ips = list(map(_ip_of, named.endpoints))
    return ChainColumns(_chain_parts(named, fallback), named.counts, named.endpoint_chains,
                        ips, named.addresses, _loopbacks(ips), MARK_MASQ_CHAIN)


def _chain_parts(named: ChainNames, fallback: bool) -> list[ChainParts | None]:
    """The parts of the chains of each Service in ``named``, None for one without
    endpoints: everything that is the same for all of a Service's endpoints, made once
    per Service."""
    parts: list[ChainParts | None] = []
    start = 0
    for service, chain, count in zip(named.services, named.chains, named.counts):
        if not count:
            parts.append(None)
            continue
        label = _label(service)
        comment = f'-m comment --comment "{label}"'
        if _split(service, fallback) == "rr":
            jumps = _even_jumps(count)
        else:
            jumps = _weighted_jumps(named.endpoints[start : start + count])
        p = service.protocol
        timeout = service.affinity_timeout
        parts.append(ChainParts(
            chain,
            f'\n-A {chain} -m comment --comment "{label} -> ',
            jumps,
            f" {comment} -s ",
            f" {comment} -m {p} -p {p} -j DNAT --to-destination ",
            None if timeout is None else f" {comment} -j SET --add-set ",
            None if timeout is None else f" src --exist --timeout {timeout}",
        ))
        start += count
    return parts


_ip_of = operator.attrgetter("ip")


def _loopbacks(ips: list[str]) -> frozenset[str]:
    """The loopback addresses among ``ips``: 127.0.0.0/8 and ::1 (ips are canonical)."""
    lines = "\n" + "\n".join(ips) + "\n"  # one search in C finds out if there is any
    if "\n127." not in lines and "\n::1\n" not in lines:
        return frozenset()
    return frozenset(ip for ip in ips if ip.startswith("127.") or ip == "::1")


@functools.lru_cache(maxsize=1024)
def _even_jumps(n: int) -> tuple[str, ...]:
    """The end of each rr split rule of a Service with ``n`` (> 0) endpoints."""
    # kube-proxy's probability strings: 1/n, 1/(n-1), ... with 10 decimals (PR #83599:
    # 5 decimals repeat from 319 endpoints, 10 not before 100,223); the last rule takes
    # the rest.
    return (*(_jump("%0.10f" % (1.0 / (n - i))) for i in range(n - 1)), _LAST_JUMP)


def _weighted_jumps(endpoints: Sequence[Endpoint]) -> tuple[str, ...]:
    """The end of each wrr split rule: the chance to stop at an endpoint among the ones
    not passed yet.  ``endpoints`` is not empty."""
    remaining = sum(e.weight for e in endpoints)
    jumps = []
    for endpoint in endpoints[:-1]:
        jumps.append(_jump("%0.10f" % (endpoint.weight / remaining)))
        remaining -= endpoint.weight
    return (*jumps, _LAST_JUMP)


def _jump(probability: str) -> str:
    return f'" -m statistic --mode random --probability {probability} -j '


_LAST_JUMP = '" -j '
