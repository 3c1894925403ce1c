"""What the iptables and ipset payloads both derive from the models: checked services in
a canonical order, the endpoints that get a chain, and kube-proxy-style hashed names.

A Service's chain is ``LBCORE-SVC-`` + hash(name + protocol); an endpoint's chain, and
its ClientIP affinity set, ``LBCORE-SVE-`` + hash(name + protocol + ip:port).  The hash
is kube-proxy's ``servicePortChainName``/``servicePortEndpointChainName``: sha256,
base32, first 16 characters, so the names are stable across runs and machines and fit
iptables' 28-character chain names and ipset's 31-character set names.  ``SVE`` sorts
above ``SVC`` on purpose (see "Order" in `lbcore.render.iptables`).

Speed.  A full render names 110,000 chains for 10,000 Services x 10 endpoints, so the
work per endpoint runs in C wherever it can (``map``, ``zip``, ``sorted``, one regular
expression over all names): a Python-level call per endpoint costs more than the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import re
from typing import Iterable, NamedTuple, Sequence

from ..errors import ConfigError
from ..models import NAME_RE, Endpoint, Service, usable_endpoints

SERVICE_CHAIN_PREFIX = "LBCORE-SVC-"
ENDPOINT_CHAIN_PREFIX = "LBCORE-SVE-"
#: The chain that marks a packet for masquerading (`lbcore.render.iptables`).
MARK_MASQ_CHAIN = "LBCORE-MARK-MASQ"

# base32 (RFC 4648) as a bytes.translate table: 5-bit value -> letter; the letters of a
# name's prefix (all above 31) stay themselves.
_BASE32_TABLE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" + bytes(range(32, 256))
# Every byte of a 5-byte group but the last is 0; the last keeps its low 5 bits.
_LOW5_OF_GROUP = b"\x00\x00\x00\x00\x1f"


def hash16(texts: Iterable[str], prefix: str = "") -> list[str]:
    """``prefix`` + kube-proxy's chain-name hash of each text: base32(sha256(text))[:16].

    The first 16 base32 letters are the first 80 bits (10 bytes) of the digest.  All
    names are written into one buffer: the prefix by strided slice assignment, the
    letters of all texts at once with big-integer shifts and masks, which run in C
    (``base64.b32encode`` is a Python loop and cost more than the rest of a
    10,000-service render).  O(n).

    >>> hash16(["ns1/svc1:p80tcp", "ns1/svc1:p80tcp10.180.0.1:80"])
    ['XPGD46QRK7WJZT7O', 'SXIVWICOYRO3J4NJ']
    >>> hash16(["ns1/svc1:p80tcp"], SERVICE_CHAIN_PREFIX)
    ['LBCORE-SVC-XPGD46QRK7WJZT7O']
    """
    sha256 = hashlib.sha256
    data = b"".join([sha256(text.encode()).digest()[:10] for text in texts])
    count = len(data) // 10
    if not count:
        return []
    groups = 2 * count  # 40 bits = 8 base32 letters per group, two groups per name
    size = len(prefix) + 16
    names = bytearray(size * count)
    for i, letter in enumerate(prefix.encode("ascii")):
        names[i::size] = bytes([letter]) * count
    number = int.from_bytes(data, "big")
    mask = int.from_bytes(_LOW5_OF_GROUP * groups, "big")
    for j in range(8):
        # Letter j of every group: its 5 bits moved to the bottom of the group, then
        # the group's last byte (to_bytes keeps each group in 5 bytes).
        shifted = ((number >> (35 - 5 * j)) & mask).to_bytes(5 * groups, "big")
        names[len(prefix) + j :: size] = shifted[4::10]  # first group of each name
        names[len(prefix) + 8 + j :: size] = shifted[9::10]  # second group
    text = names.translate(_BASE32_TABLE).decode("ascii")
    return [text[i : i + size] for i in range(0, len(text), size)]


def chosen_endpoints(service: Service) -> list[Endpoint]:
    """The endpoints that get an endpoint chain, in chain order.

    The usable ones by condition (ready, else serving-and-terminating: kube-proxy's
    fallback) with weight > 0 (weight 0 is quiesced: no new connections), sorted by
    ``ip:port`` as kube-proxy sorts them "to simplify diffing".  Empty means the Service
    is rejected.  O(e log e); the common case, every endpoint ready with a weight, is
    two passes in C before the sort.
    """
    endpoints = service.endpoints
    if not (all(map(_ready_of, endpoints)) and all(map(_weight_of, endpoints))):
        endpoints = [e for e in usable_endpoints(endpoints) if e.weight > 0]
    return sorted(endpoints, key=_endpoint_address)


#: What identifies a Service's chains: (name, protocol, address family).  kube-proxy
#: hashes name and protocol only: a dual-stack Service has the same chain names in its
#: iptables and its ip6tables payload.
Key = tuple[str, str, int]


def check_services(services: Iterable[Service], family: int | None = None) -> dict[Key, Service]:
    """Check ``services`` and return them by `Key`, in input order (`in_key_order` sorts).

    ``family`` (4 or 6) keeps only the Services of that address family; None keeps all.
    Raises `ConfigError` for a non-Service, a name that is not safe in a rule (only
    reachable by tampering with a frozen Service), or two Services that would share a
    chain (same key) or a match (same vip, port and protocol).  O(n).
    """
    if family not in (None, 4, 6):
        raise ConfigError("family", family, "must be 4 or 6")
    services = list(services)
    # Each check is one pass in C (map, all, set, one regular expression); the slow
    # search for the culprit runs only when a check fails.  A partial sync of 10,000
    # Services checks both sides.
    if not all(map(isinstance, services, itertools.repeat(Service))):
        i = next(i for i, s in enumerate(services) if not isinstance(s, Service))
        raise ConfigError(f"services[{i}]", services[i], "is not an lbcore Service")
    names = list(map(_name_of, services))
    # The name goes into comments and hashes: Service validates it, and this second
    # look keeps a tampered object from carrying quotes or newlines into a rule.
    if not _all_safe(names):
        i = next(i for i, name in enumerate(names) if not _safe_name(name))
        raise ConfigError(f"services[{i}].name", names[i], "is not a valid service name")
    vips = list(map(_vip_of, services))
    protocols = list(map(_protocol_of, services))
    # models._family, inline: a call per Service costs more than the rest of the key.
    keys = list(zip(names, protocols, [6 if ":" in vip else 4 for vip in vips]))
    by_key = dict(zip(keys, services))
    if len(by_key) < len(services):
        i = _first_repeat(keys)
        raise ConfigError(
            f"services[{i}].name", services[i].name,
            f"is also services[{keys.index(keys[i])}] with protocol {services[i].protocol}; "
            "chain names come from name and protocol, so each pair must be unique per family",
        )
    addresses = list(zip(vips, map(_port_of, services), protocols))
    if len(set(addresses)) < len(services):
        i = _first_repeat(addresses)
        raise ConfigError(
            f"services[{i}]", f"{services[i].address}/{services[i].protocol}",
            f"is also served by services[{addresses.index(addresses[i])}]; one Service per "
            "vip, port and protocol",
        )
    if family is not None and any(key[2] != family for key in keys):
        return {key: service for key, service in by_key.items() if key[2] == family}
    return by_key


def in_key_order(checked: dict[Key, Service]) -> list[Service]:
    """The Services of `check_services` in key order: the payloads' order.  O(n log n)."""
    return list(map(checked.__getitem__, sorted(checked)))


# Every name, one per line, in one match: a name cannot hold a newline, so the newlines
# are exactly the separators when there is one fewer than there are names.
_NAMES_RE = re.compile(rf"(?:{NAME_RE.pattern})(?:\n(?:{NAME_RE.pattern}))*")


def _all_safe(names: list[object]) -> bool:
    if not names:
        return True
    try:
        joined = "\n".join(names)  # type: ignore[arg-type]
    except TypeError:
        return False  # not all str
    return joined.count("\n") == len(names) - 1 and _NAMES_RE.fullmatch(joined) is not None


def _safe_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


_endpoint_address = operator.attrgetter("address")
_ready_of = operator.attrgetter("ready")
_weight_of = operator.attrgetter("weight")
_name_of = operator.attrgetter("name")
_protocol_of = operator.attrgetter("protocol")
_vip_of = operator.attrgetter("vip")
_port_of = operator.attrgetter("port")


def _first_repeat(values: list[object]) -> int:
    """The index of the first value seen before in ``values``."""
    seen: set[object] = set()
    for i, value in enumerate(values):
        if value in seen:
            return i
        seen.add(value)
    raise ValueError("no value repeats")


def changed_keys(old: dict[Key, Service], new: dict[Key, Service]) -> list[Key]:
    """The keys whose Service was added, removed or changed, in key order.

    The same object costs one identity test, an equal copy one comparison.  O(n).
    """
    changed = [key for key, service in new.items()
               if (before := old.get(key)) is not service and before != service]
    changed += old.keys() - new.keys()
    return sorted(changed)


class ChainNames(NamedTuple):
    """The chains of ``services``, flat: ``chains[i]`` is the chain of ``services[i]``;
    its chosen endpoints are the next ``counts[i]`` entries of ``endpoints``, whose
    ``ip:port`` are in ``addresses`` and chains in ``endpoint_chains``."""

    services: Sequence[Service]
    chains: list[str]
    counts: list[int]
    endpoints: list[Endpoint]
    addresses: list[str]
    endpoint_chains: list[str]


def name_chains(services: Sequence[Service]) -> ChainNames:
    """Choose the endpoints of each (checked) Service and name its chains.  O(e log e).

    >>> from lbcore import Endpoint, Service
    >>> named = name_chains([Service("ns1/svc1:p80", "172.30.0.41", 80,
    ...                              endpoints=[Endpoint("10.180.0.1", 80)])])
    >>> named.chains, named.endpoint_chains
    (['LBCORE-SVC-XPGD46QRK7WJZT7O'], ['LBCORE-SVE-SXIVWICOYRO3J4NJ'])
    """
    chosen = list(map(chosen_endpoints, services))
    counts = list(map(len, chosen))
    endpoints = list(itertools.chain.from_iterable(chosen))
    addresses = list(map(_endpoint_address, endpoints))
    bases = list(map(operator.add, map(_name_of, services), map(_protocol_of, services)))
    per_endpoint = itertools.chain.from_iterable(map(itertools.repeat, bases, counts))
    return ChainNames(
        services,
        hash16(bases, SERVICE_CHAIN_PREFIX),
        counts,
        endpoints,
        addresses,
        hash16(map(operator.add, per_endpoint, addresses), ENDPOINT_CHAIN_PREFIX),
    )
