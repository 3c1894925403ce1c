"""The forwarder's own epoll set for its sockets, watched by the event loop as one descriptor.

Why: every descriptor the loop watches costs at both ends under uvloop (libuv checks a new
descriptor with an epoll add and delete, sets it non-blocking again, and deletes it up to
three times when the watch ends: seven system calls per socket, traced with strace; see
bench/README.md, "Owning the sockets").  Here a socket is added once, changed
when it must wait for writability, and leaves the set with its close(2) (`forget`); the
loop wakes us when any of them is ready, and one epoll_wait(0) fetches them all.

Each watched descriptor has one callback per direction, so a socket's readiness can be
lent to another handler without a second registration: a `stream.Stream` lends its
socket's readability to the relay's copier, or to a splice pump, and takes it back; the
kernel hears of it only if the events watched change (one owner per descriptor,
issue 13).

Dispatch follows the loop's rules: level-triggered, an error or hang-up wakes whatever
the socket waits for.  A descriptor closed and reused within one batch may see an event
meant for its predecessor; the sockets' callbacks treat a spurious wake-up as a no-op
(a read or send that would block, a connect still in progress).

This is the readable reference; lbcore/_fast/poller.pyx is the same with epoll_ctl and
epoll_wait called from C (`_ready` runs for every event of every connection).  Linux only:
`lbcore.forwarder.poller.make_poller` picks ``LoopPoller`` where there is no epoll.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any

from .._shared.poll_events import READ, WRITE

__all__ = ["Poller"]

if hasattr(select, "epoll"):
    _IN, _OUT = select.EPOLLIN, select.EPOLLOUT
    _ERR = select.EPOLLERR | select.EPOLLHUP
    _MASKS = {READ: _IN, WRITE: _OUT, READ | WRITE: _IN | _OUT}
    _READABLE = _IN | _ERR  # an error or hang-up wakes both directions (the loop's rule)
    _WRITABLE = _OUT | _ERR


class Poller:
    """Sockets watched through one epoll set; each with a callback per direction."""

    __slots__ = ("loop", "epoll", "watched")

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.epoll = select.epoll()
        # fd -> [READ | WRITE bits, called when readable, called when writable]
        self.watched: dict[int, list] = {}
        loop.add_reader(self.epoll.fileno(), self._ready)

    def fileno(self) -> int:
        """The epoll set's own descriptor (the one the loop watches)."""
        return self.epoll.fileno()

    def watch(
        self, fd: int, events: int, on_readable: Callable[[], Any] | None = None,
        on_writable: Callable[[], Any] | None = None,
    ) -> None:
        """Call ``on_readable`` (``on_writable``) when ``fd`` is readable (writable) for
        ``events`` (READ, WRITE, both, or 0: not at all).

        The kernel hears only of a change of ``events``: handing a direction to another
        callback (a stream lending its readiness to the copier) costs no system call.
        An OSError from adding or changing leaves the entry as it was; stopping drops
        it whatever the kernel says (a descriptor it does not know is not watched)."""
        entry = self.watched.get(fd)
        if entry is None:
            if events:
                self.epoll.register(fd, _MASKS[events])
                self.watched[fd] = [events, on_readable, on_writable]
            return
        if not events:
            del self.watched[fd]
            self.epoll.unregister(fd)
            return
        if events != entry[0]:
            self.epoll.modify(fd, _MASKS[events])
            entry[0] = events
        entry[1] = on_readable
        entry[2] = on_writable

    def forget(self, fd: int) -> None:
        """``fd`` is about to be closed: stop watching it without telling the kernel.

        close(2) takes a descriptor out of every epoll set once no other descriptor
        refers to its socket (epoll(7), Q6), and here none does: one owner per
        descriptor.  That saves the EPOLL_CTL_DEL HAProxy does not make either.  (A
        child forked and not yet exec'd holds a copy for a moment: its events are then
        for a descriptor not in ``watched``, and skipped.)"""
        self.watched.pop(fd, None)

    def _ready(self) -> None:
        # Every steady-state request passes here twice (the copier's sockets): locals
        # only, and a callback of None is a direction not watched.
        watched = self.watched
        readable, writable = _READABLE, _WRITABLE
        for fd, happened in self.epoll.poll(0):
            entry = watched.get(fd)
            if entry is None:
                continue
            if happened & readable:
                on_readable = entry[1]
                if on_readable is not None:
                    on_readable()
                    if not happened & writable or watched.get(fd) is not entry:
                        continue  # (not entry: closed, and maybe reused, meanwhile)
            if happened & writable:
                on_writable = entry[2]
                if on_writable is not None:
                    on_writable()

    def close(self) -> None:
        """Stop watching everything and close the epoll set; idempotent."""
        if self.epoll.closed:
            return
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        self.watched.clear()
