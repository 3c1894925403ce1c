"""Service and Endpoint: what is balanced, with Kubernetes semantics.

Both are frozen, slotted and hashable, and validate every field on construction: a bad
value raises `ConfigError` naming the field and the value, and nothing is half-built.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Iterable

from .errors import ConfigError

__all__ = [
    "Endpoint",
    "Service",
    "SCHEDULERS",
    "PROTOCOLS",
    "SCHED_FLAGS",
    "DEFAULT_AFFINITY_TIMEOUT",
    "MAX_AFFINITY_TIMEOUT",
    "usable_endpoints",
    "check_endpoints",
    "check_int",
    "join_host_port",
    "NAME_RE",
]

#: ipvsadm's scheduler names, where lbcore's meaning matches IPVS's.
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "dh", "sh", "mh")
PROTOCOLS = ("tcp", "udp", "sctp")
#: ipvsadm ``-b`` flags; each belongs to the scheduler named by its prefix.
SCHED_FLAGS = ("sh-fallback", "sh-port", "mh-fallback", "mh-port")
#: Kubernetes ``DefaultClientIPServiceAffinitySeconds`` (3 hours) and its maximum.
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400
#: ipvsadm ``-w``: 0 through 2147483647.
MAX_WEIGHT = 2**31 - 1

# Service names end up in iptables comments and chain-name hashes: a conservative
# alphabet (Kubernetes names, namespace/name:port) keeps them from ever carrying quotes,
# spaces or newlines into a rule.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,252}")


def check_int(field_name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in ``low..high``, else ConfigError naming the field."""
    if type(value) is not int:  # bool is an int subclass: refuse True as a port
        raise ConfigError(field_name, value, f"must be an integer in {low}..{high}")
    if not low <= value <= high:
        raise ConfigError(field_name, value, f"is out of range; valid: {low}..{high}")
    return value


def _check_bool(field_name: str, value: object) -> bool:
    if type(value) is not bool:
        raise ConfigError(field_name, value, "must be true or false")
    return value


def _check_ip(field_name: str, value: object, *, allow_unspecified: bool = False) -> str:
    """Return the canonical text of an IPv4 or IPv6 address."""
    if not isinstance(value, str):
        raise ConfigError(field_name, value, "must be an IPv4 or IPv6 address string")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(field_name, value, "is not an IPv4 or IPv6 address") from None
    if getattr(address, "scope_id", None):
        raise ConfigError(field_name, value, "has an IPv6 zone; use an address without %zone")
    if address.is_unspecified and not allow_unspecified:
        raise ConfigError(field_name, value, "is the unspecified address; give a real one")
    return str(address)


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def join_host_port(ip: str, port: int) -> str:
    """``ip:port``, with an IPv6 address in brackets (``[fd00::1]:80``)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True, slots=True, eq=False)
class Endpoint:
    """One backend address of a Service.

    ``weight`` follows ipvsadm ``-w`` (0..2**31-1); 0 means quiesced: no new
    connections, existing ones stay.  ``ready``/``serving``/``terminating`` are the
    EndpointSlice conditions; ``serving`` defaults to ``ready`` as in Kubernetes.

    >>> Endpoint("10.0.0.1", 8080, weight=3)
    Endpoint(ip='10.0.0.1', port=8080, weight=3, ready=True, serving=True, terminating=False)
    >>> Endpoint("2001:DB8::1", 443).address
    '[2001:db8::1]:443'
    """

    ip: str
    port: int
    weight: int = 1
    ready: bool = True
    serving: bool | None = None
    terminating: bool = False
    _key: tuple = field(init=False, repr=False, compare=False, default=())
    _hash: int = field(init=False, repr=False, compare=False, default=0)
    #: ``ip:port``, with IPv6 in brackets (``[2001:db8::1]:443``).  A plain slot, built
    #: once: renderers read it for every endpoint, and a property costs a Python call.
    address: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", _check_ip("ip", self.ip))
        check_int("port", self.port, 1, 65535)
        check_int("weight", self.weight, 0, MAX_WEIGHT)
        _check_bool("ready", self.ready)
        _check_bool("terminating", self.terminating)
        if self.serving is None:
            object.__setattr__(self, "serving", self.ready)
        else:
            _check_bool("serving", self.serving)
        # Endpoints are dict keys (release, stats) and diffs compare 100,000 of them: hash
        # once, and compare one prebuilt tuple instead of a dataclass's per-call tuples.
        key = (self.ip, self.port, self.weight, self.ready, self.serving, self.terminating)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))
        # Renderers name a chain and write a rule per endpoint address: build it once.
        object.__setattr__(self, "address", join_host_port(self.ip, self.port))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if type(other) is not Endpoint:
            return NotImplemented
        return self._key == other._key  # type: ignore[attr-defined]

    @property
    def family(self) -> int:
        """4 or 6."""
        return _family(self.ip)


def usable_endpoints(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    """The endpoints a Service sends new connections to, by condition (kube-proxy).

    Ready endpoints; if none is ready, the serving-and-terminating ones (kube-proxy
    ``CategorizeEndpoints``: "fall back to Serving-Terminating endpoints if no Ready
    endpoints are available").  Weight and passive health are the balancer's business.

    >>> a = Endpoint("10.0.0.1", 80, ready=False, serving=True, terminating=True)
    >>> b = Endpoint("10.0.0.2", 80, ready=False, serving=False, terminating=True)
    >>> usable_endpoints([a, b]) == (a,)
    True
    """
    endpoints = tuple(endpoints)
    ready = tuple(e for e in endpoints if e.ready)
    if ready:
        return ready
    return tuple(e for e in endpoints if e.serving and e.terminating)


def check_endpoints(endpoints: object, field_name: str = "endpoints") -> tuple[Endpoint, ...]:
    """Validate an endpoint list: Endpoint objects, no address twice."""
    if isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Iterable):
        raise ConfigError(field_name, endpoints, "must be a list of Endpoint objects")
    result = tuple(endpoints)
    seen: set[tuple[str, int]] = set()
    for i, endpoint in enumerate(result):
        if not isinstance(endpoint, Endpoint):
            raise ConfigError(f"{field_name}[{i}]", endpoint, "is not an Endpoint")
        key = (endpoint.ip, endpoint.port)
        if key in seen:
            raise ConfigError(
                f"{field_name}[{i}]", endpoint.address, "is listed twice; each ip:port once"
            )
        seen.add(key)
    return result


def _check_listen(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        host, sep, port_text = value.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ConfigError("listen", value, "must be 'ip:port' (IPv6 as '[ip]:port')")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ConfigError("listen", value, "must put an IPv6 address in brackets: '[ip]:port'")
        host_port: tuple[object, object] = (host, int(port_text))
    elif isinstance(value, tuple) and len(value) == 2:
        host_port = value
    else:
        raise ConfigError("listen", value, "must be 'ip:port' or an (ip, port) pair")
    host = _check_ip("listen", host_port[0], allow_unspecified=True)
    port = host_port[1]
    if type(port) is not int or not 0 <= port <= 65535:
        raise ConfigError("listen", value, "has a bad port; valid: 0..65535 (0 = any free port)")
    return (host, port)


@dataclass(frozen=True, slots=True)
class Service:
    """One balanced (vip, port, protocol), like one IPVS virtual service.

    ``scheduler`` is an ipvsadm scheduler name; ``affinity_timeout`` (seconds,
    1..86400) turns on ClientIP stickiness; ``listen`` is where the userspace forwarder
    binds (default ``vip:port``; port 0 picks a free port); ``sched_flags`` are ipvsadm
    ``-b`` flags; ``max_connections`` caps the forwarder's concurrent connections.

    >>> s = Service("default/web:http", "10.96.0.10", 80, endpoints=[Endpoint("10.1.0.5", 8080)])
    >>> s.protocol, s.scheduler, s.listen_address
    ('tcp', 'rr', ('10.96.0.10', 80))
    """

    name: str
    vip: str
    port: int
    protocol: str = "tcp"
    endpoints: tuple[Endpoint, ...] = ()
    scheduler: str = "rr"
    affinity_timeout: int | None = None
    listen: tuple[str, int] | None = None
    sched_flags: tuple[str, ...] = field(default=())
    max_connections: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise ConfigError(
                "name", self.name,
                "is not a valid service name; use 1..253 of A-Z a-z 0-9 . _ : / - "
                "starting with a letter or digit",
            )
        object.__setattr__(self, "vip", _check_ip("vip", self.vip))
        check_int("port", self.port, 1, 65535)
        protocol = self.protocol.lower() if isinstance(self.protocol, str) else self.protocol
        if protocol not in PROTOCOLS:
            raise ConfigError("protocol", self.protocol, f"is not one of {', '.join(PROTOCOLS)}")
        object.__setattr__(self, "protocol", protocol)
        endpoints = check_endpoints(self.endpoints)
        for i, endpoint in enumerate(endpoints):
            if endpoint.family != _family(self.vip):
                raise ConfigError(
                    f"endpoints[{i}].ip", endpoint.ip,
                    f"is IPv{endpoint.family} but vip {self.vip} is IPv{_family(self.vip)}; "
                    "one family per Service",
                )
        object.__setattr__(self, "endpoints", endpoints)
        if self.scheduler not in SCHEDULERS:
            raise ConfigError("scheduler", self.scheduler, f"is not one of {', '.join(SCHEDULERS)}")
        if self.affinity_timeout is not None:
            check_int("affinity_timeout", self.affinity_timeout, 1, MAX_AFFINITY_TIMEOUT)
        object.__setattr__(self, "listen", _check_listen(self.listen))
        object.__setattr__(self, "sched_flags", self._checked_flags())
        if self.max_connections is not None:
            check_int("max_connections", self.max_connections, 1, 2**31 - 1)

    def _checked_flags(self) -> tuple[str, ...]:
        flags = self.sched_flags
        if isinstance(flags, str) or not isinstance(flags, Iterable):
            raise ConfigError("sched_flags", flags, "must be a list of flag names")
        flags = tuple(flags)
        for flag in flags:
            if flag not in SCHED_FLAGS:
                raise ConfigError("sched_flags", flag, f"is not one of {', '.join(SCHED_FLAGS)}")
            if not flag.startswith(self.scheduler + "-"):
                raise ConfigError(
                    "sched_flags", flag, f"does not apply to scheduler {self.scheduler!r}"
                )
        return tuple(sorted(set(flags)))

    @property
    def listen_address(self) -> tuple[str, int]:
        """Where the forwarder binds: ``listen`` if given, else ``(vip, port)``."""
        return self.listen if self.listen is not None else (self.vip, self.port)

    @property
    def address(self) -> str:
        """``vip:port``, with IPv6 in brackets."""
        return join_host_port(self.vip, self.port)

    @property
    def family(self) -> int:
        """4 or 6."""
        return _family(self.vip)

    @property
    def usable_endpoints(self) -> tuple[Endpoint, ...]:
        """Endpoints for new connections by condition; see `usable_endpoints`."""
        return usable_endpoints(self.endpoints)
