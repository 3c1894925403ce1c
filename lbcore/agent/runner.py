"""When to sync: kube-proxy's BoundedFrequencyRunner (``pkg/util/async``), as a small
state machine on an injected clock, plus the asyncio loop that drives it.

- `request` asks for a sync as soon as allowed; requests made before it starts are
  coalesced into one.
- Syncs start at most ``burst`` at once and then one per ``min_interval``: a token
  bucket of ``burst`` tokens refilled at one per ``min_interval`` (kube-proxy's
  iptables proxier: ``minSyncPeriod``, burst 2).  ``min_interval`` 0 means no limit.
- A sync starts at least once per ``max_interval`` even with no request (kube-proxy's
  periodic resync; its nftables mode waits an hour).
- After a failed sync another is due after a backoff: 1 s, doubling per failure in a
  row, at most `RETRY_MAX` (kube-proxy retries after its ``syncPeriod``, 30 s by
  default); a successful sync ends it.  The retry, like the periodic sync, also waits for
  a token.

The state machine never sleeps: `next_run` says when the next sync is due, `started`
and `finished` record one.  Tests drive it with a fake clock; `run_forever` waits on
the event loop.
"""

from __future__ import annotations

import asyncio
import math
from typing import Awaitable, Callable

__all__ = ["BoundedFrequencyRunner", "RETRY_MIN", "RETRY_MAX"]

RETRY_MIN = 1.0
RETRY_MAX = 30.0


class BoundedFrequencyRunner:
    """Decides when a sync may start.

    >>> now = [0.0]
    >>> runner = BoundedFrequencyRunner(min_interval=1.0, max_interval=3600, clock=lambda: now[0])
    >>> runner.request(); runner.next_run()
    0.0
    >>> runner.started(); runner.finished(ok=True); runner.request(); runner.started()
    >>> runner.finished(ok=True); runner.request(); runner.next_run()  # burst of 2 spent
    1.0
    """

    def __init__(
        self,
        *,
        min_interval: float,
        max_interval: float,
        burst: int = 2,
        clock: Callable[[], float],
    ) -> None:
        if not 0 <= min_interval <= max_interval:
            raise ValueError(f"need 0 <= min_interval <= max_interval, not {min_interval}, {max_interval}")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._refilled = clock()
        self._last_start = clock()
        self._requested = False
        self._retry_at: float | None = None
        self.failures = 0  # failed syncs in a row

    def request(self) -> None:
        """Ask for a sync as soon as the bucket allows (kube-proxy ``Run()``)."""
        self._requested = True

    def _refill(self, now: float) -> None:
        if self.min_interval > 0:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled) / self.min_interval)
        self._refilled = now

    def next_run(self) -> float:
        """The clock time at which the next sync is due; O(1)."""
        now = self._clock()
        wanted = self._last_start + self.max_interval
        if self._retry_at is not None:
            wanted = min(wanted, self._retry_at)
        if self._requested:
            wanted = min(wanted, now)
        if self.min_interval == 0:
            return wanted
        self._refill(now)
        token_at = now + max(0.0, 1.0 - self._tokens) * self.min_interval
        return max(wanted, token_at)

    def started(self) -> None:
        """A sync starts now: it takes a token and answers every request made so far."""
        now = self._clock()
        self._refill(now)
        self._tokens = max(0.0, self._tokens - 1.0)
        self._last_start = now
        self._requested = False

    def finished(self, *, ok: bool) -> None:
        """The sync ended; after a failure, a retry is due after the backoff."""
        if ok:
            self.failures = 0
            self._retry_at = None
            return
        self.failures += 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** (self.failures - 1))
        self._retry_at = self._clock() + delay

    async def run_forever(self, sync: Callable[[], Awaitable[bool]], wake: asyncio.Event) -> None:
        """Call ``sync()`` (True when it succeeded) whenever one is due, forever.

        ``wake`` is set by whoever calls `request`, so a due time that moved earlier
        is seen at once.  Uses the event loop's timers, so the clock must be the one
        the loop's time follows (time.monotonic).
        """
        while True:
            wake.clear()
            delay = self.next_run() - self._clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(wake.wait(), delay if math.isfinite(delay) else None)
                except asyncio.TimeoutError:
                    pass
                continue
            self.started()
            self.finished(ok=await sync())
