"""The forwarder's one clock: what time it is, and timers on that time.

Every timeout the forwarder keeps reads this clock: the connect deadlines
(`deadlines`), the cool-downs of passive health (`retry.PassiveHealth`), the idle sweeps
of TCP connections and UDP flows (`Forwarder._sweep`), the accept retry after a
descriptor shortage (`listener`), the drain deadline of `Forwarder.stop`, and, when a
clock is given to the `Forwarder`, its active health checks' wheel.  The data path
never reads it: idleness is counted in sweeps over byte counters.

`LoopClock`, the default, is the event loop's own time and timers.  `ManualClock` moves
only when a test says so (`ManualClock.advance`), so a test proves a timeout without
sleeping through it, and without racing it on a busy machine.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Callable, Protocol

__all__ = ["Clock", "LoopClock", "ManualClock", "ManualTimer"]


class Clock(Protocol):
    """What the forwarder asks of a clock: monotonic seconds, and cancellable timers."""

    def now(self) -> float: ...
    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...
    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Any: ...


class LoopClock:
    """An event loop's time and timers (``loop.time``, ``call_later``, ``call_at``).

    The loop's own bound methods, so a timer costs what it cost without this object.
    """

    __slots__ = ("now", "call_later", "call_at")

    def __init__(self, loop: Any) -> None:
        self.now = loop.time
        self.call_later = loop.call_later
        self.call_at = loop.call_at


class ManualTimer:
    """A `ManualClock` timer: ``cancel()`` keeps it from running, as an asyncio handle's."""

    __slots__ = ("when", "callback", "args", "_cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class ManualClock:
    """A clock for tests: time stands still until `advance` moves it.

    Give it to the `Forwarder` (``Forwarder(services, clock=ManualClock())``) and every
    timeout of the forwarder waits for the test: ``clock.advance(seconds)`` moves the
    time and runs each timer that falls due, in the order of their due times (timers set
    for the same time run in the order they were set), each with the clock reading its
    due time.  A timer that a callback sets and that falls due within the advance runs
    in it too, so one advance past an idle timeout runs every sweep in between.  The
    drain deadline of `Forwarder.stop` is on it as well: a test that stops a forwarder
    with connections still open moves the clock past ``drain_timeout``.

    >>> clock = ManualClock()
    >>> fired = []
    >>> timer = clock.call_later(5, fired.append, "cool-down over")
    >>> clock.advance(4.9)
    >>> fired
    []
    >>> clock.advance(0.1)
    >>> fired, clock.now()
    (['cool-down over'], 5.0)
    >>> clock.call_later(1, fired.append, "never").cancel()
    >>> clock.advance(10)
    >>> fired
    ['cool-down over']
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._timers: list[tuple[float, int, ManualTimer]] = []  # a heap by due time
        self._order = itertools.count()

    def now(self) -> float:
        """The clock's time in seconds."""
        return self._now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> ManualTimer:
        """Run ``callback(*args)`` once the clock reaches ``when``.  O(log timers)."""
        timer = ManualTimer(when, callback, args)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> ManualTimer:
        """Run ``callback(*args)`` ``delay`` seconds from now."""
        return self.call_at(self._now + delay, callback, *args)

    @property
    def pending(self) -> int:
        """Timers set and neither run nor cancelled."""
        return sum(not timer.cancelled() for _, _, timer in self._timers)

    def advance(self, seconds: float) -> None:
        """Move the time ``seconds`` ahead, running the timers due on the way, in order.

        A callback's exception propagates (after the clock reads its due time), so a
        test sees it.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds: {seconds!r} must be a finite number >= 0")
        end = self._now + seconds
        timers = self._timers
        while timers and timers[0][0] <= end:
            when, _, timer = heapq.heappop(timers)
            if timer.cancelled():
                continue
            self._now = max(self._now, when)
            timer.callback(*timer.args)
        self._now = end
