"""The face every balancer shares, pure-Python twin (compiled: lbcore/_fast/balancer.pyx).

A balancer holds an endpoint list, a *picker* built from it (an immutable snapshot,
rebuilt by `update` and swapped in with one attribute store), and mutable load state
keyed by endpoint address that survives updates (a cursor, connection counts, marks of
passive health).  Subclasses implement `_rebuild` and `_pick_index` (and override
`pick` where a faster path pays).

Two options every balancer shares are decided here, when the endpoints or the marks
change, never per pick: the panic threshold (lbcore/_shared/panic.py: below it the
picker is built as if nothing were marked failed) and slow start
(lbcore/_shared/slow_start.py: the schedulers that ramp ask `_ramped` for their weights).
A pick pays one flag test for both while neither is at work: ``_note_picks`` says that
a pick must first call `_note_pick` (to count a pick in panic, or to refresh a ramp).
"""

from __future__ import annotations

from array import array
from typing import Any, Iterable, Sequence

from .._shared.endpoint_state import (
    check_endpoints,
    endpoint_key,
    no_endpoints_error,
    pickable_indices,
    surviving_failures,
)
from .._shared.key_buffers import buffer_keys
from .._shared.lease import Lease
from .._shared.panic import NO_MARKS, check_panic_threshold, in_panic
from .._shared.slow_start import SlowStart
from ..models import Endpoint
from .hashing import key_hash

__all__ = ["Balancer"]

class Balancer:
    """Base of every balancer; not used on its own."""

    scheduler = ""
    #: Whether `pick` needs a key (hash schedulers).
    needs_key = False
    __slots__ = (
        "_endpoints", "_failed", "_skipped", "_panic_threshold", "_panic", "_panic_picks",
        "_ramp", "_ramping", "_note_picks", "__weakref__",
    )

    def __init__(
        self, endpoints: Iterable[Endpoint] = (), *, panic_threshold: float | None = None,
        ramp: SlowStart | None = None,
    ) -> None:
        self._panic_threshold = check_panic_threshold(panic_threshold)
        self._ramp = ramp
        self._endpoints: tuple[Endpoint, ...] = ()
        self._failed: frozenset = frozenset()
        # The marks the picker obeys: the failure marks, or none in panic.
        self._skipped: frozenset = frozenset()
        self._panic = self._ramping = self._note_picks = False
        self._panic_picks = 0
        self.update(endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """All endpoints, in the order given, including those not taking connections."""
        return self._endpoints

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; O(n) plus the scheduler's table build.

        Endpoints that stay (same ip:port) keep their load state and failure marks.
        A bad list raises ConfigError and leaves the balancer as it was.
        """
        endpoints = check_endpoints(endpoints)
        failed = surviving_failures(self._failed, endpoints)
        if self._ramp is not None:
            self._ramp.track(endpoints)
        self._publish(endpoints, failed)
        self._endpoints = endpoints
        self._failed = failed

    @property
    def panic_threshold(self) -> float | None:
        """The panic threshold in percent (``None``: off)."""
        return self._panic_threshold

    @property
    def panic(self) -> bool:
        """Whether fewer than `panic_threshold` percent of the endpoints that take new
        connections are healthy, so that picks ignore the failure marks."""
        return self._panic

    @property
    def panic_picks(self) -> int:
        """Picks made in panic (Envoy's ``lb_healthy_panic``), since construction."""
        return self._panic_picks

    @property
    def slow_start(self) -> float | None:
        """The slow start window in seconds (``None``: off)."""
        return None if self._ramp is None else self._ramp.window

    def _publish(self, endpoints: tuple[Endpoint, ...], failed: frozenset) -> None:
        # Panic and the ramps are decided here, once per change, not per pick.
        panic = in_panic(endpoints, failed, self._panic_threshold)
        skipped = NO_MARKS if panic else failed
        self._rebuild(endpoints, pickable_indices(endpoints, skipped))
        self._skipped, self._panic = skipped, panic
        self._ramping = self._ramp is not None and bool(self._ramp.started)
        self._note_picks = panic or self._ramping

    def _ramped(self, endpoints: tuple[Endpoint, ...], pickable: list[int], weights: list[int]) -> list[int] | None:
        """The weights of ``pickable`` while some endpoint ramps up, else None."""
        return None if self._ramp is None else self._ramp.weights(endpoints, pickable, weights)

    def _ramp_factors(self) -> dict[tuple[str, int], float]:
        """The factor of each endpoint ramping up now, by address (tests and stats)."""
        return {} if self._ramp is None else self._ramp.ramping()

    def _note_pick(self) -> None:
        """Before a pick in panic or while an endpoint ramps: count it, refresh the ramp."""
        if self._panic:
            self._panic_picks += 1
        if self._ramping and self._ramp.clock() >= self._ramp.refresh_at:
            self._publish(self._endpoints, self._failed)

    def mark_failed(self, endpoint: Endpoint) -> None:
        """Passive health: no new picks for ``endpoint`` until `mark_healthy`.

        An endpoint not in the set (e.g. removed since it was picked) is ignored.
        """
        self._set_failed(endpoint, True)

    def mark_healthy(self, endpoint: Endpoint) -> None:
        """Undo `mark_failed`; unknown endpoints are ignored."""
        self._set_failed(endpoint, False)

    def _set_failed(self, endpoint: Endpoint, failed: bool) -> None:
        key = endpoint_key(endpoint)
        if failed == (key in self._failed) or key not in {endpoint_key(e) for e in self._endpoints}:
            return
        marks = self._failed | {key} if failed else self._failed - {key}
        if not failed and self._ramp is not None:
            self._ramp.restart(key)  # back from a failure: it ramps up again (Envoy)
        self._publish(self._endpoints, marks)
        self._failed = marks

    def release(self, endpoint: Endpoint) -> None:
        """A connection picked earlier has ended (counted by lc/wlc; no-op here)."""

    def lease(self, key: Any = None) -> Lease:
        """Pick now and release when the ``with`` block ends.

        >>> from lbcore import Endpoint, RoundRobin
        >>> b = RoundRobin([Endpoint("10.0.0.1", 80)])
        >>> with b.lease() as endpoint:
        ...     endpoint.address
        '10.0.0.1:80'
        """
        return Lease(self, self.pick(key))

    def pick(self, key: Any = None) -> Endpoint:
        """The endpoint for a new connection; raises NoEndpointsError if none can take it."""
        index = self._pick_index(self._hash_for_pick(key))
        if index < 0:
            raise self._no_endpoints()
        return self._endpoints[index]

    def pick_many(self, keys: Sequence[Any] | Any) -> array:
        """Endpoint indices (into `endpoints`) for a batch of keys, as ``array('i')``.

        ``keys`` is a sequence of str/bytes/int keys or a buffer of 64-bit ints.  Each
        key counts as one pick (a cursor advances, a connection is counted).
        """
        view = buffer_keys(keys)
        if view is not None:
            keys = view.tolist()
        result = array("i", bytes(4 * len(keys)))
        for n, key in enumerate(keys):
            index = self._pick_index(self._hash_for_pick(key))
            if index < 0:
                raise self._no_endpoints()
            result[n] = index
        return result

    def _hash_for_pick(self, key: Any) -> int:
        if key is None:
            if self.needs_key:
                raise TypeError(f"{self.scheduler} needs a key (a client address, a cookie value)")
            return 0
        return key_hash(key) if self.needs_key else 0

    def _no_endpoints(self) -> Exception:
        return no_endpoints_error(self.scheduler, self._endpoints, self._failed)

    def _rebuild(self, endpoints: tuple[Endpoint, ...], pickable: list[int]) -> None:
        """Build and publish the picker for ``endpoints``; raise before changing anything."""
        raise NotImplementedError

    def _pick_index(self, key_hash: int) -> int:
        """Index into the endpoints of the next pick, or -1 if none can take it.

        Every implementation (and every `pick` that does not call it) first calls
        `_note_pick` when ``_note_picks`` is set."""
        raise NotImplementedError

    def _count(self, index: int) -> None:
        """A connection was placed on ``endpoints[index]`` without a pick (an affinity hit).

        lc/wlc count it, so that the `release` that follows balances; others ignore it.
        """

    def _check(self) -> None:
        """Assert the invariants every balancer keeps (tests call this after each step)."""
        assert self._failed <= {endpoint_key(e) for e in self._endpoints}
        self._check_panic()

    def _check_panic(self) -> None:
        assert self._panic == in_panic(self._endpoints, self._failed, self._panic_threshold)
        assert self._skipped == (NO_MARKS if self._panic else self._failed)
        assert self._note_picks == (self._panic or self._ramping)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._endpoints)!r})"
