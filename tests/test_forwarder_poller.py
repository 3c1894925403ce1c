"""The forwarder's epoll set, `Poller`, in both twins (lbcore/_pure/poller.py and its
compiled twin): the same callbacks for the same socket events, the kernel's refusals
raised as OSError with nothing changed, and more ready sockets than one wait fetches.

Real sockets (socketpairs) and a real event loop; where the order of calls matters the
test calls `Poller._ready` itself, as the loop does when the epoll set is readable.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import tempfile
from typing import Any

import pytest

from lbcore._shared.poll_events import READ, WRITE

from forwarder_support import LOOPS, eventually, poll_entry, run_async


def _dispatches(poller_class: Any) -> list[tuple[str, list[str], int]]:
    """One scenario; for every turn (one `_ready`), the callbacks it ran, sorted (the
    kernel's order among descriptors is not the twins' to choose), and how many
    descriptors were watched after it."""
    loop = asyncio.new_event_loop()
    poller = poller_class(loop)
    pairs = {name: socket.socketpair() for name in "abcde"}
    # Pipes show an error or hang-up alone: a reader of an empty pipe whose writer closed
    # sees EPOLLHUP without EPOLLIN, a writer of a full pipe whose reader closed EPOLLERR
    # without EPOLLOUT (pipe(7)); either wakes both directions (the loop's rule).
    drained, full = os.pipe(), os.pipe()
    for pipe_fd in (*drained, *full):
        os.set_blocking(pipe_fd, False)
    for pair in pairs.values():
        for sock in pair:
            sock.setblocking(False)
    fd = {name: pair[0].fileno() for name, pair in pairs.items()}
    log: list[str] = []
    turns: list[tuple[str, list[str], int]] = []

    def called(name: str) -> Any:
        return lambda: log.append(name)

    def turn(what: str) -> None:
        log.clear()
        poller._ready()
        turns.append((what, sorted(log), len(poller.watched)))

    def d_reads() -> None:  # its own entry dropped in the read callback
        log.append("d.r")
        poller.watch(fd["d"], 0)

    reused: list[socket.socket] = []

    def e_reads() -> None:  # closed and its number reused in the read callback
        log.append("e.r")
        poller.forget(fd["e"])
        pairs["e"][0].close()
        reused.extend(socket.socketpair())
        assert reused[0].fileno() == fd["e"]  # the lowest free number (POSIX)
        poller.watch(fd["e"], WRITE, None, called("n.w"))

    try:
        poller.watch(fd["a"], READ, called("a.r"))
        poller.watch(fd["b"], WRITE, None, called("b.w"))
        poller.watch(fd["c"], READ | WRITE, None, called("c.w"))  # None: reads not watched
        turn("watched")
        pairs["a"][1].send(b"x")
        pairs["c"][1].send(b"x")
        poller.watch(fd["b"], READ, called("b.r"))
        turn("data")
        poller.watch(fd["a"], READ, called("a.borrower"))  # lent: no system call
        poller.watch(fd["c"], 0)
        turn("lent")  # level-triggered: a's byte is still unread
        poller.watch(fd["d"], READ | WRITE, d_reads, called("d.w"))
        pairs["d"][1].send(b"x")
        turn("unwatched while reading")
        poller.watch(fd["e"], READ | WRITE, e_reads, called("e.w"))
        pairs["e"][1].send(b"x")
        turn("reused while reading")
        turn("after reuse")
        try:
            while True:
                os.write(full[1], b"x" * 65536)
        except BlockingIOError:
            pass
        poller.watch(drained[0], READ, called("drained.r"))
        poller.watch(full[1], WRITE, None, called("full.w"))
        turn("nothing to read, no room to write")
        os.close(drained[1])
        os.close(full[0])
        turn("hung up, broken")
        poller.forget(fd["a"])
        pairs["a"][1].send(b"y")
        turn("forgotten")
        poller.close()
        poller.close()  # idempotent
        with pytest.raises(ValueError):
            poller.fileno()
    finally:
        poller.close()
        loop.close()
        for pair in pairs.values():
            for sock in pair:
                sock.close()
        for sock in reused:
            sock.close()
        for pipe_fd in (drained[0], full[1]):
            os.close(pipe_fd)
    return turns


EXPECTED = [
    ("watched", ["b.w", "c.w"], 3),
    ("data", ["a.r", "c.w"], 3),
    ("lent", ["a.borrower"], 2),
    ("unwatched while reading", ["a.borrower", "d.r"], 2),
    ("reused while reading", ["a.borrower", "e.r"], 3),
    ("after reuse", ["a.borrower", "n.w"], 3),
    ("nothing to read, no room to write", ["a.borrower", "n.w"], 5),
    ("hung up, broken", ["a.borrower", "drained.r", "full.w", "n.w"], 5),
    ("forgotten", ["drained.r", "full.w", "n.w"], 4),
]


def test_both_twins_dispatch_the_same_callbacks_for_the_same_socket_events(both):
    pure, compiled = both
    assert _dispatches(pure.Poller) == EXPECTED
    assert _dispatches(compiled.Poller) == EXPECTED


def test_the_kernel_refusing_a_change_leaves_the_entry_as_it_was(impl):
    loop = asyncio.new_event_loop()
    poller = impl.Poller(loop)
    a, b = socket.socketpair()
    refused: list[tuple[type, int]] = []

    def refuse(*args: Any) -> None:
        with pytest.raises(OSError) as caught:
            poller.watch(*args)
        refused.append((type(caught.value), caught.value.errno))

    try:
        spare = os.dup(a.fileno())
        os.close(spare)
        refuse(spare, READ, print)  # not open
        with tempfile.TemporaryFile() as file:
            refuse(file.fileno(), READ, print)  # a regular file: epoll(7) refuses it
        fd = a.fileno()
        poller.watch(fd, READ, print)
        poller.forget(fd)  # forgotten but not closed: still in the kernel's set
        refuse(fd, READ, print)
        reading = impl.Poller(loop)
        reading.watch(b.fileno(), READ, print)
        b_fd = b.fileno()
        b.close()  # behind the poller's back
        with pytest.raises(OSError) as caught:
            reading.watch(b_fd, WRITE, None, print)
        refused.append((type(caught.value), caught.value.errno))
        kept = poll_entry(reading, b_fd)
        reading.close()
    finally:
        poller.close()
        loop.close()
        a.close()
        b.close()
    assert refused == [
        (OSError, errno.EBADF), (PermissionError, errno.EPERM),
        (FileExistsError, errno.EEXIST), (OSError, errno.EBADF),
    ]
    assert fd not in poller.watched and spare not in poller.watched
    assert kept == (READ, print, None)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_more_ready_sockets_than_one_wait_fetches_are_all_dispatched(impl, loop_kind):
    """The compiled twin fetches 256 events per epoll_wait; the rest stay ready, the
    loop sees the set readable still and calls again."""
    count = 300

    async def main() -> tuple[set[int], list[int]]:
        poller = impl.Poller(asyncio.get_running_loop())
        pairs = [socket.socketpair() for _ in range(count)]
        seen: list[int] = []

        def reader(i: int, sock: socket.socket) -> Any:
            def readable() -> None:
                sock.recv(10)
                seen.append(i)
            return readable

        try:
            for i, (sock, peer) in enumerate(pairs):
                sock.setblocking(False)
                poller.watch(sock.fileno(), READ, reader(i, sock))
                peer.send(b"x")
            await eventually(lambda: len(seen) >= count)
            await asyncio.sleep(0.02)  # a wake-up too many would come within a turn or two
            return set(seen), seen
        finally:
            poller.close()
            for pair in pairs:
                for sock in pair:
                    sock.close()

    distinct, seen = run_async(loop_kind, main())
    assert distinct == set(range(count)) and len(seen) == count  # each once, once read
