"""What the iptables and ipset payloads both derive from the models: checked services in
a canonical order, the endpoints that get a chain, and kube-proxy-style hashed names.

A Service's chain is ``LBCORE-SVC-`` + hash(name + protocol); an endpoint's chain, and
its ClientIP affinity set, ``LBCORE-SVE-`` + hash(name + protocol + ip:port).  The hash
is kube-proxy's ``servicePortChainName``/``servicePortEndpointChainName``: sha256,
base32, first 16 characters, so the names are stable across runs and machines and fit
iptables' 28-character chain names and ipset's 31-character set names.  ``SVE`` sorts
above ``SVC`` on purpose (see "Order" in `lbcore.render.iptables`).
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError
from ..models import _NAME_RE, Endpoint, Service, _family

SERVICE_CHAIN_PREFIX = "LBCORE-SVC-"
ENDPOINT_CHAIN_PREFIX = "LBCORE-SVE-"

# base32 (RFC 4648) as a bytes.translate table: 5-bit value -> letter.
_BASE32_TABLE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" + bytes(224)
# Every byte of a 5-byte group but the last is 0; the last keeps its low 5 bits.
_LOW5_OF_GROUP = b"\x00\x00\x00\x00\x1f"


def hash16(texts: Iterable[str]) -> list[str]:
    """kube-proxy's chain-name hash of each text: base32(sha256(text))[:16].

    The first 16 base32 letters are the first 80 bits (10 bytes) of the digest.  The
    prefixes of all texts are encoded at once with big-integer shifts and masks, which
    run in C: ``base64.b32encode`` is a Python loop and cost more than the rest of a
    10,000-service render.  O(n).

    >>> hash16(["ns1/svc1:p80tcp", "ns1/svc1:p80tcp10.180.0.1:80"])
    ['XPGD46QRK7WJZT7O', 'SXIVWICOYRO3J4NJ']
    """
    sha256 = hashlib.sha256
    data = b"".join([sha256(text.encode()).digest()[:10] for text in texts])
    groups = len(data) // 5  # 40 bits = 8 base32 letters per group, two groups per name
    if not groups:
        return []
    number = int.from_bytes(data, "big")
    mask = int.from_bytes(_LOW5_OF_GROUP * groups, "big")
    letters = bytearray(8 * groups)
    for j in range(8):
        # Letter j of every group: its 5 bits moved to the bottom of the group, then
        # the group's last byte (to_bytes keeps each group in 5 bytes).
        shifted = ((number >> (35 - 5 * j)) & mask).to_bytes(5 * groups, "big")
        letters[j::8] = shifted[4::5]
    text = letters.translate(_BASE32_TABLE).decode("ascii")
    return [text[i : i + 16] for i in range(0, len(text), 16)]


def chosen_endpoints(service: Service) -> list[tuple[str, Endpoint]]:
    """(``ip:port``, endpoint) of the endpoints that get an endpoint chain, in chain order.

    The usable ones by condition (ready, else serving-and-terminating: kube-proxy's
    fallback) with weight > 0 (weight 0 is quiesced: no new connections), sorted by
    ``ip:port`` as kube-proxy sorts them "to simplify diffing".  None means the Service
    is rejected.  O(e log e).
    """
    chosen = [e for e in service.usable_endpoints if e.weight > 0]
    chosen.sort(key=_endpoint_address)
    return [(e.address, e) for e in chosen]


#: What identifies a Service's chains: (name, protocol, address family).  kube-proxy
#: hashes name and protocol only: a dual-stack Service has the same chain names in its
#: iptables and its ip6tables payload.
Key = tuple[str, str, int]


def check_services(services: Iterable[Service], family: int | None = None) -> dict[Key, Service]:
    """Check ``services`` and return them by `Key`, in key order (the payloads' order).

    ``family`` (4 or 6) keeps only the Services of that address family; None keeps all.
    Raises `ConfigError` for a non-Service, a name that is not safe in a rule (only
    reachable by tampering with a frozen Service), or two Services that would share a
    chain (same key) or a match (same vip, port and protocol).  O(n log n).
    """
    if family not in (None, 4, 6):
        raise ConfigError("family", family, "must be 4 or 6")
    services = list(services)
    # Each check is one pass in C (map, all, set); the slow search for the culprit
    # runs only when a check fails.  A 10,000-Service partial sync checks both sides.
    if not all(map(isinstance, services, itertools.repeat(Service))):
        i = next(i for i, s in enumerate(services) if not isinstance(s, Service))
        raise ConfigError(f"services[{i}]", services[i], "is not an lbcore Service")
    names = list(map(_name_of, services))
    # The name goes into comments and hashes: Service validates it, and this second
    # look keeps a tampered object from carrying quotes or newlines into a rule.
    if not all(map(_safe_name, names)):
        i = next(i for i, name in enumerate(names) if not _safe_name(name))
        raise ConfigError(f"services[{i}].name", names[i], "is not a valid service name")
    keys = list(zip(names, map(_protocol_of, services), map(_family, map(_vip_of, services))))
    by_key = dict(zip(keys, services))
    if len(by_key) < len(services):
        i = _first_repeat(keys)
        raise ConfigError(
            f"services[{i}].name", services[i].name,
            f"is also services[{keys.index(keys[i])}] with protocol {services[i].protocol}; "
            "chain names come from name and protocol, so each pair must be unique per family",
        )
    addresses = list(map(_address_of, services))
    if len(set(addresses)) < len(services):
        i = _first_repeat(addresses)
        raise ConfigError(
            f"services[{i}]", f"{services[i].address}/{services[i].protocol}",
            f"is also served by services[{addresses.index(addresses[i])}]; one Service per "
            "vip, port and protocol",
        )
    if family is not None:
        keys = [key for key in keys if key[2] == family]
    return {key: by_key[key] for key in sorted(keys)}


def _safe_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


_endpoint_address = operator.attrgetter("address")
_name_of = operator.attrgetter("name")
_protocol_of = operator.attrgetter("protocol")
_vip_of = operator.attrgetter("vip")
_address_of = operator.attrgetter("vip", "port", "protocol")


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

    The same object costs one identity test, an equal copy one comparison.  O(n log n).
    """
    changed = [key for key, service in new.items()
               if (before := old.get(key)) is not service and before != service]
    changed += old.keys() - new.keys()
    return sorted(changed)


@dataclass(frozen=True, slots=True)
class ServiceChains:
    """A Service with its chain names: ``endpoint_chains[i]`` is the chain of
    ``endpoints[i]``, whose ``ip:port`` is ``addresses[i]``."""

    service: Service
    chain: str
    endpoints: tuple[Endpoint, ...]
    addresses: tuple[str, ...]
    endpoint_chains: tuple[str, ...]


def name_chains(services: Iterable[Service]) -> list[ServiceChains]:
    """Choose the endpoints of each (checked) Service and name its chains.  O(e log e).

    >>> from lbcore import Endpoint, Service
    >>> [named] = name_chains([Service("ns1/svc1:p80", "172.30.0.41", 80,
    ...                                endpoints=[Endpoint("10.180.0.1", 80)])])
    >>> named.chain, named.endpoint_chains
    ('LBCORE-SVC-XPGD46QRK7WJZT7O', ('LBCORE-SVE-SXIVWICOYRO3J4NJ',))
    """
    services = list(services)
    chosen = [chosen_endpoints(s) for s in services]
    texts: list[str] = []
    for service, pairs in zip(services, chosen):
        base = service.name + service.protocol
        texts.append(base)
        texts += [base + address for address, _ in pairs]
    hashes = iter(hash16(texts))
    result = []
    for service, pairs in zip(services, chosen):
        chain = SERVICE_CHAIN_PREFIX + next(hashes)
        addresses = tuple([address for address, _ in pairs])
        endpoints = tuple([endpoint for _, endpoint in pairs])
        endpoint_chains = tuple([ENDPOINT_CHAIN_PREFIX + next(hashes) for _ in pairs])
        result.append(ServiceChains(service, chain, endpoints, addresses, endpoint_chains))
    return result

