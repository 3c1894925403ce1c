"""One endpoint's health: a small state machine, not a flag (Envoy's and HAProxy's habit).

An endpoint is healthy or not.  ``fall`` failed results in a row take a healthy one out;
``rise`` passed results in a row bring an unhealthy one back (HAProxy ``rise``/``fall``,
Envoy ``unhealthy_threshold``/``healthy_threshold``).  A result is a check's, or a
failure the forwarder saw on a real connection (passive: HAProxy ``observe layer4``
counts such errors as failed checks).  The state keeps what a person asks when an
endpoint is out: the last result, why, how long the check took, since when the endpoint
has been in its state (slow start reads it: "healthy since when?"), and how often it
went down and came back.
"""

from __future__ import annotations

from typing import Any

from ..models import Endpoint

__all__ = ["EndpointHealth"]


class EndpointHealth:
    """The health of one endpoint under one check.

    ``healthy``: whether it takes new connections as far as health goes.  ``passes`` /
    ``failures``: the results in a row that agree (one of them is 0).  ``last``:
    ``"passed"``, ``"failed"`` or None before the first result; ``why``: what failed
    (``"Connection refused"``, ``"timed out after 1s"``, ``"status 500"``, ``"passive:
    ..."``), None after a pass; ``latency``: seconds the last check took; ``since``: the
    checker's clock when the endpoint entered its state (when it was first seen, or its
    last transition); ``checked_at``: the clock at the last result.  ``went_down`` and
    ``came_back`` count transitions, ``checks`` the results, ``checks_failed`` the failed
    ones, ``passive`` the failures that came from real connections.

    >>> state = EndpointHealth(Endpoint("10.0.0.1", 80), healthy=True, now=0.0)
    >>> [state.record(False, "Connection refused", now=t, rise=2, fall=3) for t in (1, 2, 3)]
    [False, False, True]
    >>> state.healthy, state.since, state.why
    (False, 3, 'Connection refused')
    >>> [state.record(True, None, now=t, rise=2, fall=3) for t in (4, 5)]
    [False, True]
    >>> state.healthy, state.since, state.went_down, state.came_back
    (True, 5, 1, 1)
    """

    __slots__ = (
        "endpoint", "healthy", "passes", "failures", "last", "why", "latency", "since",
        "checked_at", "checks", "checks_failed", "passive", "went_down", "came_back", "due",
    )

    def __init__(self, endpoint: Endpoint, *, healthy: bool, now: float) -> None:
        self.endpoint = endpoint
        self.healthy = healthy
        self.passes = self.failures = 0
        self.last: str | None = None
        self.why: str | None = None
        self.latency: float | None = None
        self.since = now
        self.checked_at: float | None = None
        self.checks = self.checks_failed = self.passive = self.went_down = self.came_back = 0
        #: the wheel's token for this endpoint's next check; a popped entry whose token
        #: differs is stale (the endpoint was removed or rescheduled).
        self.due: object = None

    def record(self, passed: bool, why: str | None, *, now: float, rise: int, fall: int,
               latency: float | None = None) -> bool:
        """Count one result; return whether the endpoint changed state.  O(1)."""
        self.checks += 1
        self.checked_at = now
        self.last = "passed" if passed else "failed"
        self.why = why
        if latency is not None:
            self.latency = latency
        if passed:
            self.passes += 1
            self.failures = 0
            if not self.healthy and self.passes >= rise:
                self.healthy = True
                self.since = now
                self.came_back += 1
                return True
        else:
            self.checks_failed += 1
            self.failures += 1
            self.passes = 0
            if self.healthy and self.failures >= fall:
                self.healthy = False
                self.since = now
                self.went_down += 1
                return True
        return False

    def snapshot(self) -> dict[str, Any]:
        """Plain data: what stats and metrics show."""
        return {
            "healthy": self.healthy,
            "last": self.last,
            "why": self.why,
            "latency": self.latency,
            "since": self.since,
            "passes": self.passes,
            "failures": self.failures,
            "checks": self.checks,
            "checks_failed": self.checks_failed,
            "passive": self.passive,
            "went_down": self.went_down,
            "came_back": self.came_back,
        }

    def __repr__(self) -> str:
        state = "healthy" if self.healthy else "unhealthy"
        return f"<EndpointHealth {self.endpoint.address} {state} last={self.last} why={self.why!r}>"
