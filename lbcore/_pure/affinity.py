"""Sticky sessions with a TTL over any balancer (``Affinity``), pure-Python twin.

Compiled twin: lbcore/_fast/affinity.pyx, with its table in session_table.pyx.

kube-proxy's userspace ClientIP affinity (pkg/proxy/userspace/roundrobin.go
``NextEndpoint``): a key used again less than ``timeout`` seconds after its last use goes
to the same endpoint, and the use refreshes the TTL; otherwise the wrapped balancer
picks and the choice is stored.  Where lbcore differs, on purpose:

- the table is bounded by ``max_entries``: when it is full a new session evicts the
  least recently used of 8 sessions taken in turn by a hand that sweeps the table
  (kube-proxy's Go map grows without bound; lbcore._pure.session_table says why not
  exact LRU);
- a session dies as soon as its endpoint leaves the set, is quiesced (weight 0), is not
  usable by condition, or is marked failed (kube-proxy's ``removeStaleAffinity`` drops
  only removed endpoints; kubernetes#110302: a client kept hitting a failed endpoint);
- a session is keyed by the 64-bit `key_hash` of its key, so two keys whose hashes
  collide share one session: for n live keys the chance that any two do is about
  n²/2**65 (3e-8 at a million keys).

Expired sessions are reclaimed lazily, with no timer: a lookup that finds one drops it,
the eviction window takes the stalest first, and a rebuild of the table (at its load
limit) drops them all.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable

from .._shared.affinity_options import (
    DEFAULT_MAX_ENTRIES,
    NO_KEY,
    check_clock,
    check_keyed_by_xxh64,
    check_max_entries,
    check_timeout,
    not_same_twin,
    session_remap,
)
from .._shared.endpoint_state import pickable_indices
from ..models import DEFAULT_AFFINITY_TIMEOUT, Endpoint
from .balancer import Balancer
from .hashing import key_hash
from .session_table import SessionTable

__all__ = ["Affinity"]

# CPython's time module does not name CLOCK_MONOTONIC_COARSE; Linux numbers it 6
# (include/uapi/linux/time.h).  Elsewhere the ordinary monotonic clock serves.
_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6 if sys.platform.startswith("linux") else None)


def _coarse_clock() -> float:
    """Monotonic seconds at the kernel tick's resolution: TTLs are whole seconds."""
    return time.clock_gettime(_COARSE) if _COARSE is not None else time.monotonic()


class Affinity(Balancer):
    """Sticky sessions with a TTL over any balancer (ClientIP affinity, cookie stickiness).

    ``pick(key)`` returns the endpoint of ``key``'s session if it was used less than
    ``timeout`` seconds ago (1..86400, the Kubernetes range; default 10800 as in
    Kubernetes), refreshing it; otherwise the wrapped ``balancer`` picks and a session is
    stored.  A hit is O(1) and does not pick in the wrapped balancer: lc/wlc are told
    of the placement so that the ``release`` that follows balances.

    Sessions die when their endpoint leaves the set, is quiesced (weight 0), is not
    usable by condition, or is marked failed; every other session survives `update`.
    The wrapped balancer's panic threshold holds here too (`panic`): in panic its picks,
    and so new sessions, may go to endpoints marked failed; a session still dies when
    its endpoint is marked failed, and those made in panic on failed endpoints die
    when the panic ends.
    Over `Maglev` this is consistent-hash affinity with a TTL: new keys follow the
    hash, live sessions keep their endpoint across endpoint-set changes.

    At most ``max_entries`` sessions are held.  When full, a new session evicts the
    least recently used of the next 8 sessions a hand sweeping the table passes (all of
    them, so exact LRU, up to 8 sessions); a hit costs one cache line, with no order of
    last use to relink (lbcore._pure.session_table).  ``clock`` (seconds, never going back) defaults to the coarse monotonic
    clock; tests inject one.  A key is needed: ``pick()`` without one raises TypeError
    (a session cannot stick to nothing; ``.balancer.pick()`` picks without one).

    >>> from lbcore import Affinity, Endpoint, RoundRobin
    >>> now = [0.0]
    >>> a = Affinity(RoundRobin([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)]),
    ...              timeout=60, clock=lambda: now[0])
    >>> first = a.pick("192.168.7.7")
    >>> now[0] = 59.0
    >>> a.pick("192.168.7.7") == first
    True
    >>> now[0] = 119.0                       # idle 60 s: expired, the balancer picks again
    >>> a.pick("192.168.7.7") == first
    False
    """

    needs_key = True
    __slots__ = ("_balancer", "_table", "_clock")

    def __init__(
        self,
        balancer: Balancer,
        timeout: int = DEFAULT_AFFINITY_TIMEOUT,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(balancer, Balancer):
            raise not_same_twin(balancer, "lbcore._pure")
        check_keyed_by_xxh64(balancer)
        self._table = SessionTable(check_timeout(timeout), check_max_entries(max_entries))
        self._clock = _coarse_clock if check_clock(clock) is None else clock
        self._balancer = balancer
        self._endpoints = balancer._endpoints
        self._failed = balancer._failed
        self._skipped = balancer._skipped

    @property
    def balancer(self) -> Balancer:
        """The wrapped balancer, which picks for keys without a live session."""
        return self._balancer

    @property
    def scheduler(self) -> str:
        """The wrapped balancer's scheduler (ipvsadm: ``-s rr -p T`` is rr with persistence)."""
        return self._balancer.scheduler

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The wrapped balancer's endpoints."""
        return self._balancer._endpoints

    @property
    def panic_threshold(self) -> float | None:
        """The wrapped balancer's panic threshold in percent (``None``: off)."""
        return self._balancer.panic_threshold

    @property
    def panic(self) -> bool:
        """Whether the wrapped balancer is in panic (its picks ignore failure marks)."""
        return self._balancer.panic

    @property
    def panic_picks(self) -> int:
        """The wrapped balancer's picks in panic (session hits are not picks)."""
        return self._balancer.panic_picks

    @property
    def slow_start(self) -> float | None:
        """The wrapped balancer's slow start window in seconds (``None``: off)."""
        return self._balancer.slow_start

    @property
    def timeout(self) -> int:
        """Seconds a session lives after its last use."""
        return self._table.timeout

    @property
    def max_entries(self) -> int:
        """The most sessions held at once."""
        return self._table.max_entries

    def update(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the endpoint set; O(n + sessions).

        Sessions of endpoints that stay (same ip:port) and can still take connections
        survive; the others die.  A bad list raises ConfigError and changes nothing.

        >>> from lbcore import Affinity, Endpoint, RoundRobin
        >>> sticky = Affinity(RoundRobin([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)]))
        >>> mine = sticky.pick("192.0.2.1")
        >>> sticky.update([Endpoint("10.0.0.3", 80), mine])   # mine stays, so does the session
        >>> sticky.pick("192.0.2.1") == mine
        True
        """
        self._balancer.update(endpoints)
        self._follow()

    def mark_failed(self, endpoint: Endpoint) -> None:
        """No new picks for ``endpoint`` until `mark_healthy`; its sessions die.  O(n + sessions).

        >>> from lbcore import Affinity, Endpoint, RoundRobin
        >>> sticky = Affinity(RoundRobin([Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)]))
        >>> mine = sticky.pick("192.0.2.1")
        >>> sticky.mark_failed(mine)
        >>> sticky.pick("192.0.2.1") != mine
        True
        """
        self._balancer.mark_failed(endpoint)
        self._follow()

    def mark_healthy(self, endpoint: Endpoint) -> None:
        """Undo `mark_failed` (the sessions that died stay dead)."""
        self._balancer.mark_healthy(endpoint)
        self._follow()

    def release(self, endpoint: Endpoint) -> None:
        """A connection picked earlier has ended: the wrapped balancer is told."""
        self._balancer.release(endpoint)

    def _hash_for_pick(self, key: Any) -> int:
        if key is None:
            raise TypeError(NO_KEY)
        return key_hash(key)

    def _pick_index(self, key_hash: int) -> int:
        balancer = self._balancer
        now = float(self._clock())
        if balancer._endpoints is not self._endpoints or balancer._failed is not self._failed:
            self._follow()  # the wrapped balancer was changed directly
        index = self._table.lookup(key_hash, now)
        if index >= 0:
            balancer._count(index)
            return index
        index = balancer._pick_index(key_hash)
        if index >= 0:
            self._table.add(key_hash, index, now)
        return index

    def _count(self, index: int) -> None:
        self._balancer._count(index)

    def _follow(self) -> None:
        """Catch up with the wrapped balancer: its sessions of lost endpoints die, the rest are renumbered."""
        balancer = self._balancer
        # Sessions live on the endpoints picks may reach (all of them in panic), except
        # that an endpoint marked failed just now loses its sessions even in panic.
        remap = session_remap(self._endpoints, self._skipped, balancer._endpoints,
                              balancer._skipped | (balancer._failed - self._failed))
        if remap is not None:
            self._table.retain(remap)
        self._endpoints = balancer._endpoints
        self._failed = balancer._failed
        self._skipped = balancer._skipped

    def _sessions(self) -> list[tuple[int, Endpoint, float]]:
        """``(key hash, endpoint, last use)`` of every session, stalest first (tests, debugging)."""
        return [(key, self._endpoints[i], last_use) for key, i, last_use in self._table.by_last_use()]

    def _check(self) -> None:
        super()._check()
        self._balancer._check()
        assert self._endpoints is self._balancer._endpoints
        assert self._failed is self._balancer._failed
        assert self._skipped is self._balancer._skipped
        self._table._check(set(pickable_indices(self._endpoints, self._skipped)))

    def _check_panic(self) -> None:
        """The wrapped balancer's own check covers its panic."""

    def __repr__(self) -> str:
        return f"Affinity({self._balancer!r}, timeout={self.timeout}, max_entries={self.max_entries})"
