"""Kubernetes ``v1 Service`` + ``discovery.k8s.io/v1 EndpointSlice`` objects as Services.

What ``kubectl get svc,endpointslices -A -o yaml`` (or ``-o json``) prints, a multi-
document manifest, or the items of any ``List``, mapped the way kube-proxy maps them
(``pkg/proxy/servicechangetracker.go``, ``endpointslicecache.go``):

- One lbcore Service per service port and IP family, named like kube-proxy's
  ``ServicePortName.String()``: ``namespace/name:port`` (``namespace/name`` for an
  unnamed port).  A dual-stack Service gives one per family: the first family of
  ``spec.clusterIPs`` keeps that name, the second gets ``.ipv4``/``.ipv6`` appended
  (names must be unique, and Kubernetes names never contain a dot).
- Endpoints come from the slices labelled ``kubernetes.io/service-name=<name>`` in the
  same namespace whose ``addressType`` is the family's, from the slice port with the
  same *name* and protocol (the target port is the slice port's number).  Only an
  endpoint's first address is used ("no semantics are defined for additional
  addresses beyond the first, and kube-proxy does not look at them" — EndpointSlice API).
  An ip:port in several slices counts once, the first in slice-name order (kube-proxy
  keeps the first it meets, in map order).  Endpoints are sorted by ``ip:port`` text as
  kube-proxy sorts them (``byEndpoint``), so rule order is stable.
- Conditions as kube-proxy reads them: ``ready`` absent means ready (the API: "in most
  cases consumers should interpret this unknown state as ready"), ``serving`` absent
  means serving, ``terminating`` absent means not terminating.
- ``sessionAffinity: ClientIP`` gives ``affinity_timeout`` from
  ``sessionAffinityConfig.clientIP.timeoutSeconds`` (default 10800).
- The ``lbcore.io/scheduler`` annotation picks the scheduler (default ``rr``, as
  kube-proxy's IPVS mode); ``lbcore.io/balance-factor`` (a decimal string such as
  ``"1.25"``) bounds the loads of ``mh`` and ``ring``; ``lbcore.io/slow-start`` (seconds,
  ``"30"``) ramps new endpoints up on ``wrr``, ``lc``, ``wlc`` and ``p2c``;
  ``lbcore.io/panic-threshold`` (percent, ``"50"``) sets the panic threshold;
  ``lbcore.io/health-check`` holds a
  ``health_check`` block of lbcore's format as JSON (``{"type": "http", "path":
  "/healthz"}``), for every port of the Service; any other ``lbcore.io/`` annotation is
  an error, so a typo cannot go unnoticed.
- Skipped on purpose, each with a note (never silently), as kube-proxy skips them:
  headless Services (``clusterIP: None``), ``type: ExternalName``, Services labelled
  ``service.kubernetes.io/service-proxy-name`` (another proxy owns them), FQDN slices.
  Services without a selector are ordinary: their endpoints come from slices someone
  manages by hand (or the mirroring controller), found by the same label.
- Out of scope, with a note: node ports, external IPs and load-balancer IPs (only the
  cluster IP is balanced) and ``internalTrafficPolicy: Local`` (lbcore has no node, so
  every endpoint is used).

Unknown fields are ignored here (a dump carries many: ``managedFields``, ``status``);
the fields that are read are checked for type and value.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple

from ..errors import ConfigError
from ..models import DEFAULT_AFFINITY_TIMEOUT, Endpoint, HealthCheck, Service
from ._build import STAND_IN_IP, build
from ._problems import MISSING, Problems, type_name, unknown_key
from ._unique import Located, check_unique
from .native import health_check_from

__all__ = [
    "SCHEDULER_ANNOTATION",
    "BALANCE_FACTOR_ANNOTATION",
    "HEALTH_CHECK_ANNOTATION",
    "SERVICE_NAME_LABEL",
    "PROXY_NAME_LABEL",
    "is_kubernetes",
    "services_from",
    "load",
]

#: The annotation that picks a Service's scheduler (an ipvsadm name; default ``rr``).
SCHEDULER_ANNOTATION = "lbcore.io/scheduler"
#: The annotation that bounds the loads of ``mh`` and ``ring`` (`Service.balance_factor`).
BALANCE_FACTOR_ANNOTATION = "lbcore.io/balance-factor"
#: The annotation that holds a Service's health check: lbcore's ``health_check`` block as JSON.
HEALTH_CHECK_ANNOTATION = "lbcore.io/health-check"
#: The annotation that ramps new endpoints up, in seconds (`Service.slow_start`).
SLOW_START_ANNOTATION = "lbcore.io/slow-start"
#: The annotation that sets the panic threshold, in percent (`Service.panic_threshold`).
PANIC_THRESHOLD_ANNOTATION = "lbcore.io/panic-threshold"
_ANNOTATION_PREFIX = "lbcore.io/"
_ANNOTATIONS = (SCHEDULER_ANNOTATION, BALANCE_FACTOR_ANNOTATION, HEALTH_CHECK_ANNOTATION,
                SLOW_START_ANNOTATION, PANIC_THRESHOLD_ANNOTATION)
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
#: discovery.k8s.io/v1 ``LabelServiceName``: joins a slice to its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: A Service with this label belongs to another proxy; kube-proxy's informers skip it.
PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"

_LIST_KINDS = ("List", "ServiceList", "EndpointSliceList")
_API_VERSIONS = {"Service": "v1", "EndpointSlice": "discovery.k8s.io/v1"}
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_FAMILIES = {"IPv4": 4, "IPv6": 6}
_TIMEOUT_PATH = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
_SCHEDULER_PATH = f"metadata.annotations[{SCHEDULER_ANNOTATION}]"
_BALANCE_FACTOR_PATH = f"metadata.annotations[{BALANCE_FACTOR_ANNOTATION}]"
_SLOW_START_PATH = f"metadata.annotations[{SLOW_START_ANNOTATION}]"
_PANIC_THRESHOLD_PATH = f"metadata.annotations[{PANIC_THRESHOLD_ANNOTATION}]"


class _Reader:
    """Typed reads of one object's fields; each problem is reported at the object.

    A field that is absent or ``null`` reads as its default (Kubernetes omits empty
    fields, and ``kubectl`` prints some as ``null``).
    """

    def __init__(self, problems: Problems, where: str):
        self.problems = problems
        self.where = where
        self.failed = False

    def report(self, path: str, value: object, reason: str) -> None:
        self.problems.report(self.where, path, value, reason)
        self.failed = True

    def get(self, mapping: dict, key: str, path: str, expected: type, *,
            required: bool = False, default: Any = None) -> Any:
        value = mapping.get(key)
        if value is None:
            if required:
                self.report(path, MISSING, "is required")
            return default
        if type(value) is not expected:  # `type is`: YAML's true is no port number
            self.report(path, value, f"must be {type_name(expected)}")
            return default
        return value

    def ip(self, value: object, path: str, family: int | None = None) -> str | None:
        """The canonical text of an IP address of ``family`` (4, 6 or either)."""
        if not isinstance(value, str):
            self.report(path, value, "must be an IP address string")
            return None
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            self.report(path, value, "is not an IPv4 or IPv6 address")
            return None
        if family is not None and address.version != family:
            self.report(path, value, f"is not an IPv{family} address")
            return None
        return str(address)

    def mappings(self, mapping: dict, key: str, path: str, *, required: bool = False) -> Iterator[tuple[str, dict]]:
        """(path, item) of each mapping in the list at ``key``; other items are reported."""
        for i, item in enumerate(self.get(mapping, key, path, list, required=required, default=())):
            if isinstance(item, dict):
                yield f"{path}[{i}]", item
            else:
                self.report(f"{path}[{i}]", item, f"must be {type_name(dict)}")

    def port_key(self, port: dict, path: str) -> tuple[str, str | None]:
        """(name, protocol) of a Service or slice port: what kube-proxy matches them by."""
        name = self.get(port, "name", f"{path}.name", str, default="")
        protocol = self.get(port, "protocol", f"{path}.protocol", str, default="TCP")
        if protocol is not None and protocol not in _PROTOCOLS:
            self.report(f"{path}.protocol", protocol, f"is not one of {', '.join(_PROTOCOLS)}")
            protocol = None
        return name, protocol


class _Object(NamedTuple):
    kind: str
    source: str
    #: ``file: Kind namespace/name``, as problem lines name the object.
    where: str
    namespace: str
    name: str
    body: dict


@dataclass
class _ServiceObject:
    where: str
    namespace: str
    name: str
    #: (family, vip, path of the vip) in clusterIPs order.
    vips: list[tuple[int, str, str]] = field(default_factory=list)
    #: (path, port name, protocol, port number) in spec order.
    ports: list[tuple[str, str, str, object]] = field(default_factory=list)
    scheduler: object = "rr"
    affinity_timeout: int | None = None
    balance_factor: float | None = None
    slow_start: float | None = None
    panic_threshold: float | None = None
    health_check: HealthCheck | None = None
    #: A problem was reported: the model still checks the rest, but nothing maps.
    failed: bool = False


@dataclass
class _Slice:
    where: str
    namespace: str
    name: str
    service: str
    family: int
    #: (port name, protocol) -> endpoints for that port, in slice order.
    ports: dict[tuple[str, str], list[Endpoint]] = field(default_factory=dict)


def is_kubernetes(document: object) -> bool:
    """Whether a parsed document is a Kubernetes object (it has ``kind`` or ``apiVersion``).

    >>> is_kubernetes({"apiVersion": "v1", "kind": "List", "items": []}), is_kubernetes({"services": []})
    (True, False)
    """
    return isinstance(document, dict) and ("kind" in document or "apiVersion" in document)


def _objects(documents: Iterable[tuple[str, object]], problems: Problems) -> list[_Object]:
    """Every Service and EndpointSlice in the documents, the items of Lists included."""
    found: list[_Object] = []
    for source, document in documents:
        _visit(source, source, document, problems, found)
    return found


def _visit(source: str, where: str, body: object, problems: Problems, found: list[_Object]) -> None:
    reader = _Reader(problems, where)
    if not isinstance(body, dict):
        reader.report("object", body, "must be a mapping (a Kubernetes object)")
        return
    kind = reader.get(body, "kind", "kind", str, required=True)
    if kind in _LIST_KINDS:
        for i, item in enumerate(reader.get(body, "items", "items", list, default=[])):
            _visit(source, f"{source}: items[{i}]", item, problems, found)
        return
    if kind is None:
        return
    metadata = reader.get(body, "metadata", "metadata", dict, required=True) or {}
    name = reader.get(metadata, "name", "metadata.name", str, required=True)
    # A manifest may leave the namespace out; kubectl applies it to "default".
    namespace = reader.get(metadata, "namespace", "metadata.namespace", str, default="default")
    if not reader.failed:
        reader.where = f"{source}: {kind} {namespace}/{name}"
        problems.locate(reader.where)
    if kind not in _API_VERSIONS:
        hint = " (read EndpointSlices instead: kubectl get svc,endpointslices -A -o yaml)" if kind == "Endpoints" else ""
        reader.report("kind", kind, f"is not a kind lbcore reads; valid: Service, EndpointSlice, List{hint}")
        return
    version = reader.get(body, "apiVersion", "apiVersion", str, required=True)
    if version is not None and version != _API_VERSIONS[kind]:
        reader.report("apiVersion", version, f"is not supported for {kind}; valid: {_API_VERSIONS[kind]}")
    if not reader.failed:
        found.append(_Object(kind, source, reader.where, namespace, name, body))


def _service_object(obj: _Object, problems: Problems, notes: list[str]) -> _ServiceObject | None:
    """The parts of a Service that map, or None if skipped (with a note) or it has no spec.

    A Service with problems comes back ``failed``: its models are still built, so that
    the model reports the rest of its bad fields, but none is used.
    """
    where = obj.where
    reader = _Reader(problems, where)
    service = _ServiceObject(where, obj.namespace, obj.name)
    metadata = obj.body["metadata"]
    labels = reader.get(metadata, "labels", "metadata.labels", dict, default={})
    annotations = reader.get(metadata, "annotations", "metadata.annotations", dict, default={})
    spec = reader.get(obj.body, "spec", "spec", dict, required=True)
    if spec is None:
        return None
    kind = reader.get(spec, "type", "spec.type", str, default="ClusterIP")
    if kind == "ExternalName":
        notes.append(f"{where}: skipped: type ExternalName is a DNS alias, nothing to balance (kube-proxy skips it too)")
        return None
    if PROXY_NAME_LABEL in labels:
        notes.append(f"{where}: skipped: label {PROXY_NAME_LABEL} gives it to another proxy (kube-proxy skips it too)")
        return None
    if kind not in _SERVICE_TYPES and kind is not None:
        reader.report("spec.type", kind, f"is not one of {', '.join(_SERVICE_TYPES)}")
    cluster_ip = reader.get(spec, "clusterIP", "spec.clusterIP", str, required=True)
    if cluster_ip == "None":
        notes.append(f"{where}: skipped: headless (clusterIP: None), clients resolve the endpoints by DNS (kube-proxy skips it too)")
        return None
    if cluster_ip == "":
        reader.report("spec.clusterIP", cluster_ip, "is empty; lbcore balances the cluster IP, which the API server assigns")
    _read_vips(spec, cluster_ip, reader, service)
    _read_ports(spec, reader, service)
    _read_annotations(annotations, reader, service)
    _read_affinity(spec, reader, service)
    service.failed = reader.failed
    out_of_scope = [name for name, present in (
        ("node ports", kind in ("NodePort", "LoadBalancer")),
        ("external IPs", bool(spec.get("externalIPs"))),
        ("load-balancer IPs", kind == "LoadBalancer"),
    ) if present]
    if out_of_scope:
        notes.append(f"{where}: only the cluster IP is balanced; its {' and '.join(out_of_scope)} are out of lbcore's scope")
    if spec.get("internalTrafficPolicy") == "Local":
        notes.append(f"{where}: internalTrafficPolicy Local is not applied: lbcore has no node, every endpoint is used")
    return service


def _read_vips(spec: dict, cluster_ip: object, reader: _Reader, service: _ServiceObject) -> None:
    """spec.clusterIPs paired with spec.ipFamilies, as kube-proxy's GetClusterIPByFamily."""
    default = [cluster_ip] if cluster_ip else []
    cluster_ips = reader.get(spec, "clusterIPs", "spec.clusterIPs", list, default=default)
    families = reader.get(spec, "ipFamilies", "spec.ipFamilies", list, default=None)
    if cluster_ips and cluster_ip and cluster_ips[0] != cluster_ip:
        reader.report("spec.clusterIPs[0]", cluster_ips[0], f"differs from spec.clusterIP {cluster_ip!r}; they must be equal")
    if families is not None and len(families) != len(cluster_ips):
        reader.report("spec.ipFamilies", families, f"must name one family per spec.clusterIPs entry ({len(cluster_ips)})")
        families = None
    for i, value in enumerate(cluster_ips):
        path = f"spec.clusterIPs[{i}]"
        family = None
        if families is not None:
            family = _FAMILIES.get(families[i])
            if family is None:
                reader.report(f"spec.ipFamilies[{i}]", families[i], f"is not one of {', '.join(_FAMILIES)}")
                continue
        vip = reader.ip(value, path, family)
        if vip is None:
            continue
        family = 6 if ":" in vip else 4
        if any(f == family for f, _, _ in service.vips):
            reader.report(path, value, f"is a second IPv{family} cluster IP; a Service has one per family")
            continue
        service.vips.append((family, vip, path))


def _read_ports(spec: dict, reader: _Reader, service: _ServiceObject) -> None:
    if spec.get("ports") == []:
        reader.report("spec.ports", [], "must list at least one port")
    seen: dict[str, str] = {}
    for path, port in reader.mappings(spec, "ports", "spec.ports", required=True):
        name, protocol = reader.port_key(port, path)
        number = reader.get(port, "port", f"{path}.port", int, required=True)
        if name in seen:
            reader.report(f"{path}.name", name, f"is already the name of {seen[name]}; each port needs its own")
        seen.setdefault(name, path)
        if protocol is not None and number is not None:
            service.ports.append((path, name, protocol, number))


def _decimal(annotations: dict, key: str, path: str, example: str, reader: _Reader) -> float | int | None:
    """The number an annotation holds as a decimal string; the model checks its range."""
    value = annotations.get(key)
    if value is None:
        return None
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return float(value) if "." in value else int(value)
    reader.report(path, value, f"must be a decimal number in a string, e.g. {example}")
    return None


def _read_annotations(annotations: dict, reader: _Reader, service: _ServiceObject) -> None:
    for key, value in annotations.items():
        if isinstance(key, str) and key.startswith(_ANNOTATION_PREFIX) and key not in _ANNOTATIONS:
            reader.report(f"metadata.annotations[{key}]", value,
                          unknown_key(key, _ANNOTATIONS, "is not an lbcore annotation"))
    service.scheduler = annotations.get(SCHEDULER_ANNOTATION, "rr")  # the model checks it
    service.balance_factor = _decimal(annotations, BALANCE_FACTOR_ANNOTATION, _BALANCE_FACTOR_PATH,
                                      '"1.25"', reader)
    service.slow_start = _decimal(annotations, SLOW_START_ANNOTATION, _SLOW_START_PATH, '"30"', reader)
    service.panic_threshold = _decimal(annotations, PANIC_THRESHOLD_ANNOTATION, _PANIC_THRESHOLD_PATH,
                                       '"50"', reader)
    text = annotations.get(HEALTH_CHECK_ANNOTATION)
    if text is not None:
        path = f"metadata.annotations[{HEALTH_CHECK_ANNOTATION}]"
        if not isinstance(text, str):
            reader.report(path, text, "must be a string holding a JSON object (annotations are strings)")
            return
        try:
            block = json.loads(text)
        except ValueError as error:
            reader.report(path, text, f"is not JSON ({error}); give the health_check block as a JSON object")
            return
        if not isinstance(block, dict):
            reader.report(path, text, 'must be a JSON object of health check fields, e.g. {"type": "http", "path": "/healthz"}')
            return
        service.health_check, good = health_check_from(block, reader.problems, reader.where, path)
        reader.failed = reader.failed or not good


def _read_affinity(spec: dict, reader: _Reader, service: _ServiceObject) -> None:
    affinity = reader.get(spec, "sessionAffinity", "spec.sessionAffinity", str, default="None")
    if affinity == "ClientIP":
        config = reader.get(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig", dict, default={})
        client_ip = reader.get(config, "clientIP", "spec.sessionAffinityConfig.clientIP", dict, default={})
        # Kubernetes DefaultClientIPServiceAffinitySeconds: 10800 (3 hours).
        service.affinity_timeout = reader.get(client_ip, "timeoutSeconds", _TIMEOUT_PATH, int, default=DEFAULT_AFFINITY_TIMEOUT)
    elif affinity != "None":
        reader.report("spec.sessionAffinity", affinity, "is not one of None, ClientIP")


def _slice(obj: _Object, problems: Problems, notes: list[str]) -> _Slice | None:
    """One EndpointSlice's endpoints per port, or None (skipped with a note, or reported)."""
    where, body = obj.where, obj.body
    reader = _Reader(problems, where)
    labels = reader.get(body["metadata"], "labels", "metadata.labels", dict, default={})
    service = labels.get(SERVICE_NAME_LABEL)
    if not isinstance(service, str) or not service:
        reader.report(f"metadata.labels[{SERVICE_NAME_LABEL}]", MISSING if service is None else service,
                      "is required: it names the Service the slice belongs to")
    address_type = reader.get(body, "addressType", "addressType", str, required=True)
    if address_type == "FQDN":
        notes.append(f"{where}: skipped: addressType FQDN has no IP to balance to (kube-proxy ignores it too)")
        return None
    family = _FAMILIES.get(address_type)
    if family is None and address_type is not None:
        reader.report("addressType", address_type, "is not one of IPv4, IPv6, FQDN")
    ports = _slice_ports(body, reader, where, notes)
    result = _Slice(where, obj.namespace, obj.name, service, family, {key: [] for key, _ in ports})
    extra_addresses = False
    for path, endpoint in reader.mappings(body, "endpoints", "endpoints"):
        addresses = reader.get(endpoint, "addresses", f"{path}.addresses", list, required=True)
        if addresses == []:
            reader.report(f"{path}.addresses", addresses, "must hold at least one address")
        conditions = reader.get(endpoint, "conditions", f"{path}.conditions", dict, default={})
        # kube-proxy (endpointslicecache.go): nil ready and nil serving read as true,
        # nil terminating as false.
        ready = reader.get(conditions, "ready", f"{path}.conditions.ready", bool, default=True)
        serving = reader.get(conditions, "serving", f"{path}.conditions.serving", bool, default=True)
        terminating = reader.get(conditions, "terminating", f"{path}.conditions.terminating", bool, default=False)
        if not addresses:
            continue
        extra_addresses = extra_addresses or len(addresses) > 1
        # The model checks the address (once per port: an Endpoint is an ip:port); a
        # slice without ports gets it checked on a stand-in port.
        for key, number in ports or [(None, 1)]:
            try:
                built = Endpoint(addresses[0], number, ready=ready, serving=serving, terminating=terminating)
            except ConfigError as error:  # only the address is left to check
                reader.report(f"{path}.addresses[0]", error.value, error.reason)
                break
            if family is not None and built.family != family:
                reader.report(f"{path}.addresses[0]", addresses[0], f"is not an IPv{family} address")
                break
            if key is not None:
                result.ports[key].append(built)
    if extra_addresses:
        notes.append(f"{where}: only the first address of each endpoint is used (as kube-proxy does)")
    return None if reader.failed else result


def _slice_ports(body: dict, reader: _Reader, where: str, notes: list[str]) -> list[tuple[tuple[str, str | None], int]]:
    """((name, protocol), port number) of each usable port of a slice."""
    ports: list[tuple[tuple[str, str | None], int]] = []
    for path, port in reader.mappings(body, "ports", "ports"):
        key = reader.port_key(port, path)
        if port.get("port") is None:
            notes.append(f"{where}: {path} has no port number; skipped (kube-proxy ignores such a port too)")
            continue
        number = port["port"]
        try:
            Endpoint(STAND_IN_IP, number)  # the model checks the port once, not per endpoint
        except ConfigError as error:
            reader.report(f"{path}.port", error.value, error.reason)
            continue
        if any(key == seen for seen, _ in ports):
            reader.report(f"{path}.name", key[0], f"is given twice for {key[1]}; each slice port needs its own name")
            continue
        ports.append((key, number))
    return ports


def _endpoints(family: int, port_name: str, protocol: str, slices: list[_Slice]) -> list[Endpoint]:
    """The endpoints of one service port in one family, deduplicated and sorted."""
    by_address: dict[tuple[str, int], Endpoint] = {}
    for slice_ in slices:
        if slice_.family == family:
            for endpoint in slice_.ports.get((port_name, protocol), ()):
                by_address.setdefault((endpoint.ip, endpoint.port), endpoint)
    # kube-proxy byEndpoint: sorted by the "ip:port" string, so rules come out stable.
    return sorted(by_address.values(), key=lambda endpoint: endpoint.address)


def _services(service: _ServiceObject, slices: list[_Slice], problems: Problems) -> list[Located]:
    """The lbcore Services of one Kubernetes Service: one per port and family."""
    located = []
    base = f"{service.namespace}/{service.name}"
    # A Service whose ports or cluster IPs are all bad is still built once, on a valid
    # stand-in, so the model reports its other bad fields (scheduler, timeout) as well.
    ports = service.ports or [("spec.ports", "", "TCP", 1)]
    vips = service.vips or [(4, STAND_IN_IP, "spec.clusterIP")]
    for path, port_name, protocol, number in ports:
        name = f"{base}:{port_name}" if port_name else base
        for rank, (family, vip, vip_path) in enumerate(vips):
            fields = {
                "name": name if rank == 0 else f"{name}.ipv{family}", "vip": vip, "port": number,
                "protocol": protocol.lower(), "scheduler": service.scheduler,
                "affinity_timeout": service.affinity_timeout,
                "balance_factor": service.balance_factor,
                "slow_start": service.slow_start,
                "panic_threshold": service.panic_threshold,
                "health_check": service.health_check,
                "endpoints": _endpoints(family, port_name, protocol, slices),
            }
            # Where each model field came from, so a problem names the Kubernetes field.
            paths = {
                "name": "metadata.name", "vip": vip_path, "port": f"{path}.port",
                "protocol": f"{path}.protocol", "scheduler": _SCHEDULER_PATH,
                "affinity_timeout": _TIMEOUT_PATH, "balance_factor": _BALANCE_FACTOR_PATH,
                "slow_start": _SLOW_START_PATH, "panic_threshold": _PANIC_THRESHOLD_PATH,
            }
            lb_service = build(Service, fields, problems, service.where, what="a Service", paths=paths)
            if lb_service is not None and not service.failed:
                located.append(Located(lb_service, service.where, "metadata.name", f"{path}.port"))
    return located


def services_from(documents: Iterable[tuple[str, object]], problems: Problems, notes: list[str]) -> list[Located]:
    """The Services that (source, document) pairs describe; problems go to ``problems``.

    Slices join Services across every document and file given.  Objects skipped on
    purpose add one line each to ``notes``.  O(objects + endpoints · log endpoints).
    """
    services: list[_ServiceObject] = []
    slices: dict[tuple[str, str], list[_Slice]] = {}
    first_seen: dict[tuple[str, str, str], _Object] = {}
    for obj in _objects(documents, problems):
        first = first_seen.setdefault((obj.kind, obj.namespace, obj.name), obj)
        if first is not obj:
            problems.report(obj.where, "metadata.name", obj.name, f"is defined twice ({first.source} has it too)")
            continue
        if obj.kind == "Service":
            service = _service_object(obj, problems, notes)
            if service is not None:
                services.append(service)
        else:
            slice_ = _slice(obj, problems, notes)
            if slice_ is not None:
                slices.setdefault((slice_.namespace, slice_.service), []).append(slice_)
    for (namespace, service_name), orphans in slices.items():
        if ("Service", namespace, service_name) not in first_seen:
            notes.extend(f"{slice_.where}: not used: no Service {namespace}/{service_name} in the input"
                         for slice_ in orphans)
    located = []
    for service in services:
        joined = sorted(slices.get((service.namespace, service.name), ()), key=lambda s: s.name)
        located.extend(_services(service, joined, problems))
    return located


def load(documents: Iterable[object], source: str = "<input>", *, notes: list[str] | None = None) -> list[Service]:
    """The Services that parsed Kubernetes documents describe (objects or Lists of them).

    Raises `lbcore.sources.SourceError` with every problem, each naming ``source``, the
    object (``Service namespace/name``) and the field.  If ``notes`` is a list, one line
    is appended per object skipped on purpose.  O(objects + endpoints · log endpoints).

    >>> from lbcore.sources import kubernetes
    >>> service = {"apiVersion": "v1", "kind": "Service",
    ...            "metadata": {"name": "web", "namespace": "shop"},
    ...            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}}
    >>> endpoints = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    ...              "metadata": {"name": "web-x1", "namespace": "shop",
    ...                           "labels": {"kubernetes.io/service-name": "web"}},
    ...              "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
    ...              "endpoints": [{"addresses": ["10.244.1.7"]}]}
    >>> [web] = kubernetes.load([service, endpoints])
    >>> web.name, web.address, [e.address for e in web.endpoints]
    ('shop/web:http', '10.96.0.10:80', ['10.244.1.7:8080'])
    """
    problems = Problems()
    located = services_from(((source, document) for document in documents), problems,
                            notes if notes is not None else [])
    check_unique(located, problems)
    problems.raise_if_any()
    return [item.service for item in located]
