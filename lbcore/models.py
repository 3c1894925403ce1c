"""Service and Endpoint: what is balanced, with Kubernetes semantics.

Both are frozen, slotted and hashable, and validate every field on construction: a bad
value raises `ConfigError` naming the field and the value, and nothing is half-built.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter
from typing import Iterable

from .errors import ConfigError

__all__ = [
    "Endpoint",
    "Service",
    "HealthCheck",
    "HEALTH_CHECK_TYPES",
    "SCHEDULERS",
    "PROTOCOLS",
    "SCHED_FLAGS",
    "DEFAULT_AFFINITY_TIMEOUT",
    "MAX_AFFINITY_TIMEOUT",
    "usable_endpoints",
    "check_endpoints",
    "check_int",
    "check_balance_factor",
    "balance_percent",
    "BOUNDED_SCHEDULERS",
    "SLOW_START_SCHEDULERS",
    "check_slow_start",
    "check_panic_threshold",
    "join_host_port",
    "NAME_RE",
]

#: ipvsadm's scheduler names, where lbcore's meaning matches IPVS's; then the two IPVS
#: has not: ``p2c`` (Envoy's least request) and ``ring`` (ring hash, libketama's kind).
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "dh", "sh", "mh", "p2c", "ring")
#: The schedulers that take ``balance_factor`` (consistent hashing with bounded loads).
BOUNDED_SCHEDULERS = ("mh", "ring")
#: The schedulers that ramp a new or recovered endpoint up (``slow_start``): the ones
#: whose share follows a weight over time (Envoy ramps its round robin and least request).
SLOW_START_SCHEDULERS = ("wrr", "lc", "wlc", "p2c")
#: The longest slow start window taken, in seconds (a day, like affinity_timeout).
MAX_SLOW_START = 86400
PROTOCOLS = ("tcp", "udp", "sctp")
#: ipvsadm ``-b`` flags; each belongs to the scheduler named by its prefix.
SCHED_FLAGS = ("sh-fallback", "sh-port", "mh-fallback", "mh-port")
#: Kubernetes ``DefaultClientIPServiceAffinitySeconds`` (3 hours) and its maximum.
DEFAULT_AFFINITY_TIMEOUT = 10800
MAX_AFFINITY_TIMEOUT = 86400
#: ipvsadm ``-w``: 0 through 2147483647.
MAX_WEIGHT = 2**31 - 1
#: What a health check does: ``tcp`` connects (and sends and expects bytes, if told to);
#: ``http`` sends a GET and reads the status (keepalived's TCP_CHECK and HTTP_GET).
HEALTH_CHECK_TYPES = ("tcp", "http")

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


def check_balance_factor(value: object, field_name: str = "balance_factor") -> float | int:
    """Bounded loads: ``c`` in 1..100, a whole number of percent (1.25 is 125 %).

    An endpoint takes a new key only while it holds fewer than
    ``max(1, ceil(c * (active + 1) * its weight share))`` connections.  Envoy's
    ``hash_balance_factor`` and HAProxy's ``hash-balance-factor`` take the same factor as
    an integer percentage; whole percentages keep the bound exact integer arithmetic,
    the same in every process.

    >>> check_balance_factor(1.25)
    1.25
    >>> check_balance_factor(1.125)
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: balance_factor: 1.125 is not a whole percentage; valid: 1..100 in steps of 0.01 (1.25 = 125 %)
    """
    if type(value) not in (int, float) or value != value:  # bool is an int; NaN is not a factor
        raise ConfigError(field_name, value, "must be a number from 1 to 100 (1.25 = 125 %)")
    if not 1 <= value <= 100:
        raise ConfigError(field_name, value, "is out of range; valid: 1..100 (1.25 = 125 %)")
    if abs(value * 100 - round(value * 100)) > 1e-9:
        raise ConfigError(
            field_name, value, "is not a whole percentage; valid: 1..100 in steps of 0.01 (1.25 = 125 %)"
        )
    return value


def _check_number(field_name: str, value: object, what: str) -> float | int:
    if type(value) not in (int, float) or value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(field_name, value, f"must be a number: {what}")
    return value


def check_slow_start(value: object, field_name: str = "slow_start") -> float | int | None:
    """The slow start window in seconds: 0..86400, None or 0 for off (Envoy's
    ``slow_start_window``).

    >>> check_slow_start(30)
    30
    >>> check_slow_start(-1)
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: slow_start: -1 is out of range; valid: 0..86400 seconds (0: off)
    """
    if value is None:
        return None
    _check_number(field_name, value, "seconds, 0..86400 (0: off)")
    if not 0 <= value <= MAX_SLOW_START:
        raise ConfigError(field_name, value, f"is out of range; valid: 0..{MAX_SLOW_START} seconds (0: off)")
    return value


def check_panic_threshold(value: object, field_name: str = "panic_threshold") -> float | int | None:
    """The panic threshold in percent: above 0, at most 100, None for off (Envoy's
    ``healthy_panic_threshold``, 50 by default when on).

    >>> check_panic_threshold(50)
    50
    >>> check_panic_threshold(0)
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: panic_threshold: 0 is out of range; valid: above 0, at most 100 (percent; Envoy uses 50)
    """
    if value is None:
        return None
    _check_number(field_name, value, "a percentage above 0, at most 100 (Envoy uses 50)")
    if not 0 < value <= 100:
        raise ConfigError(field_name, value, "is out of range; valid: above 0, at most 100 (percent; Envoy uses 50)")
    return value


def balance_percent(value: float | int) -> int:
    """A checked balance factor as the integer percentage the balancers compute with."""
    return round(value * 100)


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


_address = attrgetter("address")


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
    # Every balancer update pays this: check the common case in C-level passes (ip is
    # canonical, so one address per ip:port), and find the culprit only when it fails.
    if all(map(isinstance, result, repeat(Endpoint))) and len(set(map(_address, result))) == len(result):
        return result
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


# The longest check interval anyone means: a day.
_MAX_CHECK_SECONDS = 86400.0
# HAProxy ``spread-checks``: "randomly add or remove up to X% of the interval", X <= 50.
_MAX_JITTER = 0.5
# What a tcp check sends or expects is a protocol's short greeting, never a payload.
_MAX_CHECK_BYTES = 4096
# A path and a host go into the request as they are: visible ASCII only, so nothing
# in them can end the request line or add a header.
_PATH_RE = re.compile(r"/[\x21-\x7e]{0,2047}")
_HOST_RE = re.compile(r"[A-Za-z0-9._:\[\]-]{1,255}")
_INITIAL_STATES = ("healthy", "unhealthy")


def _check_seconds(field_name: str, value: object) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 < value <= _MAX_CHECK_SECONDS:  # type: ignore[arg-type]
        raise ConfigError(field_name, value, f"must be a number of seconds > 0 and <= {_MAX_CHECK_SECONDS:g}")
    return float(value)  # type: ignore[arg-type]


def _check_bytes(field_name: str, value: object) -> bytes:
    """Bytes as given, or a string's UTF-8 bytes (what a YAML or JSON file holds)."""
    data = value
    if isinstance(value, str):
        try:
            data = value.encode()
        except UnicodeEncodeError:
            raise ConfigError(field_name, value, "is not valid text (a lone surrogate)") from None
    if not isinstance(data, bytes) or not 1 <= len(data) <= _MAX_CHECK_BYTES:
        raise ConfigError(field_name, value, f"must be a string or bytes of 1..{_MAX_CHECK_BYTES} bytes")
    return data


def _check_statuses(value: object) -> tuple[int, int]:
    """``(low, high)`` from ``"200-399"``, ``"204"``, ``204`` or ``[200, 399]``."""
    parts: object = value
    if isinstance(value, str):
        parts = value.split("-")
        if all(part.strip().isdigit() for part in parts):
            parts = [int(part) for part in parts]
    elif type(value) is int:
        parts = [value]
    if isinstance(parts, (list, tuple)) and len(parts) == 1:
        parts = [parts[0], parts[0]]
    if (
        not isinstance(parts, (list, tuple)) or len(parts) != 2
        or not all(type(code) is int and 100 <= code <= 599 for code in parts)
        or parts[0] > parts[1]
    ):
        raise ConfigError("statuses", value, "must be an HTTP status or a range of them: '200-399', 204, [200, 399] (100..599)")
    return (parts[0], parts[1])


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How the endpoints of a Service are checked actively (`lbcore.health` runs it).

    ``type`` ``tcp`` passes when the endpoint accepts a connection, and with ``send``
    and/or ``expect`` when, after ``send`` went out, the bytes ``expect`` come back
    (keepalived's TCP_CHECK, HAProxy's tcp-check); ``http`` sends ``GET path`` with a
    ``Host`` header (default: the checked ip:port) and passes on a status in
    ``statuses`` (``low..high``, default 200..399, as HAProxy's ``http-check``).  A
    check that takes longer than ``timeout`` fails.  Each endpoint is checked every
    ``interval`` seconds, give or take ``jitter`` (a fraction of the interval, at most
    0.5); ``fall`` failures in a row take it out, ``rise`` passes in a row bring it back
    (HAProxy's defaults: ``inter 2s rise 2 fall 3``).  ``port`` sends the checks to
    another port of the endpoint's address.  ``initial`` is how an endpoint the checker
    has not seen before starts: ``healthy`` (it takes connections until ``fall`` checks
    fail) or ``unhealthy`` (it takes none until ``rise`` checks pass).

    Strings given for ``send`` and ``expect`` are taken as UTF-8 bytes.

    >>> HealthCheck("http", path="/healthz").statuses
    (200, 399)
    >>> HealthCheck(send="PING\\r\\n", expect="+PONG").send
    b'PING\\r\\n'
    >>> HealthCheck(timeout=3)
    Traceback (most recent call last):
    ...
    lbcore.errors.ConfigError: timeout: 3 is longer than the interval (2s); a check must end before the next is due
    """

    type: str = "tcp"
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    jitter: float = 0.0
    port: int | None = None
    path: str | None = None
    host: str | None = None
    statuses: tuple[int, int] | None = None
    send: bytes | None = None
    expect: bytes | None = None
    initial: str = "healthy"

    def __post_init__(self) -> None:
        if self.type not in HEALTH_CHECK_TYPES:
            raise ConfigError("type", self.type, f"is not one of {', '.join(HEALTH_CHECK_TYPES)}")
        interval = _check_seconds("interval", self.interval)
        timeout = _check_seconds("timeout", self.timeout)
        if timeout > interval:
            # HAProxy bounds a check by its interval too: one check of an endpoint at a time.
            raise ConfigError(
                "timeout", self.timeout,
                f"is longer than the interval ({interval:g}s); a check must end before the next is due",
            )
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "timeout", timeout)
        check_int("rise", self.rise, 1, 2**31 - 1)
        check_int("fall", self.fall, 1, 2**31 - 1)
        jitter = self.jitter
        if type(jitter) not in (int, float) or not 0 <= jitter <= _MAX_JITTER:
            raise ConfigError("jitter", jitter, f"must be a fraction of the interval in 0..{_MAX_JITTER:g}")
        object.__setattr__(self, "jitter", float(jitter))
        if self.port is not None:
            check_int("port", self.port, 1, 65535)
        other = "tcp" if self.type == "http" else "http"
        for name in ("send", "expect") if self.type == "http" else ("path", "host", "statuses"):
            if getattr(self, name) is not None:
                raise ConfigError(name, getattr(self, name), f"applies to type {other}, not {self.type}")
        if self.type == "http":
            path = "/" if self.path is None else self.path
            if not isinstance(path, str) or not _PATH_RE.fullmatch(path):
                raise ConfigError("path", path, "must start with '/' and hold 1..2048 visible ASCII characters")
            if self.host is not None and not (isinstance(self.host, str) and _HOST_RE.fullmatch(self.host)):
                raise ConfigError("host", self.host, "must be a host name or address, optionally with :port")
            object.__setattr__(self, "path", path)
            object.__setattr__(self, "statuses", (200, 399) if self.statuses is None else _check_statuses(self.statuses))
        else:
            for name in ("send", "expect"):
                if getattr(self, name) is not None:
                    object.__setattr__(self, name, _check_bytes(name, getattr(self, name)))
        if self.initial not in _INITIAL_STATES:
            raise ConfigError("initial", self.initial, f"is not one of {', '.join(_INITIAL_STATES)}")


@dataclass(frozen=True, slots=True)
class Service:
    """One balanced (vip, port, protocol), like one IPVS virtual service.

    ``scheduler`` is an ipvsadm scheduler name; ``affinity_timeout`` (seconds,
    1..86400) turns on ClientIP stickiness; ``listen`` is where the userspace forwarder
    binds (default ``vip:port``; port 0 picks a free port); ``sched_flags`` are ipvsadm
    ``-b`` flags; ``max_connections`` caps the forwarder's concurrent connections;
    ``health_check`` (a `HealthCheck`) says how to check the endpoints actively;
    ``balance_factor`` bounds the load of a consistent hash (``mh``, ``ring``: see
    `check_balance_factor`); ``slow_start`` (seconds) ramps a new or recovered endpoint
    up on ``wrr``, ``lc``, ``wlc`` and ``p2c`` (see `check_slow_start`);
    ``panic_threshold`` (percent) makes picks ignore failure marks while fewer
    endpoints than that are healthy (see `check_panic_threshold`).

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
    health_check: HealthCheck | None = None
    balance_factor: float | None = None
    slow_start: float | None = None
    panic_threshold: float | None = None

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
        if self.balance_factor is not None:
            check_balance_factor(self.balance_factor)
            if self.scheduler not in BOUNDED_SCHEDULERS:
                raise ConfigError(
                    "balance_factor", self.balance_factor,
                    f"does not apply to scheduler {self.scheduler!r}; bounded loads are for "
                    f"{' and '.join(BOUNDED_SCHEDULERS)}",
                )
        if self.slow_start is not None:
            check_slow_start(self.slow_start)
            if self.slow_start and self.scheduler not in SLOW_START_SCHEDULERS:
                raise ConfigError(
                    "slow_start", self.slow_start,
                    f"does not apply to scheduler {self.scheduler!r}; slow start ramps "
                    f"{', '.join(SLOW_START_SCHEDULERS)}",
                )
        check_panic_threshold(self.panic_threshold)
        object.__setattr__(self, "listen", _check_listen(self.listen))
        object.__setattr__(self, "sched_flags", self._checked_flags())
        if self.max_connections is not None:
            check_int("max_connections", self.max_connections, 1, 2**31 - 1)
        if self.health_check is not None and not isinstance(self.health_check, HealthCheck):
            raise ConfigError(
                "health_check", self.health_check,
                "must be a HealthCheck (a file gives a mapping of its fields)",
            )

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
