"""The forwarder's own epoll set for its sockets, watched by the event loop as one descriptor.

Why: every descriptor the loop watches costs at both ends under uvloop (libuv checks a new
descriptor with an epoll add and delete, sets it non-blocking again, and deletes it up to
three times when the watch ends: seven system calls per socket, traced with strace; see
bench/README.md, "Owning the sockets").  Here a socket is added once, changed
when it must wait for writability, and deleted once; the loop wakes us when any of
them is ready, and one epoll_wait(0) fetches them all.

Dispatch follows the loop's rules: level-triggered, an error or hang-up wakes whatever
the socket waits for.  A descriptor closed and reused within one batch may see an event
meant for its predecessor; the sockets' callbacks treat a spurious wake-up as a no-op
(a read or send that would block, a connect still in progress).

Where there is no epoll (not Linux), `LoopPoller` does the same through the loop's
``add_reader``/``add_writer``.
"""

from __future__ import annotations

import select
from typing import Any

__all__ = ["Poller", "LoopPoller", "make_poller", "READ", "WRITE"]

READ = 1
WRITE = 2

if hasattr(select, "epoll"):
    _IN, _OUT = select.EPOLLIN, select.EPOLLOUT
    _ERR = select.EPOLLERR | select.EPOLLHUP
    _MASKS = {READ: _IN, WRITE: _OUT, READ | WRITE: _IN | _OUT}


class Poller:
    """Sockets watched through one epoll set; each has a ``_readable``/``_writable``."""

    __slots__ = ("loop", "epoll", "watched")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        self.watched: dict[int, list] = {}  # fd -> [socket's owner, READ | WRITE bits]
        loop.add_reader(self.epoll.fileno(), self._ready)

    def watch(self, fd: int, owner: Any, events: int) -> None:
        """Wake ``owner`` for ``events`` (READ, WRITE, both, or 0: not at all) on ``fd``."""
        entry = self.watched.get(fd)
        if entry is None:
            if events:
                self.epoll.register(fd, _MASKS[events])
                self.watched[fd] = [owner, events]
        elif not events:
            del self.watched[fd]
            self.epoll.unregister(fd)
        elif events != entry[1]:
            entry[1] = events
            self.epoll.modify(fd, _MASKS[events])

    def _ready(self) -> None:
        watched = self.watched
        for fd, happened in self.epoll.poll(0):
            entry = watched.get(fd)
            if entry is None:
                continue
            owner = entry[0]
            if happened & (_IN | _ERR) and entry[1] & READ:
                owner._readable()
                entry = watched.get(fd)
                if entry is None or entry[0] is not owner:
                    continue
            if happened & (_OUT | _ERR) and entry[1] & WRITE:
                owner._writable()

    def close(self) -> None:
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        self.watched.clear()


class LoopPoller:
    """The same calls through the event loop's own watching."""

    __slots__ = ("loop", "watched")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.watched: dict[int, int] = {}

    def watch(self, fd: int, owner: Any, events: int) -> None:
        was = self.watched.pop(fd, 0)
        if events:
            self.watched[fd] = events
        loop = self.loop
        if events & READ and not was & READ:
            loop.add_reader(fd, owner._readable)
        elif was & READ and not events & READ:
            loop.remove_reader(fd)
        if events & WRITE and not was & WRITE:
            loop.add_writer(fd, owner._writable)
        elif was & WRITE and not events & WRITE:
            loop.remove_writer(fd)

    def close(self) -> None:
        for fd in list(self.watched):
            self.watch(fd, None, 0)


def make_poller(loop: Any) -> Poller | LoopPoller:
    return Poller(loop) if hasattr(select, "epoll") else LoopPoller(loop)
