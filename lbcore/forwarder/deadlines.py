"""Connect deadlines: one timer per distinct timeout, not one per connection.

A timer per connect (a ``call_later`` and its cancel: a timer handle and, under uvloop,
a libuv timer each) is per-connection work that one timer per timeout avoids (see
bench/README.md, "Owning the sockets").  Connects with the same timeout expire in the
order they started, so each timeout keeps a queue in that order and one timer armed for
its oldest entry.  A connection that is made (or closed) meanwhile stays in the queue
but lets go of its entry (the entry's transport becomes None), so the queue holds small
lists rather than relays: a long connect timeout at a high connection rate costs about
a hundred bytes per connection, not kilobytes.  A retry's doubled timeout is a second
queue.  Time is the forwarder's clock (`lbcore.forwarder.clock`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .clock import Clock

__all__ = ["Deadlines"]


class _Queue:
    __slots__ = ("timeout", "entries", "timer")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.entries: deque[list] = deque()  # [when, transport or None], oldest first
        self.timer: Any = None


class Deadlines:
    """The pending connect deadlines of one forwarder, on its ``clock``."""

    __slots__ = ("clock", "queues")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.queues: dict[float, _Queue] = {}

    def add(self, transport: Any, timeout: float) -> list:
        """Call ``transport.expire(timeout)`` ``timeout`` seconds from now, unless the
        returned entry's transport is set to None before then."""
        queue = self.queues.get(timeout)
        if queue is None:
            queue = self.queues[timeout] = _Queue(timeout)
        when = self.clock.now() + timeout
        entry = [when, transport]
        queue.entries.append(entry)
        if queue.timer is None:
            queue.timer = self.clock.call_at(when, self._expire, queue)
        return entry

    def _expire(self, queue: _Queue) -> None:
        entries = queue.entries
        # Timers may fire a hair early (uvloop counts in milliseconds): allow for it.
        now = self.clock.now() + 0.001
        while entries and entries[0][0] <= now:
            transport = entries.popleft()[1]
            if transport is not None:
                transport.expire(queue.timeout)
        queue.timer = self.clock.call_at(entries[0][0], self._expire, queue) if entries else None
