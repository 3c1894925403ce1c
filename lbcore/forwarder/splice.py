"""Zero-copy bulk transfer: one direction of a relay moved through a pipe with splice(2).

HAProxy's ``option splice-auto`` splices when a transfer looks bulky; so does the relay
here: once a single read brings `BULK_READ` bytes or more and the other side's transport
has nothing queued, that direction leaves its transport and runs as a pump:
``splice(socket -> pipe)``, ``splice(pipe -> socket)``, the bytes never entering Python.
The pipe is the pump's only buffer, so a slow reader holds at most `PIPE_SIZE` bytes per
direction; reading stops while the pipe cannot drain.

The transports keep owning their sockets (for the other direction and for closing); the
pump borrows the source's readability and, while the pipe cannot drain, the
destination's writability (`stream.Stream.lend_reads`, ``lend_writes``): the sockets' own
descriptors, woken through their one poller entry.  The pump owns only its pipe.  A
transport that closes while lending (the other direction ended in an error, say) makes
the pump let go first (`Pump.close`), so the pump never holds a number the kernel may
already have given to a new socket.
"""

from __future__ import annotations

import fcntl
import os
import sys
from typing import Any

__all__ = ["AVAILABLE", "BULK_READ", "PIPE_SIZE", "Pump"]

AVAILABLE = sys.platform == "linux" and hasattr(os, "splice")
#: A read this large means the sender is ahead of us: splice from then on.
BULK_READ = 64 * 1024
#: Pipe capacity asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by
#: default); fewer, larger splices per MiB moved.  Measured in bench/README.md.
PIPE_SIZE = 1024 * 1024

_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def _pipe() -> tuple[int, int, int]:
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        size = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # above pipe-max-size for an unprivileged user: keep the default
        size = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
    return read_end, write_end, size


class Pump:
    """Moves bytes from ``side``'s socket to its peer's socket through a pipe.

    ``relay`` is told of the end of stream (``eof_from``) and of errors (``abort``);
    ``side.bytes`` counts what moved.
    """

    __slots__ = (
        "relay", "side", "source", "destination", "src", "dst", "pipe_r", "pipe_w", "size",
        "pending", "waiting",
    )

    def __init__(self, relay: Any, side: Any) -> None:
        self.relay = relay
        self.side = side
        self.source = side.transport
        self.destination = side.peer.transport
        self.src = self.source.fd
        self.dst = self.destination.fd
        self.pipe_r, self.pipe_w, self.size = _pipe()
        self.pending = 0  # bytes in the pipe
        self.waiting = False  # for the destination to become writable
        self.source.lend_reads(self, self._readable)
        # Held from the start, wanted only while waiting: the destination's transport
        # makes the pump let go before it closes.
        self.destination.lend_writes(self, None)

    def _readable(self) -> None:
        try:
            n = os.splice(self.src, self.pipe_w, self.size, flags=_FLAGS)
        except BlockingIOError:
            return
        except OSError as exc:
            self.relay.abort(exc)
            return
        if n == 0:
            self.close()  # the pipe is empty: this direction is over
            self.relay.eof_from(self.side)
            return
        self.side.bytes += n
        self.pending = n
        self._drain()

    def _writable(self) -> None:
        self._drain()

    def _drain(self) -> None:
        try:
            while self.pending:
                self.pending -= os.splice(self.pipe_r, self.dst, self.pending, flags=_FLAGS)
        except BlockingIOError:
            if not self.waiting:  # backpressure: stop reading until the pipe drains
                self.waiting = True
                self.source.lend_reads(self, None)
                self.destination.lend_writes(self, self._writable)
            return
        except OSError as exc:
            self.relay.abort(exc)
            return
        if self.waiting:
            self.relay.seen = -1  # a slow reader that drains is not idle
            self.waiting = False
            self.destination.lend_writes(self, None)
            self.source.lend_reads(self, self._readable)

    def close(self) -> None:
        """Give the sockets back and close the pipe; idempotent."""
        if self.pipe_r < 0:
            return
        self.source.take_back(self)
        self.destination.take_back(self)
        os.close(self.pipe_r)
        os.close(self.pipe_w)
        self.src = self.dst = self.pipe_r = self.pipe_w = -1
