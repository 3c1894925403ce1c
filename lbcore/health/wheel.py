"""One timer for every check, and a bound on how many run at once.

Envoy's health checker schedules each host's next check from one timer source, never
a task per host spinning in a loop; so does this wheel: a heap of (due time, endpoint)
and a single event-loop timer armed for the earliest.  When entries fall due they queue
for a slot; at most ``concurrency`` checks are in flight (each holds one socket), so ten
thousand endpoints never open ten thousand sockets at once.  A check's task exists only
while it runs.

The wheel reads time from an injectable ``clock``; tests leave the timer off and drive
it with `CheckWheel.run_due` after moving their clock, or give the wheel that clock's
``timer`` as well (the forwarder's `ManualClock`), so moving the clock fires the wheel.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from typing import Any, Callable, Protocol

from ..models import check_int

__all__ = ["CheckWheel", "DEFAULT_CONCURRENCY"]

#: A timer that fires this early still runs what it was armed for (libuv's timers count
#: whole milliseconds).  A check 1 ms early is nothing beside an interval of seconds.
TIMER_SLACK = 0.001

#: Checks in flight at most, by default: each holds a socket (a descriptor) for up to
#: its timeout.  256 hung endpoints at a 1 s timeout still leave 1 s checks flowing.
DEFAULT_CONCURRENCY = 256


class _Checker(Protocol):
    def _is_due(self, key: Any, token: object) -> bool: ...
    async def _check(self, key: Any, due: float) -> None: ...


class CheckWheel:
    """The timer and the concurrency bound shared by the checkers that run on it.

    ``concurrency``: checks in flight at most.  ``clock``: monotonic seconds (the
    checkers' due times and states use it).  ``timer(delay, callback)``: arms the one
    timer, ``delay`` seconds of ``clock`` ahead, returning a handle with ``cancel()``;
    by default the running loop's ``call_later``.  ``peak``: the most checks ever in
    flight.
    """

    def __init__(self, *, concurrency: int = DEFAULT_CONCURRENCY,
                 clock: Callable[[], float] = time.monotonic,
                 timer: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self.concurrency = check_int("concurrency", concurrency, 1, 1_000_000)
        self.clock = clock
        self._call_later = timer
        self.peak = 0
        self._heap: list[tuple[float, int, _Checker, Any, object]] = []
        self._order = itertools.count()
        self._waiting: deque[tuple[float, _Checker, Any, object]] = deque()
        self._running: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: Any = None
        self._timer_due = float("inf")

    @property
    def running(self) -> int:
        """Checks in flight now."""
        return len(self._running)

    def schedule(self, due: float, checker: _Checker, key: Any) -> object:
        """Check ``key`` of ``checker`` at ``due``; return the entry's token.  O(log n).

        The checker keeps the token; an entry whose token it no longer holds is dropped
        when it falls due (removed endpoints, rescheduled ones), so cancelling is free.
        """
        token = object()
        heapq.heappush(self._heap, (due, next(self._order), checker, key, token))
        if self._loop is not None and due < self._timer_due:
            self._arm()
        return token

    def start(self) -> None:
        """Run checks as they fall due, on the running event loop's timer."""
        if self._loop is not None:
            raise RuntimeError("the check wheel runs already")
        self._loop = asyncio.get_running_loop()
        self._fire()

    async def stop(self) -> None:
        """Stop the timer and cancel the checks in flight (their sockets close)."""
        if self._timer is not None:
            self._timer.cancel()
        self._loop = self._timer = None
        self._timer_due = float("inf")
        self._waiting.clear()
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def run_due(self) -> int:
        """Run every check due by the clock now and wait until they are done; return
        how many ran.  For tests and for callers that drive time themselves.

        The concurrency bound holds: checks beyond it wait for a slot.
        """
        count = self._take_due()
        self._fill()
        while self._running or self._waiting:
            await asyncio.gather(*list(self._running), return_exceptions=True)
            self._fill()
        return count

    def _take_due(self, slack: float = 0.0) -> int:
        """Move the entries due by now (+ ``slack``) from the heap to the queue for a slot."""
        now = self.clock() + slack
        heap = self._heap
        count = 0
        while heap and heap[0][0] <= now:
            due, _, checker, key, token = heapq.heappop(heap)
            if checker._is_due(key, token):
                self._waiting.append((due, checker, key, token))
                count += 1
        return count

    def _fill(self) -> None:
        """Start queued checks while slots are free."""
        loop = self._loop or asyncio.get_running_loop()
        while self._waiting and len(self._running) < self.concurrency:
            due, checker, key, token = self._waiting.popleft()
            if not checker._is_due(key, token):
                continue  # removed while it waited for a slot
            task = loop.create_task(checker._check(key, due))
            self._running.add(task)
            task.add_done_callback(self._done)
        self.peak = max(self.peak, len(self._running))

    def _done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in a checker must not stop the wheel; the loop's handler reports it.
            task.get_loop().call_exception_handler(
                {"message": "a health check raised", "exception": task.exception(), "task": task}
            )
        if self._loop is not None:
            self._fill()

    def _fire(self) -> None:
        self._timer = None
        self._timer_due = float("inf")
        if self._loop is None:
            return
        # Take what falls due within the timer's resolution too, as asyncio's own loop
        # does with its clock resolution: uvloop rounds a delay to whole milliseconds, so
        # its timer can fire up to half of one early, and re-arming for the rest (0 ms)
        # spun the loop until the due time (measured: a whole core at 2,000 checks/s).
        self._take_due(TIMER_SLACK)
        self._fill()
        self._arm()

    def _arm(self) -> None:
        """Arm the one timer for the earliest entry."""
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = float("inf")
        if self._heap:
            due = self._heap[0][0]
            self._timer_due = due
            call_later = self._call_later or self._loop.call_later
            self._timer = call_later(max(0.0, due - self.clock()), self._fire)
