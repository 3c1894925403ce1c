"""The figures of one replay: load over time, imbalance, keys moved, affinity hits.

Everything is counted from the trace and the endpoint each request got (``placed``):

- **active connections** of each endpoint at each sample time ``s``: the requests it
  got with ``arrival <= s < arrival + duration``;
- **imbalance** at a sample: the busiest endpoint's load over the mean load, among the
  endpoints taking new connections then, a load being active connections per unit of
  weight (1.0 is perfect).  It is left out (None) at samples where those endpoints hold
  fewer connections than there are endpoints: with under one connection each on
  average, whole counts make any spread look extreme (the ramp at the start);
- **keys moved** by an event at ``t``: among the keys asked for both in the phase before
  ``t`` and in the phase after (the *live* keys), those whose first request after ``t``
  went to another endpoint than their last request before it; where they came from and
  where they went.  With affinity, the **sessions** moved are the live keys whose two
  requests lie less than the timeout apart (their session was alive across ``t``);
- **affinity hit rate**: the share of requests that came back to their key's previous
  endpoint less than the timeout after the key's previous request, i.e. that a live
  session served.  (A session evicted for room, or one that died while its endpoint
  failed and recovered in between, would count as a hit if the balancer picked the
  same endpoint again; the session table's default room is 2**18 keys.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models import usable_endpoints
from .events import Timeline
from .traffic import Traffic

__all__ = ["Shared", "measure", "SAMPLES"]

#: Sample times per run, evenly spread from the first arrival to the last.
SAMPLES = 200


def _last_and_first(key_ids: np.ndarray, before: tuple[int, int], after: tuple[int, int], keys: int) -> tuple[np.ndarray, np.ndarray]:
    """For keys asked for in both ranges: the last request in ``before``, the first in ``after``."""
    last = np.full(keys, -1, dtype=np.int64)
    np.maximum.at(last, key_ids[before[0]:before[1]], np.arange(before[0], before[1]))
    first = np.full(keys, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, key_ids[after[0]:after[1]], np.arange(after[0], after[1]))
    live = (last >= 0) & (first < np.iinfo(np.int64).max)
    return last[live], first[live]


class Shared:
    """What the figures of every scheduler share for one traffic and timeline.

    Sample times, each request's first and past-the-last sample, which endpoints take
    new connections (and their weights) at each sample, the live keys of each event,
    and (for affinity) each request's previous request with the same key.
    """

    def __init__(self, traffic: Traffic, timeline: Timeline, bounds: list[int], *, affinity: bool) -> None:
        arrivals = traffic.arrivals
        self.samples = np.linspace(arrivals[0], arrivals[-1], SAMPLES)
        self.first_sample = np.searchsorted(self.samples, arrivals, side="left").astype(np.int64)
        self.end_sample = np.searchsorted(self.samples, traffic.ends, side="left").astype(np.int64)
        addresses = timeline.addresses
        ids = {address: uid for uid, address in enumerate(addresses)}
        starts = np.array([phase.start for phase in timeline.phases])
        phase_of_sample = np.searchsorted(starts, self.samples, side="right") - 1
        # weights[j, u]: endpoint u's weight at sample j if it takes new connections, else 0.
        phase_weights = np.zeros((len(timeline.phases), len(addresses)))
        for p, phase in enumerate(timeline.phases):
            usable = {e.address for e in usable_endpoints(phase.endpoints)}
            for e in phase.endpoints:
                if e.address in usable and e.address not in phase.failed:
                    phase_weights[p, ids[e.address]] = e.weight
        #: Per phase: the weight of each endpoint taking new connections, else 0.
        self.phase_weights = phase_weights
        self.weights = phase_weights[phase_of_sample]
        keys = len(traffic.keys)
        self.events = [
            _last_and_first(traffic.key_ids, (bounds[p - 1], bounds[p]), (bounds[p], bounds[p + 1]), keys)
            for p in range(1, len(timeline.phases))
        ]
        self.previous = None
        if affinity:
            order = np.argsort(traffic.key_ids, kind="stable")
            same = traffic.key_ids[order[1:]] == traffic.key_ids[order[:-1]]
            self.previous = np.full(len(traffic), -1, dtype=np.int64)
            self.previous[order[1:]] = np.where(same, order[:-1], -1)


def _by_address(counts: np.ndarray, addresses: list[str]) -> dict[str, int]:
    """Non-zero counts by endpoint address, largest first."""
    order = np.argsort(-counts, kind="stable")
    return {addresses[u]: int(counts[u]) for u in order if counts[u]}


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def measure(placed: np.ndarray, traffic: Traffic, timeline: Timeline, shared: Shared, affinity_timeout: int | None) -> dict[str, Any]:
    """The figures of one replay (the module docstring defines each); O(requests)."""
    addresses = timeline.addresses
    endpoints, samples = len(addresses), len(shared.samples)
    taken = placed >= 0
    uids = placed[taken].astype(np.int64)
    requests = np.bincount(uids, minlength=endpoints)
    sizes = None if traffic.sizes is None else np.bincount(uids, weights=traffic.sizes[taken], minlength=endpoints)
    # Active connections: +1 at a request's first sample, -1 past its last, summed along time.
    width = samples + 1
    delta = np.bincount(uids * width + shared.first_sample[taken], minlength=endpoints * width)
    delta -= np.bincount(uids * width + shared.end_sample[taken], minlength=endpoints * width)
    active = np.cumsum(delta.reshape(endpoints, width), axis=1)[:, :samples]
    weights = shared.weights  # (samples, endpoints)
    taking = weights > 0
    load = np.where(taking, active.T / np.where(taking, weights, 1), 0.0)
    total = np.where(taking, active.T, 0).sum(axis=1)
    measured = (total >= taking.sum(axis=1)) & taking.any(axis=1)
    ratio = load.max(axis=1) / np.where(measured, total / weights.sum(axis=1), 1)
    imbalance = [float(r) if ok else None for r, ok in zip(ratio, measured)]
    defined = [value for value in imbalance if value is not None]
    events = []
    for event, (last, first) in zip(timeline.events, shared.events):
        before, after = placed[last], placed[first]
        both = (before >= 0) & (after >= 0)
        moved = both & (before != after)
        figures: dict[str, Any] = {
            "time": event.time,
            "event": str(event),
            "live_keys": int(both.sum()),
            "moved_keys": int(moved.sum()),
            "moved_share": _share(int(moved.sum()), int(both.sum())),
            "from": _by_address(np.bincount(before[moved], minlength=endpoints), addresses),
            "to": _by_address(np.bincount(after[moved], minlength=endpoints), addresses),
        }
        if affinity_timeout is not None:
            alive = both & (traffic.arrivals[first] - traffic.arrivals[last] < affinity_timeout)
            figures["live_sessions"] = int(alive.sum())
            figures["moved_sessions"] = int((alive & moved).sum())
            figures["moved_sessions_share"] = _share(int((alive & moved).sum()), int(alive.sum()))
        events.append(figures)
    hit_rate = None
    if affinity_timeout is not None and shared.previous is not None:
        previous = shared.previous
        has = previous >= 0
        back = np.zeros(len(placed), dtype=bool)
        back[has] = (
            (traffic.arrivals[has] - traffic.arrivals[previous[has]] < affinity_timeout)
            & (placed[has] == placed[previous[has]])
            & taken[has]
        )
        hit_rate = float(back.sum() / len(placed))
    return {
        "refused": int((~taken).sum()),
        "requests": requests.tolist(),
        "bytes": None if sizes is None else sizes.astype(np.int64).tolist(),
        "active": active.tolist(),
        "imbalance": {
            "peak": max(defined) if defined else None,
            "mean": float(np.mean(defined)) if defined else None,
            "series": imbalance,
        },
        "events": events,
        "affinity_hit_rate": hit_rate,
    }
