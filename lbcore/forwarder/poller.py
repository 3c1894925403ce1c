"""How the forwarder watches its sockets: its own epoll set (`Poller`), or the loop's.

`Poller` is one epoll set the event loop watches as one descriptor, each socket in it
with a callback per direction; its twins are lbcore/_pure/poller.py (the reference, and
the why) and lbcore/_fast/poller.pyx (compiled: `_ready` runs for every event of every
connection).  Where there is no epoll (not Linux), `LoopPoller` does the same through the
loop's ``add_reader``/``add_writer``.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._shared.poll_events import READ, WRITE
from .._twins import twin

if TYPE_CHECKING:
    from .._pure.poller import Poller
else:
    Poller = twin("poller").Poller

__all__ = ["Poller", "LoopPoller", "make_poller", "READ", "WRITE"]


class LoopPoller:
    """The same calls through the event loop's own watching."""

    __slots__ = ("loop", "watched")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.watched: dict[int, list] = {}  # fd -> [events, on_readable, on_writable]

    def watch(
        self, fd: int, events: int, on_readable: Callable[[], Any] | None = None,
        on_writable: Callable[[], Any] | None = None,
    ) -> None:
        was, reader, writer = self.watched.pop(fd, (0, None, None))
        if events:
            self.watched[fd] = [events, on_readable, on_writable]
        loop = self.loop
        if events & READ:
            if not was & READ or on_readable != reader:
                loop.add_reader(fd, on_readable)
        elif was & READ:
            loop.remove_reader(fd)
        if events & WRITE:
            if not was & WRITE or on_writable != writer:
                loop.add_writer(fd, on_writable)
        elif was & WRITE:
            loop.remove_writer(fd)

    def forget(self, fd: int) -> None:
        """``fd`` is about to be closed: the loop must stop watching it first."""
        self.watch(fd, 0)

    def close(self) -> None:
        for fd in list(self.watched):
            self.watch(fd, 0)


def make_poller(loop: Any) -> Poller | LoopPoller:
    return Poller(loop) if hasattr(select, "epoll") else LoopPoller(loop)
