"""Connect deadlines: one timer per distinct timeout, not one per connection.

A timer per connect (``call_later`` and its cancel) cost a measurable share of a
new connection (bench/README.md, "Connecting without a task").  Connects with the same
timeout expire in the order they started, so each timeout keeps a queue in that order
and one timer armed for its oldest entry; a connection that is made meanwhile is not
taken out of the queue, its `Stream.expire` simply finds nothing to do.  A retry's
doubled timeout is a second queue.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["Deadlines"]


class _Queue:
    __slots__ = ("timeout", "entries", "timer")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.entries: deque[tuple[float, Any]] = deque()  # (when, transport), oldest first
        self.timer: Any = None


class Deadlines:
    """The pending connect deadlines of one event loop."""

    __slots__ = ("loop", "queues")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.queues: dict[float, _Queue] = {}

    def add(self, transport: Any, timeout: float) -> None:
        """Call ``transport.expire(timeout)`` ``timeout`` seconds from now."""
        queue = self.queues.get(timeout)
        if queue is None:
            queue = self.queues[timeout] = _Queue(timeout)
        when = self.loop.time() + timeout
        queue.entries.append((when, transport))
        if queue.timer is None:
            queue.timer = self.loop.call_at(when, self._expire, queue)

    def _expire(self, queue: _Queue) -> None:
        entries = queue.entries
        # Timers may fire a hair early (uvloop counts in milliseconds): allow for it.
        now = self.loop.time() + 0.001
        while entries and entries[0][0] <= now:
            entries.popleft()[1].expire(queue.timeout)
        queue.timer = self.loop.call_at(entries[0][0], self._expire, queue) if entries else None
