"""The change tracker: snapshots of every source → the full current set of Services, and
what changed since the last sync (kube-proxy's ServiceChangeTracker and
EndpointsChangeTracker, over whole Services).

Each source sends its full set (`lbcore.sources.live.Snapshot`); the tracker keeps the
latest of each and merges them.  Sources are listed in precedence order: a Service whose
name, or whose protocol + VIP + port, an earlier source already has is left out and
reported, as is one the data plane cannot carry (the sink's ``refuse``).  The rest is
the current set.

A change is a Service name whose merged Service was added, removed or altered.  Each is
*pending* until a sync carries it to the kernel, with the time its first unsynced change
was seen (the snapshot's ``changed_at``): that time is where
``network_programming_duration_seconds`` starts.  A change is counted as an endpoint
change when only the endpoints differ, else as a service change, as kube-proxy counts
EndpointSlice and Service changes apart.
"""

from __future__ import annotations

import itertools
import operator
from typing import Callable, Sequence

from ..models import Service
from ..sources.live import Snapshot

__all__ = ["ChangeTracker", "Pending"]

#: name -> (when its first unsynced change was seen, "service" or "endpoint")
Pending = dict[str, tuple[float, str]]


_name = operator.attrgetter("name")
_address = operator.attrgetter("protocol", "vip", "port")


def _same_but_endpoints(a: Service, b: Service) -> bool:
    return (a.vip, a.port, a.protocol, a.scheduler, a.affinity_timeout, a.listen,
            a.sched_flags, a.max_connections) == (
            b.vip, b.port, b.protocol, b.scheduler, b.affinity_timeout, b.listen,
            b.sched_flags, b.max_connections)


class ChangeTracker:
    """The merged current set of ``sources`` and the changes not yet synced.

    >>> from lbcore import Endpoint, Service
    >>> tracker = ChangeTracker(["a.yaml"])
    >>> web = Service("web", "10.96.0.10", 80, endpoints=[Endpoint("10.1.0.5", 80)])
    >>> tracker.update(Snapshot("a.yaml", (web,), (), changed_at=5.0))
    True
    >>> tracker.ready, [s.name for s in tracker.services()], tracker.pending
    (True, ['web'], {'web': (5.0, 'service')})
    """

    def __init__(self, sources: Sequence[str], refuse: Callable[[Service], str | None] = lambda s: None):
        if len(set(sources)) != len(sources):
            raise ValueError(f"a source is listed twice: {list(sources)}")
        self._sources = tuple(sources)
        self._refuse = refuse
        self._latest: dict[str, Snapshot] = {}
        self._current: dict[str, Service] = {}
        self._services: tuple[Service, ...] = ()
        self._problems: tuple[str, ...] = ()
        #: changes seen and not yet handed to a sync
        self.pending: Pending = {}
        #: changes counted since the start: {"service": n, "endpoint": n}
        self.total = {"service": 0, "endpoint": 0}

    @property
    def ready(self) -> bool:
        """Whether every source has sent its first full set."""
        return len(self._latest) == len(self._sources)

    def services(self) -> tuple[Service, ...]:
        """The current set, sorted by name; O(1) (built by `update`)."""
        return self._services

    def problems(self) -> tuple[str, ...]:
        """Every problem line: each source's own, then what the merge left out."""
        return self._problems

    def update(self, snapshot: Snapshot) -> bool:
        """Take a source's new full set; True if the current set changed.  O(services)."""
        if snapshot.source not in self._sources:
            raise ValueError(f"unknown source {snapshot.source!r}; known: {list(self._sources)}")
        self._latest[snapshot.source] = snapshot
        merged, problems = self._merge()
        self._problems = problems
        old = self._current
        # Sources keep the objects of the Services that did not change: find the new
        # objects in C (by identity), then compare only those with what they replace.
        now = dict(zip(map(id, merged.values()), merged))
        fresh = [now[i] for i in now.keys() - set(map(id, old.values()))]
        changed = False
        for name in fresh:
            before, service = old.get(name), merged[name]
            if before != service:
                kind = "endpoint" if before is not None and _same_but_endpoints(before, service) else "service"
                self._note(name, snapshot.changed_at, kind)
                changed = True
        for name in old.keys() - merged.keys():
            self._note(name, snapshot.changed_at, "service")
            changed = True
        self._current = merged
        self._services = tuple(merged.values())
        return changed

    def note(self, name: str, seen: float, kind: str) -> None:
        """Something outside the sources changed ``name`` (its endpoints' health)."""
        if name in self._current:
            self._note(name, seen, kind)

    def _note(self, name: str, seen: float, kind: str) -> None:
        self.total[kind] += 1
        first = self.pending.get(name)
        if first is None:
            self.pending[name] = (seen, kind)
        elif kind == "service" and first[1] != "service":
            self.pending[name] = (first[0], kind)

    def _merge(self) -> tuple[dict[str, Service], tuple[str, ...]]:
        merged: dict[str, Service] = {}
        owner: dict[str, str] = {}
        addresses: dict[tuple[str, str, int], str] = {}  # -> the name that has it
        problems: list[str] = []
        for source in self._sources:
            snapshot = self._latest.get(source)
            if snapshot is None:
                continue
            problems.extend(snapshot.problems)
            services = snapshot.services
            names = list(map(_name, services))
            keys = list(map(_address, services))
            refused = [(s, r) for s in services if (r := self._refuse(s)) is not None]
            if (not refused and owner.keys().isdisjoint(names) and addresses.keys().isdisjoint(keys)
                    and len(set(names)) == len(names) and len(set(keys)) == len(keys)):
                # No clash and nothing refused, as almost always: the whole set at C speed.
                merged.update(zip(names, services))
                owner.update(zip(names, itertools.repeat(source)))
                addresses.update(zip(keys, names))
                continue
            reasons = {id(s): r for s, r in refused}
            for service, name, address in zip(services, names, keys):
                if name in owner:
                    problems.append(
                        f"{source}: {name}: name: {name!r} is also a service of {owner[name]}; "
                        "the source listed first keeps it"
                    )
                elif address in addresses:
                    other = addresses[address]
                    problems.append(
                        f"{source}: {name}: port: {service.protocol} {service.address} is also "
                        f"service {other!r} of {owner[other]}'s; the source listed first keeps it"
                    )
                elif id(service) in reasons:
                    problems.append(f"{source}: {name}: {reasons[id(service)]}")
                else:
                    merged[name] = service
                    owner[name] = source
                    addresses[address] = name
        return dict(sorted(merged.items())), tuple(problems)

    def take(self) -> Pending:
        """Hand the pending changes to a sync; changes seen from now on are new ones."""
        taken, self.pending = self.pending, {}
        return taken

    def give_back(self, taken: Pending) -> None:
        """A sync failed: its changes are pending again, with their first-seen times."""
        for name, (seen, kind) in taken.items():
            later = self.pending.get(name)
            if later is not None and later[1] == "service":
                kind = "service"
            self.pending[name] = (seen, kind)  # taken ones were seen before any later one

    def oldest_pending(self) -> float | None:
        """When the oldest pending change was first seen, or None."""
        return min((seen for seen, _ in self.pending.values()), default=None)
