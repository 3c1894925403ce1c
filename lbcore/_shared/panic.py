"""The panic threshold: what both twins of every balancer share off the hot path.

Envoy's healthy panic threshold (load_balancer_impl.cc; algorithms.md §3): when too few
endpoints look healthy, trusting the marks would pile every connection onto the few
left (a health-check storm, a bad deploy of the checks themselves), so the balancer
stops trusting them and spreads over all endpoints.  lbcore decides it when the marks
or the endpoint set change, never per pick:

    panic  <=>  healthy * 100 < threshold * usable

``usable``: the endpoints that may take new connections by their own state (weight > 0,
in the ready tier, or the serving-terminating tier when none is ready); ``healthy``:
those of them not marked failed.  Envoy multiplies the healthy share by its
overprovisioning factor (1.4) because it weighs priority levels against each other;
lbcore has one level, so the threshold compares the plain share (10 endpoints at 50 %:
5 failed is no panic, 6 failed is).
"""

from __future__ import annotations

from ..models import Endpoint, check_panic_threshold
from .endpoint_state import pickable_indices

__all__ = ["check_panic_threshold", "in_panic", "NO_MARKS"]

#: The marks picks obey in panic: none.
NO_MARKS: frozenset = frozenset()


def in_panic(endpoints: tuple[Endpoint, ...], failed: frozenset, threshold: float | None) -> bool:
    """Whether fewer than ``threshold`` percent of the usable endpoints are healthy; O(n).

    Never with no threshold, no mark, or no usable endpoint.

    >>> from lbcore import Endpoint
    >>> endpoints = tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(4))
    >>> in_panic(endpoints, frozenset({("10.0.0.0", 80), ("10.0.0.1", 80)}), 50)
    False
    >>> in_panic(endpoints, frozenset({("10.0.0.0", 80), ("10.0.0.1", 80), ("10.0.0.2", 80)}), 50)
    True
    """
    if threshold is None or not failed:
        return False
    usable = len(pickable_indices(endpoints, NO_MARKS))
    healthy = len(pickable_indices(endpoints, failed))
    return healthy * 100 < threshold * usable
