"""What both twins of every balancer share off the hot path.

Which endpoints may take new connections, which marks of passive health survive an
update, and the error raised when nothing is left.  The pick itself never calls in here.
"""

from __future__ import annotations

from typing import Iterable

from ..errors import NoEndpointsError
from ..models import Endpoint, check_endpoints, usable_endpoints

__all__ = [
    "check_endpoints",
    "pickable_indices",
    "surviving_failures",
    "no_endpoints_error",
    "endpoint_key",
]


def endpoint_key(endpoint: Endpoint) -> tuple[str, int]:
    """An endpoint's identity across updates: its address, not its weight or conditions.

    Load state (active connections, sticky sessions, failure marks) follows this key,
    so a weight change or a ready flip does not reset it.
    """
    return (endpoint.ip, endpoint.port)


def pickable_indices(endpoints: tuple[Endpoint, ...], failed: frozenset) -> list[int]:
    """Indices of the endpoints a new connection may go to, in list order.

    Usable by condition (ready, else serving-terminating: kube-proxy), weight > 0 (IPVS:
    weight 0 is quiesced), and not marked failed by passive health.
    """
    # One pass, no key built per endpoint (every update pays this: 0.24 ms -> 0.04 ms
    # for 1,000 endpoints).  The condition is `usable_endpoints`' rule restated per
    # endpoint, which tests hold equal to it.
    ready = any(e.ready for e in endpoints)
    return [
        i
        for i, e in enumerate(endpoints)
        if e.weight > 0
        and (e.ready if ready else e.serving and e.terminating)
        and not (failed and (e.ip, e.port) in failed)
    ]


def surviving_failures(failed: frozenset, endpoints: Iterable[Endpoint]) -> frozenset:
    """Failure marks of endpoints that are still in the set; the others are forgotten."""
    if not failed:  # the common case: nothing to look up
        return failed
    present = {endpoint_key(e) for e in endpoints}
    return frozenset(failed & present)


def no_endpoints_error(
    scheduler: str, endpoints: tuple[Endpoint, ...], failed: frozenset
) -> NoEndpointsError:
    """A NoEndpointsError that says why nothing can be picked."""
    if not endpoints:
        return NoEndpointsError(f"{scheduler}: no endpoints")
    usable = {endpoint_key(e) for e in usable_endpoints(endpoints)}
    reasons = {"not ready": 0, "quiesced (weight 0)": 0, "failed": 0}
    for e in endpoints:
        key = endpoint_key(e)
        if key not in usable:
            reasons["not ready"] += 1
        elif e.weight == 0:
            reasons["quiesced (weight 0)"] += 1
        elif key in failed:
            reasons["failed"] += 1
    detail = ", ".join(f"{n} {why}" for why, n in reasons.items() if n)
    return NoEndpointsError(
        f"{scheduler}: no endpoint can take a new connection: {len(endpoints)} endpoints ({detail})"
    )
