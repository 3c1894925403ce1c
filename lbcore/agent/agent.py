"""The node agent: sources → change tracker → bounded-frequency runner → sink, with
kube-proxy's semantics (reference/nodes-and-fleets.md §3).

- Nothing is applied before every source has sent its first full set: the kernel keeps
  whatever it carries until the agent knows what it should carry.
- The first sync is full: the sink reads back what lbcore owns in the kernel and
  removes what the current set does not have (stale rules from an earlier run).
- After that a sync is partial (only what changed since the last successful sync),
  except that it is full after any failure (the kernel may hold part of a failed
  apply) and once per ``sync_period``.
- A failed sync keeps its changes pending and is retried with backoff (`runner`).
- Active health (`lbcore.health`): for the kernel's data planes the agent checks the
  endpoints of every Service that has a ``health_check`` and carries an unhealthy one at
  weight 0 (`inhibit_unhealthy`); a change of health is a pending endpoint change like
  any other.  The forward sink leaves the checks to the forwarder, which runs its own.
- Health, as kube-proxy's ``/healthz``: unhealthy while a change has waited longer than
  2 × ``sync_period``.  lbcore counts two more things as waiting: the first sync while
  it has not happened, and a source out of contact (changes may be waiting behind it
  that the agent cannot see) from the moment contact was lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Callable, Sequence

from ..errors import LbcoreError
from ..health import EndpointHealth, HealthMonitor, inhibit_unhealthy
from ..http_server import Reply
from ..models import Endpoint, Service
from ..sources.live import LiveSource, Snapshot
from .metrics import AgentMetrics
from .runner import BoundedFrequencyRunner
from .sinks import Sink
from .tracker import ChangeTracker, Pending

__all__ = ["Agent", "DEFAULT_MIN_SYNC_PERIOD", "DEFAULT_SYNC_PERIOD"]

log = logging.getLogger("lbcore.agent")

DEFAULT_MIN_SYNC_PERIOD = 1.0
DEFAULT_SYNC_PERIOD = 3600.0
#: How often a source's ``connected`` is looked at, in seconds.
CONTACT_CHECK = 1.0


class Agent:
    """Keep ``sink`` carrying the Services of ``sources``.

    ``clock`` is monotonic seconds (the tracker's, the runner's and the sources'
    ``changed_at``); ``wall_clock`` gives the Unix timestamps of the metrics.
    """

    def __init__(
        self,
        sources: Sequence[LiveSource],
        sink: Sink,
        *,
        min_sync_period: float = DEFAULT_MIN_SYNC_PERIOD,
        sync_period: float = DEFAULT_SYNC_PERIOD,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = tuple(sources)
        self.sink = sink
        self.sync_period = sync_period
        self._clock = clock
        self._wall_clock = wall_clock
        self.tracker = ChangeTracker([s.source for s in self.sources], sink.refuse)
        self.runner = BoundedFrequencyRunner(
            min_interval=min_sync_period, max_interval=sync_period, clock=clock
        )
        self.metrics = AgentMetrics()
        #: the active checks, for a sink that does not run its own (the forwarder does)
        self.checks = None if sink.mode == "forward" else HealthMonitor(on_change=self._health_changed)
        self._wake = asyncio.Event()
        #: what the last successful sync applied; None: the next sync is full
        self.applied: tuple[Service, ...] | None = None
        self._last_full = clock()
        self._started_at = clock()
        self._out_of_contact: dict[str, float] = {}
        self._problems: tuple[str, ...] = ()
        self._notes: dict[str, tuple[str, ...]] = {}
        self.syncs = {"full": 0, "partial": 0}
        self._counted = {"service": 0, "endpoint": 0}
        self._applying: asyncio.Future | None = None
        self._last_synced_at = 0.0  # Unix time

    # -- sources ------------------------------------------------------------------------

    def receive(self, snapshot: Snapshot) -> None:
        """A source sent its full set: track the changes and ask for a sync if any."""
        self._out_of_contact.pop(snapshot.source, None)
        changed = self.tracker.update(snapshot)
        problems = self.tracker.problems()
        if problems != self._problems:
            for line in sorted(set(problems) - set(self._problems)):
                log.warning("left out: %s", line)
            self._problems = problems
        notes = snapshot.notes
        if notes != self._notes.get(snapshot.source, ()):
            for line in sorted(set(notes) - set(self._notes.get(snapshot.source, ()))):
                log.info("skipped on purpose: %s", line)  # headless Services and the like
            self._notes[snapshot.source] = notes
        self.metrics.services.set(len(self.tracker.services()))
        self.metrics.problems.set(len(problems))
        if changed or self.applied is None:
            self.metrics.last_queued.set(self._wall_clock())
            self._count_changes()
            if self.tracker.ready:
                self.runner.request()
                self._wake.set()

    def _count_changes(self) -> None:
        for kind, counter in self.metrics.total.items():
            counter.inc(self.tracker.total[kind] - self._counted[kind])
            self._counted[kind] = self.tracker.total[kind]
        pending = self.tracker.pending
        for kind, gauge in self.metrics.pending.items():
            gauge.set(sum(1 for _, k in pending.values() if k == kind))

    def _health_changed(self, name: str, endpoint: Endpoint, state: EndpointHealth) -> None:
        """An endpoint's health moved: its Service is to be synced again."""
        log.info("%s: %s is %s (%s)", name, endpoint.address,
                 "healthy" if state.healthy else "unhealthy", state.why or "checked")
        self.tracker.note(name, self._clock(), "endpoint")
        self.metrics.last_queued.set(self._wall_clock())
        self._count_changes()
        self.runner.request()
        self._wake.set()

    def check_contact(self) -> None:
        """Note each source's contact: since when it has been out of touch, if it is."""
        now = self._clock()
        for source in self.sources:
            connected = getattr(source, "connected", True)
            self.metrics.connected.labels(source.source).set(1 if connected else 0)
            if connected:
                self._out_of_contact.pop(source.source, None)
            else:
                self._out_of_contact.setdefault(source.source, now)

    async def _watch(self, source: LiveSource) -> None:
        async for snapshot in source.watch():
            self.receive(snapshot)

    async def _watch_contact(self) -> None:
        while True:
            self.check_contact()
            await asyncio.sleep(CONTACT_CHECK)

    # -- syncing --------------------------------------------------------------------------

    async def sync(self) -> bool:
        """One sync now: full or partial as due; True when it succeeded."""
        if not self.tracker.ready:
            return True  # nothing is known yet: leave the kernel as it is
        full = self.applied is None or self._clock() - self._last_full >= self.sync_period
        kind = "full" if full else "partial"
        services = self.tracker.services()
        if self.checks is not None:
            self.checks.update(services)
            services = tuple(inhibit_unhealthy(services, self.checks.checkers))
        taken = self.tracker.take()
        start = self._clock()
        try:
            # Shielded: an agent stopped mid-sync lets the kernel tool finish (`run`).
            self._applying = asyncio.ensure_future(self.sink.apply(None if full else self.applied, services))
            await asyncio.shield(self._applying)
        except Exception as exc:
            self.tracker.give_back(taken)
            self.applied = None
            self.metrics.failures.labels(kind).inc()
            # A kernel tool's or the input's failure is one line; anything else is a bug.
            log.error("%s sync failed; a full sync follows: %s", kind, exc,
                      exc_info=not isinstance(exc, LbcoreError))
            return False
        end = self._clock()
        self.applied = services
        if full:
            self._last_full = start
        self.syncs[kind] += 1
        elapsed = end - start
        self.metrics.sync_duration.observe(elapsed)
        (self.metrics.full_sync_duration if full else self.metrics.partial_sync_duration).observe(elapsed)
        self._last_synced_at = self._wall_clock()
        self.metrics.last_synced.set(self._last_synced_at)
        self._count_changes()
        self._programmed(taken, end)
        # Every full sync is worth a line; partial ones come as often as changes do.
        log.log(logging.INFO if full else logging.DEBUG, "%s sync: %d services, %d changed, %.3f s",
                kind, len(services), len(taken), elapsed)
        return True

    def _programmed(self, taken: Pending, end: float) -> None:
        for name, (seen, _) in taken.items():
            latency = max(0.0, end - seen)
            self.metrics.network_programming.observe(latency)
            log.debug("network programming %s %.3f s", name, latency)

    async def run(self) -> None:
        """Watch every source and sync, until cancelled."""
        if self.checks is not None:
            self.checks.start()
        tasks = [asyncio.create_task(self._watch(source)) for source in self.sources]
        tasks.append(asyncio.create_task(self._watch_contact()))
        tasks.append(asyncio.create_task(self.runner.run_forever(self.sync, self._wake)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a source's watch ended by an error: the agent stops with it
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._applying is not None:  # a sync cut short: its apply ends first
                await asyncio.gather(self._applying, return_exceptions=True)
            if self.checks is not None:
                await self.checks.stop()

    # -- health ---------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        """(healthy, why): unhealthy when something has waited longer than 2 × sync_period."""
        now = self._clock()
        limit = 2 * self.sync_period
        waiting: list[tuple[float, str]] = []
        oldest = self.tracker.oldest_pending()
        if oldest is not None:
            waiting.append((oldest, f"{len(self.tracker.pending)} change(s) not synced"))
        if self.applied is None and not self.syncs["full"]:
            waiting.append((self._started_at, "no sync yet"))
        for source, since in self._out_of_contact.items():
            waiting.append((since, f"source {source} out of contact"))
        overdue = sorted((since, what) for since, what in waiting if now - since > limit)
        if overdue:
            since, what = overdue[0]
            return False, f"{what} for {now - since:.0f} s, longer than 2 x sync period ({limit:g} s)"
        return True, "ok"

    def healthz(self) -> Reply:
        """``/healthz``: 200 or 503 with a JSON body saying why (kube-proxy's fields)."""
        self.check_contact()
        healthy, why = self.health()
        code = 200 if healthy else 503
        self.metrics.healthz.labels(str(code)).inc()
        body = {
            "lastUpdated": self._last_synced_at,
            "currentTime": self._wall_clock(),
            "healthy": healthy,
            "reason": why,
        }
        return Reply(code, json.dumps(body) + "\n", "application/json")

    def livez(self) -> Reply:
        """``/livez``: the process answers (kube-proxy's skips the node checks too)."""
        self.metrics.livez.labels("200").inc()
        return Reply(200, "ok\n")
