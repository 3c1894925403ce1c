"""IPVS: Service models as ``ipvsadm`` commands, and the node setup around them.

Three payloads, all plain text, none carrying a service name (names never reach the
kernel, so they cannot inject anything; addresses were validated by the models):

``render(services)``
    The whole table, one ``-A`` line per virtual service and one ``-a`` line per real
    server, exactly as ``ipvsadm -S -n`` prints it back (see "Order" below).  For an
    *empty* table: ``ipvsadm-restore < payload`` (Debian's script runs ``ipvsadm -C``
    first, so it also replaces a populated table, dropping every service for a moment)
    or ``ipvsadm -R < payload``.

``render_diff(old_services, new_services)``
    Only the ``-A/-E/-D/-a/-e/-d`` lines that turn the table of ``render(old)`` into the
    table of ``render(new)`` (kube-proxy's partial sync).  Apply with ``ipvsadm -R <
    payload``, never with ``ipvsadm-restore``: that script clears the table first.

``render_node_setup(services, interface=...)``
    A POSIX shell script that puts every VIP on a dummy interface (kube-proxy's
    ``kube-ipvs0``), so the node accepts the VIPs' packets locally and IPVS sees them.
    Apply with ``sh -eu < payload``; see its docstring.

``ipvsadm -R`` reads one command per line and goes on after a line the kernel refuses
(it prints the error on stderr); its exit status is that of the *last* line only.  So
treat any stderr output as a failed apply, and read the table back with
``ipvsadm -S -n``: after a clean apply it equals ``render(new)``.

Which real servers a service gets (kube-proxy's graceful termination)
    - usable endpoints (ready ones; if none is ready, the serving-and-terminating ones:
      kube-proxy's fallback) with their weight (0 stays 0: quiesced);
    - terminating endpoints that are not usable, with weight 0: they are being drained,
      so they take no new connections and keep the ones they have;
    - not-ready endpoints that are not terminating are left out, as kube-proxy leaves
      them out: they have no connections worth keeping, and a weight-0 real server would
      still own buckets in the ``sh``/``dh`` tables (``ip_vs_sh_reassign`` gives every
      destination at least one) whose clients would then find no destination.

    A draining real server keeps its buckets in the ``sh``, ``dh`` and ``mh`` tables, so
    with ``sh``/``mh`` and no ``-fallback`` flag (and always with ``dh``) the clients that
    hash to it find no destination until it is deleted: IPVS's rule, which kube-proxy
    meets with ``mh`` (kubernetes issue #139497).  ``sh-fallback``/``mh-fallback`` send
    them to the next real server instead.

    "Weight 0 now, delete later" is sequenced by the models, as Kubernetes does it: when
    an endpoint turns terminating, the diff says ``-e ... -w 0``; when it leaves the
    endpoint list (the pod is gone, or the caller saw ``ActiveConn`` and ``InActConn``
    reach 0 in ``ipvsadm -Ln``, as kube-proxy checks each minute), the diff says ``-d``.
    An endpoint dropped from the list without a terminating phase is deleted at once.

Order
    ``ipvsadm -S`` sorts services by address family (IPv4 first), protocol number
    (TCP 6, UDP 17, SCTP 132), address, port, and real servers by address, port; lbcore
    renders in that order, comparing addresses as numbers.  ipvsadm compares addresses
    by subtracting them as unsigned 32-bit words into an ``int`` (libipvs
    ``ipvs_cmp_services``/``ipvs_cmp_dests``), which is only a true order while the
    compared words differ by less than 2**31: it prints ``192.168.0.1`` before
    ``10.0.0.1``, and its order among three addresses spread wider than that depends on
    the kernel's hash order.  Only for such sets does the read-back differ from the
    rendering, by line order alone.

Forwarder-only fields (``listen``, ``max_connections``) have no IPVS meaning and are not
rendered; everything else in a Service maps one to one, except what IPVS has no
scheduler for: ``p2c``, ``ring``, a ``balance_factor`` and a ``slow_start`` (the kernel
cannot ramp an endpoint up) raise `ConfigError` unless ``fallback=True``, which renders
them as `FALLBACK` says and drops slow start.  A ``panic_threshold`` needs no kernel
support: lbcore.health.kernel applies it when it turns health into weights.
"""

from __future__ import annotations

import operator
import re
import socket
from typing import Iterable

from ..errors import ConfigError
from ..models import SCHED_FLAGS, Service

__all__ = ["DEFAULT_INTERFACE", "FALLBACK", "render", "render_diff", "render_node_setup"]

#: lbcore's own dummy interface for the VIPs (kube-proxy's is ``kube-ipvs0``).
DEFAULT_INTERFACE = "lbcore-ipvs0"
#: ``fallback=True``: (scheduler, ``-b`` flags) for what IPVS has no scheduler for.
#: ``p2c`` becomes ``wlc``, the least-loaded rule that p2c samples (with choice_count
#: at the endpoint count it is that rule; IPVS ``twos`` would be closer but needs Linux
#: 6.2, newer than Debian 12's kernel); ``ring`` becomes IPVS's consistent hash, ``mh``,
#: with ``mh-fallback``, as the ring sends the keys of an unusable endpoint on to the
#: next.  Keys move (IPVS hashes otherwise), and ``balance_factor`` is dropped: IPVS
#: ``mh`` has no bounded loads.
FALLBACK = {"p2c": ("wlc", ()), "ring": ("mh", ("mh-fallback",))}

# ipvsadm's virtual-service switch, and the IP protocol number its listing sorts by.
_SWITCH = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
_PROTOCOL_NUMBER = {"tcp": 6, "udp": 17, "sctp": 132}

# Linux interface names: at most 15 bytes (IFNAMSIZ 16).  The alphabet is narrower than
# the kernel's on purpose: the name is written into a shell script.
_INTERFACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")

_ServiceKey = tuple[int, int, bytes, int]  # (family, protocol number, packed vip, port)
_RealServer = tuple[bytes, int, str, int]  # (packed ip, port, "ip:port", weight)

_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
# What makes a virtual service, as IPVS keys it.  The models hold canonical address
# text, so equal addresses are equal strings.
_IDENTITY = operator.attrgetter("protocol", "vip", "port")
_KEY = operator.attrgetter("key")


def _address(family: int, ip: str, packed: bytes, port: int) -> str:
    # ipvsadm prints addresses with inet_ntop, which writes some IPv6 forms differently
    # from Python (``::ffff:10.1.2.3``, not ``::ffff:a01:203``); IPv4 text is the same.
    if family == 6:
        return f"[{socket.inet_ntop(socket.AF_INET6, packed)}]:{port}"
    return f"{ip}:{port}"


def _refuse_inexpressible(services: Iterable[Service]) -> None:
    """Raise `ConfigError` for the first Service IPVS cannot express (without fallback)."""
    for service in services:
        if service.scheduler in FALLBACK:
            scheduler, flags = FALLBACK[service.scheduler]
            bound = "" if service.balance_factor is None else " without the bound"
            raise ConfigError(
                "scheduler", service.scheduler,
                f"of service {service.name!r} has no IPVS scheduler; use one of IPVS's, or "
                f"fallback=True to render it as {' -b '.join((scheduler, *flags))}{bound}",
            )
        if service.balance_factor is not None:
            raise ConfigError(
                "balance_factor", service.balance_factor,
                f"of service {service.name!r} cannot be expressed in IPVS ({service.scheduler} "
                "has no bounded loads there); drop it, or fallback=True to render the "
                "scheduler without the bound",
            )
        if service.slow_start:
            raise ConfigError(
                "slow_start", service.slow_start,
                f"of service {service.name!r} cannot be expressed in IPVS (the kernel cannot "
                "ramp an endpoint up); drop it, or fallback=True to render the scheduler "
                "without slow start",
            )


class _Virtual:
    """One service as IPVS holds it: its identity, its options and its real servers."""

    __slots__ = ("key", "spec", "options", "service")

    def __init__(self, service: Service):
        family = service.family
        packed = socket.inet_pton(_AF[family], service.vip)
        # ipvsadm's listing order: family, protocol number, address, port (network-order
        # bytes compare as the numbers do)
        self.key: _ServiceKey = (family, _PROTOCOL_NUMBER[service.protocol], packed, service.port)
        address = _address(family, service.vip, packed, service.port)
        self.spec = f"{_SWITCH[service.protocol]} {address}"
        # Refused earlier unless fallback was asked for (_refuse_inexpressible).
        scheduler, sched_flags = FALLBACK.get(service.scheduler, (service.scheduler, service.sched_flags))
        options = f"-s {scheduler}"
        if service.affinity_timeout is not None:
            options += f" -p {service.affinity_timeout}"
        if sched_flags:
            # ipvsadm prints the flags in bit order (sh/mh-fallback is IP_VS_SVC_F_SCHED1,
            # -port SCHED2), which is the order of SCHED_FLAGS.
            flags = [flag for flag in SCHED_FLAGS if flag in sched_flags]
            options += " -b " + ",".join(flags)
        self.options = options
        self.service = service

    def real_servers(self) -> list[_RealServer]:
        """``(packed ip, port, "ip:port", weight)`` per real server, in ipvsadm's order.

        O(n log n) in the endpoints.
        """
        family = self.key[0]
        af = _AF[family]
        usable = {id(e) for e in self.service.usable_endpoints}  # a subset of the same objects
        servers = []
        for endpoint in self.service.endpoints:
            if id(endpoint) in usable:
                weight = endpoint.weight
            elif endpoint.terminating:
                weight = 0  # draining: no new connections, existing ones stay
            else:
                continue
            ip, port = endpoint.ip, endpoint.port
            packed = socket.inet_pton(af, ip)
            servers.append((packed, port, _address(family, ip, packed, port), weight))
        servers.sort()
        return servers

    def lines(self) -> list[str]:
        """The ``-A`` line and the ``-a`` lines that create this service."""
        spec = self.spec
        lines = [f"-A {spec} {self.options}"]
        for _, _, address, weight in self.real_servers():
            lines.append(f"-a {spec} -r {address} -m -w {weight}")
        return lines


def _index(services: Iterable[Service], field: str) -> dict[tuple[str, str, int], Service]:
    """Services by (protocol, vip, port), refusing what IPVS cannot hold twice; O(n)."""
    if isinstance(services, (str, bytes)) or not isinstance(services, Iterable):
        raise ConfigError(field, services, "must be a list of Service objects")
    services = tuple(services)
    for i, service in enumerate(services):
        if not isinstance(service, Service):
            raise ConfigError(f"{field}[{i}]", service, "is not a Service")
    index = dict(zip(map(_IDENTITY, services), services))
    if len(index) < len(services):  # the slow path only names the two entries
        first: dict[tuple[str, str, int], int] = {}
        for i, identity in enumerate(map(_IDENTITY, services)):
            j = first.setdefault(identity, i)
            if j != i:
                raise ConfigError(
                    f"{field}[{i}]", f"{services[i].protocol} {services[i].address}",
                    f"is also {field}[{j}] ({services[j].name!r}); IPVS holds one virtual "
                    "service per protocol, address and port",
                )
    return index


def render(services: Iterable[Service], *, fallback: bool = False) -> str:
    """The IPVS table for ``services``, as ``ipvsadm -S -n`` prints it; O(n log n).

    ``-A`` per service with ``-s`` scheduler, ``-p`` affinity timeout and ``-b`` flags;
    ``-a ... -m -w W`` per real server (masquerading, as kube-proxy).  Feed it to
    ``ipvsadm -R`` or ``ipvsadm-restore`` on an empty table (module docstring).
    ``p2c``, ``ring``, ``balance_factor`` and ``slow_start`` raise `ConfigError` unless
    ``fallback`` (`FALLBACK`; slow start is dropped).

    >>> from lbcore import Endpoint, Service
    >>> web = Service("default/web:http", "10.96.0.10", 80, scheduler="wrr",
    ...               affinity_timeout=10800,
    ...               endpoints=[Endpoint("10.244.0.6", 8080, weight=3),
    ...                          Endpoint("10.244.0.5", 8080),
    ...                          Endpoint("10.244.0.7", 8080, ready=False, terminating=True)])
    >>> print(render([web]), end="")
    -A -t 10.96.0.10:80 -s wrr -p 10800
    -a -t 10.96.0.10:80 -r 10.244.0.5:8080 -m -w 1
    -a -t 10.96.0.10:80 -r 10.244.0.6:8080 -m -w 3
    -a -t 10.96.0.10:80 -r 10.244.0.7:8080 -m -w 0
    """
    index = _index(services, "services")
    if not fallback:
        _refuse_inexpressible(index.values())
    virtuals = sorted(map(_Virtual, index.values()), key=_KEY)
    lines = []
    for virtual in virtuals:
        lines.extend(virtual.lines())
    return "".join(line + "\n" for line in lines)


def render_diff(
    old_services: Iterable[Service], new_services: Iterable[Service], *, fallback: bool = False
) -> str:
    """The ``ipvsadm -R`` lines that turn ``render(old)`` into ``render(new)``.

    ``fallback`` as in `render`; the new services are refused as `render` would refuse
    them, whether they changed or not.

    A service that went away: ``-D`` (which also drops its real servers).  A new one:
    ``-A`` and its ``-a`` lines.  A changed one: ``-E`` with all its options if the
    scheduler, persistence or flags changed (``-E`` resets what it does not repeat),
    then ``-a`` for new real servers, ``-e`` for new weights (0 for one that started
    draining), ``-d`` for real servers that went away: new capacity is in place before
    any is taken away.  Services in ipvsadm's order, unchanged ones skipped.

    O(n) to find the changed services (identical objects are skipped without comparing
    them, so a sync loop that keeps its unchanged models pays little for them; equal
    but distinct ones are compared field by field), O(m log m) to render the m changed
    ones.

    >>> from lbcore import Endpoint, Service
    >>> a, b = Endpoint("10.244.0.5", 8080), Endpoint("10.244.0.6", 8080)
    >>> old = [Service("default/web", "10.96.0.10", 80, endpoints=[a, b])]
    >>> b_draining = Endpoint("10.244.0.6", 8080, ready=False, terminating=True)
    >>> new = [Service("default/web", "10.96.0.10", 80, scheduler="lc",
    ...                endpoints=[a, b_draining])]
    >>> print(render_diff(old, new), end="")
    -E -t 10.96.0.10:80 -s lc
    -e -t 10.96.0.10:80 -r 10.244.0.6:8080 -m -w 0
    >>> print(render_diff(new, new[:0]), end="")
    -D -t 10.96.0.10:80
    """
    old = _index(old_services, "old_services")
    new = _index(new_services, "new_services")
    if not fallback:
        _refuse_inexpressible(new.values())
    changed: list[tuple[_Virtual | None, _Virtual | None]] = []
    for identity, after in new.items():
        before = old.get(identity)
        if before is not after and before != after:
            changed.append((None if before is None else _Virtual(before), _Virtual(after)))
    for identity, before in old.items():
        if identity not in new:
            changed.append((_Virtual(before), None))
    changed.sort(key=lambda pair: (pair[1] or pair[0]).key)
    lines: list[str] = []
    for before, after in changed:
        if after is None:
            lines.append(f"-D {before.spec}")
        elif before is None:
            lines.extend(after.lines())
        else:
            lines.extend(_changes(before, after))
    return "".join(line + "\n" for line in lines)


def _changes(before: _Virtual, after: _Virtual) -> list[str]:
    """The lines that turn one version of a virtual service into the other."""
    spec = after.spec
    lines = []
    if before.options != after.options:
        lines.append(f"-E {spec} {after.options}")
    old = before.real_servers()
    new = after.real_servers()
    old_weights = {(packed, port): weight for packed, port, _, weight in old}
    new_keys = {(packed, port) for packed, port, _, _ in new}
    for packed, port, address, weight in new:
        if (packed, port) not in old_weights:
            lines.append(f"-a {spec} -r {address} -m -w {weight}")
    for packed, port, address, weight in new:
        if old_weights.get((packed, port), weight) != weight:
            lines.append(f"-e {spec} -r {address} -m -w {weight}")
    for packed, port, address, _ in old:
        if (packed, port) not in new_keys:
            lines.append(f"-d {spec} -r {address}")
    return lines


def render_node_setup(services: Iterable[Service], *, interface: str = DEFAULT_INTERFACE) -> str:
    """A shell script that puts exactly the services' VIPs on a dummy interface; O(n log n).

    Apply with ``sh -eu < payload`` (POSIX sh, iproute2's ``ip``, ``awk``).  It creates
    ``interface`` as a dummy link if it is missing and sets it up, gives it every VIP
    (``/32`` or ``/128``, each once), and deletes the global addresses on it that are no
    longer listed (VIPs of services that went away).  Applying it again changes nothing.

    Why a script and not bare ``ip -batch`` input: ``ip link add`` fails when the link
    exists and ``ip link replace`` answers "Operation not supported" for an existing
    dummy (tried on Linux 6.1), ``ip -batch`` stops at the first error, and removing
    stale VIPs needs the list of what is there.  The script keeps the batch for the
    addresses: one ``ip`` process for 10,000 VIPs.  Only canonical addresses and the
    validated interface name are written into it.

    >>> from lbcore import Service
    >>> script = render_node_setup([Service("dns", "10.96.0.10", 53, protocol="udp"),
    ...                             Service("dns-tcp", "10.96.0.10", 53),
    ...                             Service("api", "fd00::1", 443)])
    >>> script.split("<<'VIPS'")[1].split("VIPS")[0].split()  # the VIPs, once each
    ['10.96.0.10/32', 'fd00::1/128']
    >>> "dev=lbcore-ipvs0" in script
    True
    """
    if not isinstance(interface, str) or not _INTERFACE_RE.fullmatch(interface):
        raise ConfigError(
            "interface", interface,
            "is not a usable interface name; use 1..15 of A-Z a-z 0-9 _ . - "
            "starting with a letter or digit",
        )
    vips = set()
    for service in _index(services, "services").values():
        family = service.family
        vips.add((family, socket.inet_pton(_AF[family], service.vip)))
    listed = "".join(
        f"{socket.inet_ntop(_AF[family], packed)}/{32 if family == 4 else 128}\n"
        for family, packed in sorted(vips)
    )
    return _NODE_SETUP.format(interface=interface, listed=listed)


# The VIP list is written once, in a quoted here-document (no expansion).  awk reads it,
# then what `ip` reports on the interface, and writes `address replace` for every VIP and
# `address delete` for every global address not listed into one `ip -batch`.  awk runs
# that `ip` itself and exits non-zero when it fails: POSIX sh has no pipefail, so a
# pipeline into `ip` would hide a failing awk behind ip's success on empty input.
_NODE_SETUP = """\
# lbcore IPVS node setup: the VIPs as addresses on the dummy interface {interface}.
# Apply with `sh -eu`; applying it again changes nothing.  Global addresses on
# {interface} that are not listed here are deleted.
dev={interface}
ip link show dev "$dev" >/dev/null 2>&1 || ip link add "$dev" type dummy
ip link set dev "$dev" up
{{
cat <<'VIPS'
{listed}VIPS
echo end
ip -o address show dev "$dev" scope global
}} | awk -v dev="$dev" '
BEGIN {{ ip = "ip -batch -" }}
$1 == "end" {{ listed = 1; next }}
!listed {{ vip[$1] = 1; print "address replace " $1 " dev " dev | ip; sent = 1; next }}
!($4 in vip) {{ print "address delete " $4 " dev " dev | ip; sent = 1 }}
END {{ if (sent && close(ip) != 0) exit 1 }}
'
"""
