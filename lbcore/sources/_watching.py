"""What every live source does alike: a reader task, coalesced changes, backoff, snapshots.

A source's reader runs as a task and records each change in `Changes`; `snapshots` hands
the consumer one `Snapshot` for everything recorded since it last took one.  A consumer
that is slow (the agent applying a sync) therefore gets one snapshot for a burst, never a
queue of stale ones, and the reader never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from typing import Any, AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable, Protocol

from ._problems import Problems, SourceError
from ._unique import Located, check_unique
from .live import Snapshot

__all__ = ["Backoff", "Changes", "Contact", "json_lines", "problem_lines", "snapshot", "snapshots"]

log = logging.getLogger("lbcore.sources")


class Changes:
    """Changes a reader has seen that the consumer has not taken yet.

    ``changed_at`` of the snapshot that takes them is the clock reading of the first:
    the oldest change behind it is the one whose delay the agent must report.
    """

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._pending = asyncio.Event()
        self._since: float | None = None

    def seen(self, at: float | None = None) -> None:
        """Record that the source's state changed ``at`` a clock reading (default: now)."""
        if self._since is None:
            self._since = self._clock() if at is None else at
        self._pending.set()

    async def taken(self) -> float:
        """Wait for a change, take every one recorded so far; the first one's time."""
        await self._pending.wait()
        self._pending.clear()
        since, self._since = self._since, None
        assert since is not None
        return since


async def snapshots(read: Coroutine[object, object, None], changes: Changes,
                    build: Callable[[float], Snapshot]) -> AsyncIterator[Snapshot]:
    """Run ``read`` as a task (it records into ``changes`` until cancelled) and yield
    ``build(changed_at)`` for each batch of changes.  Closing the generator cancels the
    reader; a reader that fails (a bug: readers retry what the network does to them)
    raises here instead of leaving the consumer waiting forever.
    """
    reader = asyncio.ensure_future(read)
    taken: asyncio.Future[float] | None = None
    try:
        while True:
            taken = asyncio.ensure_future(changes.taken())
            await asyncio.wait({reader, taken}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                reader.result()
                raise RuntimeError("a live source's reader ended; readers run until cancelled")
            yield build(taken.result())
    finally:
        for task in (taken, reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class Backoff:
    """Exponential backoff with jitter between reconnection attempts.

    From 0.2 s doubling to 5 s, each wait drawn from its upper half so a fleet that lost
    the same server does not come back in step (client-go's reflector backs off from
    800 ms to 30 s; a node agent wants its rules current again sooner).
    """

    FIRST = 0.2
    MOST = 5.0

    def __init__(self) -> None:
        self._next = self.FIRST

    async def wait(self) -> None:
        delay, self._next = self._next, min(self._next * 2, self.MOST)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        """Contact was made: the next failure starts from the shortest wait again."""
        self._next = self.FIRST


class Contact:
    """Whether a source is in contact now, logged when that changes: a source that cannot
    connect says why once (and again only when the reason changes), not at every retry."""

    def __init__(self, source: str):
        self.source = source
        self.connected = False
        self._reason: str | None = None

    def made(self) -> None:
        if self._reason is not None:
            log.warning("%s: connected again", self.source)
        self.connected = True
        self._reason = None

    def lost(self, error: BaseException) -> None:
        reason = str(error) or type(error).__name__
        if reason != self._reason:
            log.warning("%s: %s; keeping the last set and retrying", self.source, reason)
        self.connected = False
        self._reason = reason


def problem_lines(problems: Problems | SourceError) -> list[str]:
    """One line per problem recorded."""
    if isinstance(problems, Problems):
        try:
            problems.raise_if_any()
        except SourceError as error:
            problems = error
        else:
            return []
    return [str(problem) for problem in problems.problems]


def snapshot(source: str, located: Iterable[Located], problems: Problems, changed_at: float, *,
             earlier: Iterable[str] = (), notes: Iterable[str] = ()) -> Snapshot:
    """The snapshot of the good services ``located`` (those whose name or address an
    earlier one has are left out and reported); ``earlier`` problem lines come first."""
    unique = check_unique(located, problems)
    return Snapshot(source, tuple(item.service for item in unique),
                    (*earlier, *problem_lines(problems)), changed_at, tuple(notes))


class _Chunks(Protocol):
    def iter_any(self) -> AsyncIterable[bytes]: ...


async def json_lines(content: _Chunks) -> AsyncIterator[Any]:
    """The JSON value on each line of a streamed HTTP body (etcd's and Kubernetes' watch
    streams put one answer per line).  Lines of any length: an answer carrying a large
    object or many events can be megabytes, far past a line reader's buffer limit.
    """
    buffer = bytearray()
    async for chunk in content.iter_any():
        start = len(buffer)
        buffer += chunk
        end = buffer.find(b"\n", start)
        while end >= 0:
            line = bytes(buffer[:end])
            del buffer[:end + 1]
            if line.strip():
                yield json.loads(line)
            end = buffer.find(b"\n")
