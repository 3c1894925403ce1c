"""The steady-state copier of a TCP relay: the pure-Python twin of ``lbcore/_fast/copier.pyx``.

Once a connection has carried a request and its answer and the client sends again, it
is a persistent connection in its steady state, and the relay hands both directions to
a `Copier`: the two transports lend it their sockets' readability (``lend_reads``), and
each readable socket costs a callback, one ``recv`` and one ``send`` of what it read to
the other socket.  The compiled twin reads into a static buffer: no bytes object, no
protocol callback, no transport write queue per read, which was most of the forwarder's
own CPU per request (bench/README.md).

A copier handles only the common case.  For anything else it gives the sockets back to
their transports and hands the connection back to the relay
(``relay.copier_left(side, rest, error)``), whose transports read again:

- the other socket would block (``rest`` is what the send left over: the relay queues it
  in the transport, whose flow control then applies backpressure);
- end of stream (``recv`` gives 0; the transport reads the FIN again and passes it on);
- an error of either socket (``error``: the relay aborts both sides);
- a full buffer when bulk transfers may splice (the transport's next read starts it).

One owner per descriptor: a copier works on the transports' own descriptors, woken
through the poller entry each transport already has (no duplicate, no second watch, no
system call to hand over: the events watched stay READ).  It never closes a socket:
`Copier.close` gives both back, and a transport that closes while still lending makes
its borrower let go first.  It counts the bytes it moved each way in ``client_bytes`` and
``upstream_bytes``.

What that saves and costs, measured with strace and wrk (issue 13): a hand-over used to
cost a dup, a close and the loop's watching of each duplicate (2 dup, 2 ioctl, 16
epoll_ctl and 2 close per persistent connection under uvloop); now none.  The copier's
wake-ups come through the forwarder's own epoll set, as the transports' do: one more
``epoll_wait`` per batch of ready sockets and a Python dispatch per event, about 3 % more
CPU per keep-alive request than loop readers of its own (8.2 against 8.0 µs), what a
copier-only epoll set was measured at before (bench/README.md).
"""

from __future__ import annotations

import socket
from typing import Any

__all__ = ["BUFFER_SIZE", "Copier"]

#: One read's worth: equal to the splice threshold, so a full read means bulk.
BUFFER_SIZE = 64 * 1024

_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class Copier:
    """Copies bytes both ways between the sockets of the ``client`` and ``upstream``
    transports (`stream.Stream`), from `start` until `close`."""

    __slots__ = ("relay", "client", "upstream", "client_bytes", "upstream_bytes",
                 "bulk_hands_back", "_client", "_upstream", "_started")

    def __init__(self, relay: Any, client: Any, upstream: Any, bulk_hands_back: bool) -> None:
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self.client_bytes = self.upstream_bytes = 0  # moved from each side
        self.bulk_hands_back = bulk_hands_back
        # The transports' own socket objects (never closed here).  No buffer of its own
        # (the compiled twin shares one static buffer, safe under the GIL; here the GIL
        # is dropped inside recv and send): a read is a bytes object.
        self._client = client.get_extra_info("socket")
        self._upstream = upstream.get_extra_info("socket")
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
        """Borrow both sockets' readability from their transports."""
        self._started = True
        self.client.lend_reads(self, self.client_readable)
        self.upstream.lend_reads(self, self.upstream_readable)

    def client_readable(self) -> None:
        self._move(self._client, self._upstream, True)

    def upstream_readable(self) -> None:
        self._move(self._upstream, self._client, False)

    def _move(self, src: Any, dst: Any, from_client: bool) -> None:
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
        self.close()  # nothing more is read, whatever the relay does next
        relay = self.relay
        relay.copier_left(relay.client if from_client else relay.upstream, rest, exc)

    def close(self) -> None:
        """Give both sockets back to their transports; idempotent."""
        if self._started:
            self._started = False
            self.client.take_back(self)
            self.upstream.take_back(self)
