"""The sticky-session table of Affinity, pure-Python twin (compiled:
lbcore/_fast/session_table.pyx): key hash -> endpoint index and last use, in order of
last use, bounded, with lazy expiry.  lbcore/_pure/affinity.py says what a session is.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["SessionTable"]


class SessionTable:
    """Key hash -> [endpoint index, last use], in order of last use (stalest first).

    An OrderedDict: a hit moves its session to the end, eviction pops the front.  A
    session is live while ``now - last_use < timeout`` (kube-proxy: ``int(age) < ttl``).
    """

    __slots__ = ("_sessions", "timeout", "max_entries", "_reclaimed_at")

    def __init__(self, timeout: int, max_entries: int) -> None:
        self._sessions: OrderedDict[int, list] = OrderedDict()
        self.timeout = timeout
        self.max_entries = max_entries
        # When add() last dropped the expired sessions: every session left was live then.
        self._reclaimed_at = -math.inf

    def lookup(self, key: int, now: float) -> int:
        """The endpoint index of the live session of ``key``, refreshed; -1 if none.  O(1).

        An expired session found here is dropped.
        """
        session = self._sessions.get(key)
        if session is None:
            return -1
        if now - session[1] < self.timeout:
            session[1] = now
            self._sessions.move_to_end(key)
            return session[0]
        del self._sessions[key]
        return -1

    def add(self, key: int, endpoint: int, now: float) -> None:
        """Store a new session for ``key`` (not in the table); amortized O(1).

        First the expired sessions at the stale end are dropped (the order is by last
        use, so the first live one ends the walk), then, if the table is still full,
        the least recently used session is evicted.
        """
        sessions = self._sessions
        while sessions and now - next(iter(sessions.values()))[1] >= self.timeout:
            sessions.popitem(last=False)
        self._reclaimed_at = now
        if len(sessions) >= self.max_entries:
            sessions.popitem(last=False)
        sessions[key] = [endpoint, now]

    def retain(self, remap: list[int]) -> None:
        """Renumber every session's endpoint by ``remap``; drop those mapped to -1.  O(n)."""
        for key, session in list(self._sessions.items()):
            index = remap[session[0]]
            if index < 0:
                del self._sessions[key]
            else:
                session[0] = index

    def by_last_use(self) -> list[tuple[int, int, float]]:
        """``(key hash, endpoint index, last use)`` of every session, stalest first."""
        return [(key, endpoint, last_use) for key, (endpoint, last_use) in self._sessions.items()]

    def _check(self, alive: set[int]) -> None:
        """Assert the table's invariants; ``alive`` holds the pickable endpoint indices."""
        assert len(self._sessions) <= self.max_entries
        previous = -math.inf
        for endpoint, last_use in self._sessions.values():
            assert endpoint in alive
            assert last_use >= previous  # stalest first (the clock never goes back)
            assert self._reclaimed_at - last_use < self.timeout  # only lazily unreclaimed
            previous = last_use
