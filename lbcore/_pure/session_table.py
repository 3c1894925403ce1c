"""The sticky-session table of Affinity, pure-Python twin (compiled:
lbcore/_fast/session_table.pyx): key hash -> endpoint index and last use, bounded, with
lazy expiry.  lbcore/_pure/affinity.py says what a session is.

The layout is the compiled twin's, slot for slot, because the eviction rule is stated
in it and both twins must evict alike:

- *Buckets of three slots.*  In C a bucket is one 64-byte cache line holding three
  sessions (key hash, last use, endpoint index) and an overflow count, so a hit costs
  one cache miss and no pointer chase.  A key's *home bucket* is Lemire's multiply-shift
  of the low 32 bits of its hash.  A new session takes the first free slot from its
  home bucket on, adding one to the overflow count of every full bucket it passes; a
  lookup moves past a bucket only while that count is not zero (Folly's F14 tables), so
  removing a session needs no tombstone and moves nothing.
- *Growth.*  At most two sessions per bucket on average: a table that would pass that
  is rebuilt, its expired sessions dropped, at twice the buckets unless the live
  sessions left fill at most half of it, up to room for ``max_entries`` (32 bytes per
  session in C when full).
- *Eviction.*  When ``max_entries`` sessions are held, a new session evicts the least
  recently used of the next 8 sessions in slot order after a hand that sweeps the table
  (ties to the first).  Exact LRU needs an order of last use, which every hit would have
  to relink: two more cache misses.  The window is Linux conntrack's ``early_drop``
  range (NF_CT_EVICTION_RANGE, 8 entries, "roughly LRU") and Redis's sampled LRU
  (``maxmemory-samples``); the hand makes it deterministic and lets it reach every
  session in turn.  With at most 8 sessions the window is all of them: exact LRU, ties
  to the first slot.
- *Expiry.*  A session is live while ``now - last_use < timeout`` (kube-proxy:
  ``int(age) < ttl``).  Expired sessions are reclaimed lazily, with no timer: a lookup
  that finds one drops it, a rebuild drops them all, and the eviction window takes the
  stalest first.
"""

from __future__ import annotations

__all__ = ["SessionTable"]

#: Sessions per bucket: in C, three sessions and the overflow count fill 64 bytes.
WAYS = 3
#: Sessions the eviction window looks at (Linux conntrack's NF_CT_EVICTION_RANGE).
EVICTION_RANGE = 8
#: Buckets of a new table (512 bytes in C); it grows as clients arrive.
INITIAL_BUCKETS = 8


class SessionTable:
    """Key hash -> (endpoint index, last use) in buckets of `WAYS` slots.

    Slot ``s`` is way ``s % WAYS`` of bucket ``s // WAYS``; ``_endpoint[s] == -1`` marks
    it empty.  `lookup` is O(1); `add` is amortized O(1).
    """

    __slots__ = ("_key", "_last_use", "_endpoint", "_overflow", "_count", "_hand",
                 "_most_buckets", "timeout", "max_entries")

    def __init__(self, timeout: int, max_entries: int) -> None:
        self.timeout = timeout
        self.max_entries = max_entries
        self._most_buckets = (max_entries + 1) // 2
        self._count = 0
        self._hand = 0
        self._allocate(min(INITIAL_BUCKETS, self._most_buckets))

    def _allocate(self, buckets: int) -> None:
        self._key = [0] * (WAYS * buckets)
        self._last_use = [0.0] * (WAYS * buckets)
        self._endpoint = [-1] * (WAYS * buckets)
        self._overflow = [0] * buckets

    def _home(self, key: int) -> int:
        return ((key & 0xFFFFFFFF) * len(self._overflow)) >> 32

    def _find(self, key: int) -> int:
        """The slot of ``key``'s session, or -1."""
        keys, endpoints, overflow = self._key, self._endpoint, self._overflow
        buckets = len(overflow)
        b = ((key & 0xFFFFFFFF) * buckets) >> 32  # _home, inlined: this is every pick's path
        while True:
            s = b * WAYS  # the three ways, unrolled
            if keys[s] == key and endpoints[s] >= 0:
                return s
            if keys[s + 1] == key and endpoints[s + 1] >= 0:
                return s + 1
            if keys[s + 2] == key and endpoints[s + 2] >= 0:
                return s + 2
            if not overflow[b]:
                return -1
            b = b + 1 if b + 1 < buckets else 0

    def lookup(self, key: int, now: float) -> int:
        """The endpoint index of the live session of ``key``, refreshed; -1 if none.  O(1).

        An expired session found here is dropped.
        """
        s = self._find(key)
        if s < 0:
            return -1
        if now - self._last_use[s] < self.timeout:
            self._last_use[s] = now
            return self._endpoint[s]
        self._remove(s)
        return -1

    def add(self, key: int, endpoint: int, now: float) -> None:
        """Store a new session for ``key`` (not in the table); amortized O(1).

        A full table first evicts (`_evict`); one at its load limit is rebuilt first.
        """
        if self._count >= self.max_entries:
            self._evict()
        elif self._count >= 2 * len(self._overflow):
            self._resize(now)
        self._place(key, endpoint, now)

    def retain(self, remap: list[int]) -> None:
        """Renumber every session's endpoint by ``remap``; drop those mapped to -1.  O(slots)."""
        endpoints = self._endpoint
        for s, endpoint in enumerate(endpoints):
            if endpoint >= 0:
                if remap[endpoint] < 0:
                    self._remove(s)
                else:
                    endpoints[s] = remap[endpoint]

    def by_last_use(self) -> list[tuple[int, int, float]]:
        """``(key hash, endpoint index, last use)`` of every session, stalest first (ties in slot order)."""
        slots = sorted((self._last_use[s], s) for s, e in enumerate(self._endpoint) if e >= 0)
        return [(self._key[s], self._endpoint[s], last_use) for last_use, s in slots]

    def _place(self, key: int, endpoint: int, last_use: float) -> None:
        buckets = len(self._overflow)
        b = self._home(key)
        while -1 not in self._endpoint[b * WAYS:b * WAYS + WAYS]:
            self._overflow[b] += 1
            b = b + 1 if b + 1 < buckets else 0
        s = self._endpoint.index(-1, b * WAYS, b * WAYS + WAYS)
        self._key[s] = key
        self._last_use[s] = last_use
        self._endpoint[s] = endpoint
        self._count += 1

    def _remove(self, s: int) -> None:
        buckets = len(self._overflow)
        self._endpoint[s] = -1
        self._count -= 1
        b = self._home(self._key[s])
        while b != s // WAYS:
            self._overflow[b] -= 1
            b = b + 1 if b + 1 < buckets else 0

    def _evict(self) -> None:
        """Drop the least recently used of the next `EVICTION_RANGE` sessions from the hand."""
        slots = len(self._endpoint)
        s = self._hand
        victim = -1
        for _ in range(min(EVICTION_RANGE, self._count)):
            while self._endpoint[s] < 0:
                s = s + 1 if s + 1 < slots else 0
            if victim < 0 or self._last_use[s] < self._last_use[victim]:
                victim = s
            s = s + 1 if s + 1 < slots else 0
        self._hand = s
        self._remove(victim)

    def _resize(self, now: float) -> None:
        """Rebuild without the expired sessions: twice the buckets (up to room for
        max_entries) unless those left fill at most half of the load limit."""
        live = [(self._key[s], e, self._last_use[s]) for s, e in enumerate(self._endpoint)
                if e >= 0 and now - self._last_use[s] < self.timeout]
        buckets = len(self._overflow)
        if len(live) + 1 > buckets:
            buckets = min(2 * buckets, self._most_buckets)
        self._allocate(buckets)
        self._count = 0
        self._hand = 0
        for key, endpoint, last_use in live:
            self._place(key, endpoint, last_use)

    def _check(self, alive: set[int]) -> None:
        """Assert the table's invariants; ``alive`` holds the pickable endpoint indices."""
        buckets = len(self._overflow)
        assert 1 <= buckets <= self._most_buckets and 2 * self._most_buckets >= self.max_entries
        assert len(self._key) == len(self._last_use) == len(self._endpoint) == WAYS * buckets
        occupied = [s for s, e in enumerate(self._endpoint) if e >= 0]
        assert len(occupied) == self._count <= min(self.max_entries, 2 * buckets)
        assert len({self._key[s] for s in occupied}) == self._count  # no key twice
        assert 0 <= self._hand < WAYS * buckets
        # Every session is found from its home bucket, and each overflow count is the
        # number of sessions stored past its bucket from a home at or before it.
        overflow = [0] * buckets
        for s in occupied:
            assert self._endpoint[s] in alive
            assert self._find(self._key[s]) == s
            b = self._home(self._key[s])
            while b != s // WAYS:
                overflow[b] += 1
                b = b + 1 if b + 1 < buckets else 0
        assert overflow == self._overflow
