"""Replaying traffic through one balancer: which endpoint each request gets.

The balancer is the library's own (`SchedulerSpec.build`, by `lbcore.make_balancer`),
changed at each event through its public face (``update``, ``mark_failed``,
``mark_healthy``), and its picks are its own: ``pick_many`` in batches where the picks
depend on the key or on the order of picks alone, else its C-level pick one request at
a time in time order with each connection released when it ends (`HeldReplay`: the
twin of lbcore/_fast/replay.pyx and lbcore/_pure/replay.py that lbcore._twins selects,
the same as the balancers').
tests/test_simulate_replay.py holds every path to the balancers driven one call at a
time.

The result, ``placed[i]``, is the id of request ``i``'s endpoint in the timeline's
numbering (`Timeline.addresses`), or -1 when no endpoint could take it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .._twins import twin
from ..errors import NoEndpointsError
from .events import Phase, Timeline
from .schedulers import SchedulerSpec
from .traffic import Traffic

# The compiled loop calls the compiled balancers' C-level pick, which the pure ones do
# not have: lbcore._twins selects both twins together.
HeldReplay = twin("replay").HeldReplay
SimClock = twin("replay").SimClock
key_hashes = twin("replay").key_hashes

__all__ = ["Prepared", "replay", "HeldReplay", "SimClock", "key_hashes"]


class Prepared:
    """What every scheduler's replay of one traffic shares, computed once.

    ``bounds[p]`` is the first request of phase ``p`` (those arriving at or after its
    start).  With ``held`` (some scheduler is replayed one request at a time), also
    ``hashes``, each distinct key's `key_hash`, and ``end_order``, the requests by end
    time, then index; else both are None.
    """

    def __init__(self, traffic: Traffic, timeline: Timeline, *, held: bool = True) -> None:
        self.traffic = traffic
        self.timeline = timeline
        starts = [phase.start for phase in timeline.phases[1:]]
        self.bounds = [0, *np.searchsorted(traffic.arrivals, starts, side="left").tolist(), len(traffic)]
        self.ends = traffic.ends
        self.hashes: np.ndarray | None = None
        self.end_order: np.ndarray | None = None
        if held:
            keys = traffic.keys
            self.hashes = np.frombuffer(key_hashes(keys.tolist() if isinstance(keys, np.ndarray) else keys),
                                        dtype=np.uint64)
            self.end_order = np.argsort(self.ends, kind="stable").astype(np.int64)


def _apply(balancer: Any, phase: Phase) -> None:
    """Bring the balancer to ``phase`` through its public face."""
    event = phase.event
    if event is None:
        return
    if event.kind in ("remove", "add", "weight"):
        balancer.update(phase.endpoints)
        return
    endpoint = next(e for e in phase.endpoints if e.address == event.address)
    if event.kind == "fail":
        balancer.mark_failed(endpoint)
    else:
        balancer.mark_healthy(endpoint)


def replay(
    spec: SchedulerSpec,
    prepared: Prepared,
    *,
    seed: int,
    affinity_timeout: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``placed``: request ``i``'s endpoint id, or -1; O(requests) for every path.

    ``progress``, if given, is called once the balancer is built and after each phase,
    with the number of requests placed so far.
    """
    traffic, timeline = prepared.traffic, prepared.timeline
    ids = {address: uid for uid, address in enumerate(timeline.addresses)}
    clock = SimClock() if spec.affinity else None
    phases = timeline.phases
    balancer = spec.build(phases[0].endpoints, seed, affinity_timeout, clock)
    if progress is not None:
        progress(0)
    placed = np.empty(len(traffic), dtype=np.int32)
    held = None
    if spec.replay == "held":
        if prepared.hashes is None:
            raise ValueError(f"{spec.name} is replayed in time order: prepare with Prepared(..., held=True)")
        held = HeldReplay(balancer, prepared.hashes, traffic.key_ids, traffic.arrivals, prepared.ends,
                          prepared.end_order, placed, clock)
    endpoint_of: list = [None] * len(ids)
    keys = traffic.keys
    for p, phase in enumerate(phases):
        _apply(balancer, phase)
        current = balancer.endpoints
        uid_of = np.array([ids[e.address] for e in current], dtype=np.int32)
        for e in current:
            endpoint_of[ids[e.address]] = e
        start, stop = prepared.bounds[p], prepared.bounds[p + 1]
        if held is not None:
            held.run_until(phases[p + 1].start if p + 1 < len(phases) else math.inf, uid_of, endpoint_of)
        elif stop > start:
            try:
                if spec.replay == "key":
                    table = uid_of[np.frombuffer(balancer.pick_many(keys), dtype=np.int32)]
                    placed[start:stop] = table[traffic.key_ids[start:stop]]
                else:  # sequence: the keys do not matter, only how many picks
                    picks = balancer.pick_many(np.zeros(stop - start, dtype=np.uint64))
                    placed[start:stop] = uid_of[np.frombuffer(picks, dtype=np.int32)]
            except NoEndpointsError:  # nothing pickable in this phase: every request refused
                placed[start:stop] = -1
        if progress is not None:
            progress(stop)
    return placed
