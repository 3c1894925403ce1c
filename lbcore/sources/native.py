"""lbcore's own format: a ``services:`` list of the Service fields, each with ``endpoints:``.

The keys are the keyword arguments of `lbcore.Service` and `lbcore.Endpoint` (and of
`lbcore.HealthCheck` in a service's ``health_check:`` block), so the models validate every value and the format cannot drift from them.  An unknown key is an
error (with the nearest valid key as a hint): a typo such as ``schedular: wlc`` must
never be dropped silently and leave the default in force.

>>> from lbcore.sources import native
>>> [service] = native.load({"services": [{
...     "name": "web", "vip": "10.96.0.10", "port": 80, "scheduler": "wrr",
...     "endpoints": [{"ip": "10.1.0.5", "port": 8080, "weight": 3}]}]})
>>> service.scheduler, service.endpoints[0].address
('wrr', '10.1.0.5:8080')
"""

from __future__ import annotations

from ..errors import ConfigError
from ..models import Endpoint, HealthCheck, Service
from ._build import build, model_keys
from ._problems import MISSING, Problems, type_name, unknown_key
from ._unique import Located, check_unique

__all__ = [
    "SERVICE_KEYS", "ENDPOINT_KEYS", "HEALTH_CHECK_KEYS", "load", "service_from", "services_from",
    "health_check_from",
]

#: The keys of a service entry, an endpoint entry and a health_check block: the models' keywords.
SERVICE_KEYS = model_keys(Service)[0]
ENDPOINT_KEYS = model_keys(Endpoint)[0]
HEALTH_CHECK_KEYS = model_keys(HealthCheck)[0]


def _known(mapping: dict, allowed: tuple[str, ...], what: str, problems: Problems, where: str,
           within: str = "") -> dict:
    """The entries of ``mapping`` with known keys (all, if as long); each unknown key is reported."""
    for key in mapping:
        if key not in allowed:
            reason = unknown_key(str(key), allowed, f"is not a field of {what}")
            problems.add(ConfigError(str(key), mapping[key], reason), where, within)
    return {key: value for key, value in mapping.items() if key in allowed}


def _endpoints(value: object, problems: Problems, where: str) -> tuple[Endpoint, ...] | None:
    """The endpoints of one service entry, or None after reporting every problem."""
    if not isinstance(value, list):
        problems.report(where, "endpoints", value, f"must be {type_name(list)} of endpoints")
        return None
    endpoints = []
    for i, entry in enumerate(value):
        within = f"endpoints[{i}]"
        if not isinstance(entry, dict):
            problems.add(ConfigError(within, entry, f"must be {type_name(dict)} with ip and port"), where)
            continue
        fields = _known(entry, ENDPOINT_KEYS, "an endpoint", problems, where, within)
        endpoint = build(Endpoint, fields, problems, where, what="an endpoint", within=within)
        if endpoint is not None and len(fields) == len(entry):
            endpoints.append(endpoint)
    return tuple(endpoints) if len(endpoints) == len(value) else None


def health_check_from(value: object, problems: Problems, where: str,
                      field: str = "health_check") -> tuple[HealthCheck | None, bool]:
    """(the `HealthCheck` a mapping of its fields describes, whether it was good).

    None and True for an absent block; every problem is reported at ``where`` under
    ``field`` (``health_check.interval``).  The Kubernetes annotation carries the same
    block as JSON, so both formats read it here.
    """
    if value is None:
        return None, True
    if not isinstance(value, dict):
        problems.report(where, field, value, f"must be {type_name(dict)} of health check fields")
        return None, False
    fields = _known(value, HEALTH_CHECK_KEYS, "a health check", problems, where, field)
    check = build(HealthCheck, fields, problems, where, what="a health check", within=field)
    return check, check is not None and len(fields) == len(value)


def _service(entry: object, index: int, problems: Problems, source: str) -> Located | None:
    """One entry of ``services:``, or None after reporting every problem in it."""
    name = entry.get("name") if isinstance(entry, dict) else None
    where = f"{source}: services[{index}]" + (f" ({name})" if isinstance(name, str) else "")
    return service_from(entry, where, problems)


def service_from(entry: object, where: str, problems: Problems) -> Located | None:
    """One service given as the keys of a ``services:`` item, or None after reporting
    every problem in it at ``where`` (an etcd key holds one such item).  O(endpoints).
    """
    if not isinstance(entry, dict):
        problems.report(where, "service", entry, f"must be {type_name(dict)} with name, vip and port")
        return None
    fields = _known(entry, SERVICE_KEYS, "a service", problems, where)
    all_known = len(fields) == len(entry)
    endpoints = _endpoints(fields.get("endpoints", []), problems, where)
    # With a bad endpoint the service is still built, without endpoints, so its own bad
    # values are reported in the same run.
    fields["endpoints"] = endpoints or ()
    fields["health_check"], check_ok = health_check_from(fields.get("health_check"), problems, where)
    service = build(Service, fields, problems, where, what="a service")
    if service is None or endpoints is None or not all_known or not check_ok:
        return None
    return Located(service, where, "name", "port")


def services_from(document: dict, source: str, problems: Problems) -> list[Located]:
    """The services of one document of lbcore's format; problems go to ``problems``.

    ``source`` names the file (and the document, when a file holds several).
    O(services + endpoints).
    """
    for key in document:
        if key != "services":
            problems.report(source, str(key), document[key], "is not a top-level key of lbcore's format; valid: services")
    entries = document.get("services", MISSING)
    if not isinstance(entries, list):
        problems.report(source, "services", entries, f"must be {type_name(list)} of services")
        return []
    located = [_service(entry, i, problems, source) for i, entry in enumerate(entries)]
    return [item for item in located if item is not None]


def load(document: object, source: str = "<input>") -> list[Service]:
    """The Services of one parsed document of lbcore's format.

    Raises `lbcore.sources.SourceError` with every problem (bad values, unknown or
    missing keys, duplicate names or addresses), each naming ``source``, the service and
    the field; nothing is returned half-checked.  O(services + endpoints).
    """
    problems = Problems()
    located: list[Located] = []
    if isinstance(document, dict):
        located = services_from(document, source, problems)
        check_unique(located, problems)
    else:
        problems.report(source, "document", document, f"must be {type_name(dict)} with a 'services' list")
    problems.raise_if_any()
    return [item.service for item in located]
