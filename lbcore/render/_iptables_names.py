"""What the iptables and ipset payloads both derive from the models: checked services in
a canonical order, the endpoints that get a chain, and kube-proxy-style hashed names.

A Service's chain is ``LBCORE-SVC-`` + hash(name + protocol); an endpoint's chain, and
its ClientIP affinity set, ``LBCORE-SEP-`` + hash(name + protocol + ip:port).  The hash
is kube-proxy's ``servicePortChainName``/``servicePortEndpointChainName``: sha256,
base32, first 16 characters, so the names are stable across runs and machines and fit
iptables' 28-character chain names and ipset's 31-character set names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from ..errors import ConfigError
from ..models import _NAME_RE, Endpoint, Service

SERVICE_CHAIN_PREFIX = "LBCORE-SVC-"
ENDPOINT_CHAIN_PREFIX = "LBCORE-SEP-"

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


def chosen_endpoints(service: Service) -> list[Endpoint]:
    """The endpoints that get an endpoint chain, in chain order.

    The usable ones by condition (ready, else serving-and-terminating: kube-proxy's
    fallback) with weight > 0 (weight 0 is quiesced: no new connections), sorted by
    ``ip:port`` as kube-proxy sorts them "to simplify diffing".  None means the Service
    is rejected.  O(e log e).
    """
    return sorted((e for e in service.usable_endpoints if e.weight > 0), key=_address)


def _address(endpoint: Endpoint) -> str:
    return endpoint.address


def check_services(services: Iterable[Service], family: int | None = None) -> list[Service]:
    """Check ``services`` and return them sorted by (name, protocol).

    ``family`` (4 or 6) keeps only the Services of that address family; None keeps all.
    Raises `ConfigError` for a non-Service, a name that is not safe in a rule (only
    reachable by tampering with a frozen Service), or two Services that would share a
    chain (same name and protocol) or a match (same vip, port and protocol).  O(n log n).
    """
    if family not in (None, 4, 6):
        raise ConfigError("family", family, "must be 4 or 6")
    kept: list[Service] = []
    by_key: dict[tuple[str, str], int] = {}
    by_address: dict[tuple[str, int, str], int] = {}
    for i, service in enumerate(services):
        if not isinstance(service, Service):
            raise ConfigError(f"services[{i}]", service, "is not an lbcore Service")
        # The name goes into comments and hashes: Service validates it, and this second
        # look keeps a tampered object from carrying quotes or newlines into a rule.
        if not isinstance(service.name, str) or not _NAME_RE.fullmatch(service.name):
            raise ConfigError(f"services[{i}].name", service.name, "is not a valid service name")
        key = (service.name, service.protocol)
        if key in by_key:
            raise ConfigError(
                f"services[{i}].name", service.name,
                f"is also services[{by_key[key]}] with protocol {service.protocol}; "
                "chain names come from name and protocol, so each pair must be unique",
            )
        address = (service.vip, service.port, service.protocol)
        if address in by_address:
            raise ConfigError(
                f"services[{i}]", f"{service.address}/{service.protocol}",
                f"is also served by services[{by_address[address]}]; one Service per "
                "vip, port and protocol",
            )
        by_key[key] = by_address[address] = i
        if family is None or service.family == family:
            kept.append(service)
    kept.sort(key=service_key)
    return kept


def service_key(service: Service) -> tuple[str, str]:
    """(name, protocol): what identifies a Service's chains; the order of the payloads."""
    return (service.name, service.protocol)


def changed_keys(
    old: dict[tuple[str, str], Service], new: dict[tuple[str, str], Service]
) -> list[tuple[str, str]]:
    """The keys whose Service was added, removed or changed, in key order.

    The same object costs one identity test, an equal copy one comparison.  O(n log n).
    """
    return sorted(
        key for key in old.keys() | new.keys()
        if old.get(key) is not new.get(key) and old.get(key) != new.get(key)
    )


@dataclass(frozen=True, slots=True)
class ServiceChains:
    """A Service with the names of its chains: ``endpoint_chains[i]`` is ``endpoints[i]``'s."""

    service: Service
    chain: str
    endpoints: tuple[Endpoint, ...]
    endpoint_chains: tuple[str, ...]


def name_chains(services: Iterable[Service]) -> list[ServiceChains]:
    """Choose the endpoints of each (checked) Service and name its chains.  O(e log e).

    >>> from lbcore import Endpoint, Service
    >>> [named] = name_chains([Service("ns1/svc1:p80", "172.30.0.41", 80,
    ...                                endpoints=[Endpoint("10.180.0.1", 80)])])
    >>> named.chain, named.endpoint_chains
    ('LBCORE-SVC-XPGD46QRK7WJZT7O', ('LBCORE-SEP-SXIVWICOYRO3J4NJ',))
    """
    services = list(services)
    chosen = [chosen_endpoints(s) for s in services]
    texts: list[str] = []
    for service, endpoints in zip(services, chosen):
        base = service.name + service.protocol
        texts.append(base)
        texts.extend([base + e.address for e in endpoints])
    hashes = iter(hash16(texts))
    result = []
    for service, endpoints in zip(services, chosen):
        chain = SERVICE_CHAIN_PREFIX + next(hashes)
        endpoint_chains = tuple([ENDPOINT_CHAIN_PREFIX + next(hashes) for _ in endpoints])
        result.append(ServiceChains(service, chain, tuple(endpoints), endpoint_chains))
    return result
