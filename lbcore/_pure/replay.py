"""The simulator's event loop, pure-Python twin (compiled: lbcore/_fast/replay.pyx).

Balancers whose picks depend on time (lc, wlc and p2c count open connections, bounded
loads cap them, Affinity's sessions expire) are replayed one request at a time, in
the order a proxy would see them:

- requests pick in order of arrival (the trace's order at equal times);
- before a request picks, every connection that ended at or before its arrival is
  released, earliest end first (equal ends: the one that arrived first, first);
- ``run_until(t)`` stops before the first request arriving at or after ``t`` and
  releases what ended by ``t``: the caller changes the endpoints there (an event at
  ``t`` applies before the requests arriving at ``t``).

The pick is the balancer's own ``_pick_index`` with the key's `key_hash` (what
``pick(key)`` does inside), the release its ``release(endpoint)``.  ``placed[i]`` gets
the endpoint's id in the caller's numbering (``uid_of`` maps the balancer's endpoint
indices to it; ``endpoint_of`` maps it back to the Endpoint to release), or -1 when no
endpoint could take the request.
"""

from __future__ import annotations

from array import array
from typing import Any, Sequence

from .hashing import key_hash

__all__ = ["SimClock", "HeldReplay", "key_hashes"]


class SimClock:
    """The simulated time in seconds, as a clock for ``Affinity(clock=...)``."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


def key_hashes(keys: Sequence[Any]) -> array:
    """`lbcore.key_hash` of every key, as ``array('Q')``."""
    return array("Q", [key_hash(key) for key in keys])


class HeldReplay:
    """Replays requests through one balancer in time order (the module docstring says how).

    ``hashes`` holds the hash of each distinct key, ``key_ids[i]`` the key of request
    ``i``; ``arrivals`` and ``ends`` are seconds, ``end_order`` the request indices sorted
    by (end, index); ``placed`` receives the result.  ``clock``, if given, is set to each
    request's arrival before it picks.
    """

    __slots__ = ("balancer", "release", "clock", "hashes", "key_ids", "arrivals", "ends",
                 "end_order", "placed", "picked", "released", "universe")

    def __init__(self, balancer: Any, hashes: Any, key_ids: Any, arrivals: Any, ends: Any,
                 end_order: Any, placed: Any, clock: SimClock | None = None) -> None:
        if not hasattr(balancer, "_pick_index") or not callable(getattr(balancer, "release", None)):
            raise TypeError(f"HeldReplay of the pure twins needs a pure balancer, not {type(balancer).__name__}")
        if clock is not None and not isinstance(clock, SimClock):
            raise TypeError(f"clock must be a SimClock of the pure twin, not {type(clock).__name__}")
        self.balancer = balancer
        self.release = balancer.release
        self.clock = clock
        # Python lists: indexing a list is several times faster than a numpy array.
        self.hashes = [int(h) for h in hashes]
        self.key_ids = [int(k) for k in key_ids]
        self.arrivals = [float(a) for a in arrivals]
        self.ends = [float(e) for e in ends]
        self.end_order = [int(j) for j in end_order]
        self.placed = placed
        n = len(self.arrivals)
        if not len(self.key_ids) == len(self.ends) == len(self.end_order) == len(placed) == n:
            raise ValueError("key_ids, arrivals, ends, end_order and placed need one entry per request")
        for k, key in enumerate(self.key_ids):
            if not 0 <= key < len(self.hashes):
                raise IndexError(f"key_ids[{k}] = {key} is not an index into hashes")
        for k, j in enumerate(self.end_order):
            if not 0 <= j < n:
                raise IndexError(f"end_order[{k}] = {j} is not a request index")
        self.picked = 0
        self.released = 0
        self.universe = 0

    def run_until(self, time: float, uid_of: Any, endpoint_of: list) -> None:
        """Place every request arriving before ``time``; then release what ended by ``time``."""
        uids = [int(u) for u in uid_of]
        if len(endpoint_of) < self.universe:
            raise ValueError("endpoint_of lost entries: connections placed earlier need theirs")
        self.universe = len(endpoint_of)
        for k, uid in enumerate(uids):
            if not 0 <= uid < len(endpoint_of):
                raise IndexError(f"uid_of[{k}] = {uid} is not an index into endpoint_of")
        arrivals, key_ids, hashes, placed = self.arrivals, self.key_ids, self.hashes, self.placed
        pick_index = self.balancer._pick_index
        clock = self.clock
        n = len(arrivals)
        while self.picked < n and arrivals[self.picked] < time:
            i = self.picked
            arrival = arrivals[i]
            self._release_until(arrival, endpoint_of)
            if clock is not None:
                clock.now = arrival
            index = pick_index(hashes[key_ids[i]])
            if index >= len(uids):
                raise IndexError(f"endpoint index {index} has no entry in uid_of")
            placed[i] = uids[index] if index >= 0 else -1
            self.picked = i + 1
        self._release_until(time, endpoint_of)

    def _release_until(self, time: float, endpoint_of: list) -> None:
        # Sorted by (end, request): the first entry not yet placed, or ending after
        # time, stops the walk (one not placed ends at its own arrival, which is >= time).
        end_order, ends, placed, release = self.end_order, self.ends, self.placed, self.release
        while self.released < self.picked:
            j = end_order[self.released]
            if j >= self.picked or ends[j] > time:
                return
            self.released += 1
            uid = placed[j]
            if uid >= 0:
                release(endpoint_of[uid])
