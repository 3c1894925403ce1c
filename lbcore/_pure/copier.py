"""The steady-state copier of a TCP relay: the pure-Python twin of ``lbcore/_fast/copier.pyx``.

Once a connection has carried a request and its answer and the client sends again, it
is a persistent connection in its steady state, and the relay hands both directions to
a `Copier`: the event loop watches the two sockets, and each readable one costs a
callback, one ``recv`` and one ``send`` of what it read to the other socket.  The
compiled twin reads into a static buffer: no bytes object, no protocol callback, no
transport write queue per read, which was most of the forwarder's own CPU per request
(bench/README.md).  (Tried and measured slower: one epoll instance of the copiers' own,
watched by the loop as one descriptor, to take every ready socket in one callback; the
nested epoll costs the kernel more than the callbacks it saves.)

A copier handles only the common case.  For anything else it stops watching and hands
the connection back to the relay (``relay.copier_left(side, rest, error)``), which
closes the copier and resumes its transports:

- the other socket would block (``rest`` is what the send left over: the relay queues it
  in the transport, whose flow control then applies backpressure);
- end of stream (``recv`` gives 0; the transport reads the FIN again and passes it on);
- an error of either socket (``error``: the relay aborts both sides);
- a full buffer when bulk transfers may splice (the transport's next read starts it).

Like the splice pump, a copier works on duplicated descriptors (the transports keep
owning the sockets; see `splice` for why) and owns those duplicates: `Copier.close`
closes them.  It counts
the bytes it moved each way in ``client_bytes`` and ``upstream_bytes``.
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["BUFFER_SIZE", "Copier"]

#: One read's worth: equal to the splice threshold, so a full read means bulk.
BUFFER_SIZE = 64 * 1024

_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class Copier:
    """Copies bytes both ways between ``client_fd`` and ``upstream_fd`` (owned from now on)."""

    __slots__ = ("relay", "loop", "client_fd", "upstream_fd", "client_bytes", "upstream_bytes",
                 "bulk_hands_back", "_client", "_upstream", "_started")

    def __init__(self, relay: Any, loop: Any, client_fd: int, upstream_fd: int,
                 bulk_hands_back: bool) -> None:
        self.relay = relay
        self.loop = loop
        self.client_fd = client_fd
        self.upstream_fd = upstream_fd
        self.client_bytes = self.upstream_bytes = 0  # moved from each side
        self.bulk_hands_back = bulk_hands_back
        self._client = socket.socket(fileno=client_fd)
        try:
            self._upstream = socket.socket(fileno=upstream_fd)
        except OSError:
            self._client.detach()  # the caller still owns the descriptors
            raise
        # No buffer of its own (the compiled twin shares one static buffer, safe under
        # the GIL; here the GIL is dropped inside recv and send): a read is a bytes object.
        self._started = False

    def send(self, data: bytes) -> int:
        """Send client bytes to the upstream socket now; how many went (0: it would block).

        Not counted: the relay counts what it was given.
        """
        try:
            return self._upstream.send(data, _NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return 0

    def start(self) -> None:
        self.loop.add_reader(self.client_fd, self.client_readable)
        self._started = True
        self.loop.add_reader(self.upstream_fd, self.upstream_readable)

    def client_readable(self) -> None:
        self._move(self._client, self._upstream, True)

    def upstream_readable(self) -> None:
        self._move(self._upstream, self._client, False)

    def _move(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        """One read from ``src`` sent on to ``dst``."""
        try:
            data = src.recv(BUFFER_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._hand_back(from_client, None, exc)
            return
        n = len(data)
        if n == 0:
            self._hand_back(from_client, None, None)
            return
        if from_client:  # counted before any hand-back: the relay takes the counts then
            self.client_bytes += n
        else:
            self.upstream_bytes += n
        try:
            sent = dst.send(data, _NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._hand_back(from_client, None, exc)
            return
        if sent < n:
            self._hand_back(from_client, data[sent:], None)
        elif n == BUFFER_SIZE and self.bulk_hands_back:
            self._hand_back(from_client, None, None)

    def _hand_back(self, from_client: bool, rest: bytes | None, exc: OSError | None) -> None:
        self._stop_watching()  # nothing more is read, whatever the relay does next
        relay = self.relay
        relay.copier_left(relay.client if from_client else relay.upstream, rest, exc)

    def _stop_watching(self) -> None:
        if self._started:
            self._started = False
            self.loop.remove_reader(self.client_fd)
            self.loop.remove_reader(self.upstream_fd)

    def close(self) -> None:
        """Stop watching and close both descriptors; idempotent."""
        self._stop_watching()
        self._client.close()  # idempotent, as socket.close is
        self._upstream.close()
        self.client_fd = self.upstream_fd = -1
