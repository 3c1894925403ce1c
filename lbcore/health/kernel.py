"""Health for the kernel's data planes: the models as the kernel should carry them.

The kernel checks nothing itself; lbcore's renderers carry health the way keepalived
does with ``inhibit_on_failure``: an unhealthy endpoint keeps its place with weight 0.
In IPVS that is ``-e ... -w 0`` (no new connections; established ones go on, and a
recovered endpoint comes back with one ``-e``, without the churn of delete and add); in
the iptables renderer weight 0 means out of the split, in the nftables renderer its
slots go to the endpoints that take new connections.  So a node agent
re-renders when health changes, from `inhibit_unhealthy` of its Services, and applies
the diff as for any change.

When every endpoint of a Service is unhealthy, every one gets weight 0: iptables and
nftables then reject the Service's connections, and IPVS finds no destination.  Unless the
Service has a ``panic_threshold``: while fewer than that percent of the endpoints that
take new connections are healthy, every endpoint stays in with its weight (Envoy's
panic: a storm of failed checks must not pile the load onto the few endpoints left),
the rule the balancers apply (lbcore/_shared/panic.py).  With ``sh``, ``dh`` and ``mh`` a weight-0 real server keeps its
buckets, so only the ``sh-fallback``/``mh-fallback`` flags send its clients elsewhere;
see `lbcore.render.ipvs`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from .._shared.endpoint_state import endpoint_key
from .._shared.panic import in_panic
from ..models import Service
from .checker import HealthChecker

__all__ = ["inhibit_unhealthy"]


def inhibit_unhealthy(services: Iterable[Service], checkers: Mapping[str, HealthChecker]) -> list[Service]:
    """``services`` with each endpoint its service's checker holds unhealthy at weight 0,
    unless that leaves fewer than the service's ``panic_threshold`` percent healthy.

    ``checkers`` maps a service name to its checker (`HealthMonitor.checkers`); a
    service without one, or with every endpoint healthy, comes back as the same object,
    so a diff against the last applied set sees only what health changed.
    O(services + endpoints of services with an unhealthy endpoint).

    >>> from lbcore import Endpoint, HealthCheck, Service
    >>> web = Service("web", "10.96.0.10", 80, health_check=HealthCheck(initial="unhealthy"),
    ...               endpoints=[Endpoint("10.1.0.5", 8080, weight=3)])
    >>> checker = HealthChecker(web.health_check, web.endpoints)   # nothing passed yet
    >>> [e.weight for e in inhibit_unhealthy([web], {"web": checker})[0].endpoints]
    [0]
    """
    result = []
    for service in services:
        checker = checkers.get(service.name)
        if checker is not None and checker.unhealthy and not _in_panic(service, checker):
            endpoints = tuple(
                e if e.weight == 0 or checker.is_healthy(e) else dataclasses.replace(e, weight=0)
                for e in service.endpoints
            )
            service = dataclasses.replace(service, endpoints=endpoints)
        result.append(service)
    return result


def _in_panic(service: Service, checker: HealthChecker) -> bool:
    if service.panic_threshold is None:
        return False
    failed = frozenset(endpoint_key(e) for e in service.endpoints if not checker.is_healthy(e))
    return in_panic(service.endpoints, failed, service.panic_threshold)
