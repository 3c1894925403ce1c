"""The sockets of a TCP relay, and the small transport the relay drives them through:
the pure-Python twin of ``lbcore/_fast/stream.pyx``.

Why not asyncio's transports (`loop.create_server`, `loop.create_connection`): per new
connection they cost more than all of lbcore's own work.  create_connection is a
coroutine, so each connection needed a Task and a deadline timer; and uvloop's
transports make seven system calls per socket around its watching alone (see
`poller`), plus a getsockname and a getpeername.  With the listener accepting itself
and these transports, a new connection costs the forwarder about the system calls
HAProxy makes (bench/README.md, "Owning the sockets").

A `Stream` is asyncio-shaped where the relay needs it (``write``, ``write_eof``,
``close``, ``abort``, ``pause_reading``, ``resume_reading``, ``get_write_buffer_size``,
``get_extra_info``) and calls the asyncio protocol methods, with asyncio's rules: a
high-water mark on the write buffer, ``close`` flushes first, ``abort`` does not,
``connection_lost`` comes soon after either (or after an error), never twice.

Dialing (`dial`): connect(2) on a non-blocking socket returns EINPROGRESS, and from then
on the stream takes writes as if connected.  The kernel decides what happens to them: a
send on a socket still in its handshake fails with EAGAIN (the bytes then wait for the
socket to become writable, which is when create_connection would have returned), on a
refused one with ECONNREFUSED.  On loopback the handshake is over when connect returns,
so the first send goes out at once.  The connection counts as made at its first sign: a
send that took bytes, a read, writability with no SO_ERROR, or getpeername() succeeding
when the deadline comes (`expire`); the protocol hears ``connected()``.  Until then an
error means the connection never existed: the protocol hears ``connect_failed(exc)``
instead of ``connection_lost``, and `unsent` gives back every byte written so far, for
the next try.
"""

from __future__ import annotations

import os
import socket

# The C socket type under `socket.socket`: the same calls, without the Python-level
# constructor and close of the subclass (a few microseconds per connection).
from _socket import socket as _c_socket
from errno import EINPROGRESS, EINTR, ENOTCONN
from struct import pack
from typing import Any

from ..models import Endpoint, join_host_port
from .._shared.poll_events import READ, WRITE

__all__ = ["Stream", "accept", "accepted", "dial", "HIGH_WATER", "LOW_WATER", "READ_SIZE"]

#: asyncio's default write-buffer limits (``pause_writing`` above, ``resume_writing`` at
#: or below the low mark).
HIGH_WATER = 64 * 1024
LOW_WATER = HIGH_WATER // 4
#: Bytes asked for per read: what asyncio's and uvloop's transports read at most.
READ_SIZE = 256 * 1024

_LINGER_RESET = pack("ii", 1, 0)
#: Sockets made here are non-blocking from the start where the platform allows.
_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)


def accept(listening: socket.socket) -> tuple[int, tuple]:
    """One connection from the listening socket: (descriptor, peer address).

    BlockingIOError when none is waiting; OSError as ``socket.accept`` raises it.
    """
    return listening._accept()


def accepted(
    loop: Any, poller: Any, fd: int, family: int, address: tuple, protocol: Any
) -> Stream:
    """A stream over the connection ``fd`` from `accept`, whose peer is ``address``;
    calls ``protocol.connection_made``.  The descriptor is closed if that fails."""
    # accept(2) hands out a blocking descriptor whatever the listener is.
    return _start(loop, poller, _c_socket(family, socket.SOCK_STREAM, 0, fd), True,
                  protocol, address, None)


def dial(loop: Any, poller: Any, endpoint: Endpoint, protocol: Any) -> Stream:
    """Start connecting to ``endpoint``; OSError if the connect fails at once.

    Calls ``protocol.connection_made`` at once; ``connected`` or ``connect_failed``
    follow."""
    ip = endpoint.ip
    sock = _c_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                     socket.SOCK_STREAM | _NONBLOCK)
    address = (ip, endpoint.port)
    return _start(loop, poller, sock, not _NONBLOCK, protocol, address, address)


def _start(
    loop: Any, poller: Any, sock: _c_socket, blocking: bool, protocol: Any, peer: tuple,
    connect_to: tuple | None,
) -> Stream:
    """Make ``sock`` non-blocking (if it is ``blocking``) and Nagle-free, as asyncio's
    sockets are, connect it to ``connect_to`` (if given), wrap it in a `Stream` and tell
    ``protocol``.  The socket is closed if any of that fails."""
    try:
        if blocking:
            sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if connect_to is not None:
            err = sock.connect_ex(connect_to)
            if err and err != EINPROGRESS and err != EINTR:
                raise OSError(err, os.strerror(err))
        transport = Stream(loop, poller, sock, protocol, peer, connect_to is not None)
    except BaseException:
        sock.close()
        raise
    protocol.connection_made(transport)
    return transport


class Stream:
    """An asyncio-style transport over a non-blocking TCP socket (see the module)."""

    __slots__ = (
        "loop", "poller", "sock", "fd", "peer", "protocol", "buffer", "size", "dialing",
        "error", "reading", "paused", "at_eof", "writing", "eof_wanted", "closing", "closed",
        "protocol_paused", "deadline", "reader", "writer",
    )

    def __init__(
        self, loop: Any, poller: Any, sock: _c_socket, protocol: Any, peer: tuple,
        dialing: bool,
    ) -> None:
        self.loop = loop
        self.poller = poller
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer  # the address at the other end
        self.protocol = protocol
        self.buffer: list[bytes] = []  # unsent bytes, oldest first
        self.size = 0
        self.dialing = dialing
        self.error: OSError | None = None  # a send's error while dialing, reported soon
        self.paused = False  # reading paused by the protocol
        self.at_eof = False  # the endpoint's FIN was read
        self.writing = False  # waiting for the socket to become writable
        self.eof_wanted = False  # write_eof() asked for
        self.closing = False
        self.closed = False
        self.protocol_paused = False
        self.deadline: list | None = None  # a `Deadlines` entry, let go once decided
        # A direction lent out (`lend_reads`, `lend_writes`): (borrower, its callback).
        self.reader: tuple[Any, Any] | None = None
        self.writer: tuple[Any, Any] | None = None
        # Read from the start: a refused or reset connect shows here first, and so do
        # the first bytes of a server that speaks first.
        self.reading = True
        poller.watch(self.fd, READ, self._readable)

    # -- the transport calls the relay makes ------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "peername":
            return self.peer
        return default

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.size

    def pause_reading(self) -> None:
        self.paused = True
        self._watch_reads()
        if self.dialing:
            # Reads were how the connect's outcome showed (see __init__): writability
            # shows it now, or it would wait for the deadline.
            self._watch_writes(True)

    def resume_reading(self) -> None:
        self.paused = False
        self._watch_reads()

    def write(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.size and self.error is None:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                if not self.dialing:
                    self._fail(exc)
                    return
                # Refused, most likely; the socket is readable and writable now, and
                # the callback reports it (not here, inside the caller's own work).
                self.error = exc
                sent = 0
            else:
                if self.dialing and sent:
                    self._made()
            if sent == len(data):
                return
            if sent:
                data = data[sent:]
            self._watch_writes(True)
        self.buffer.append(data)
        self.size += len(data)
        if self.size > HIGH_WATER and not self.protocol_paused:
            self.protocol_paused = True
            self.protocol.pause_writing()

    def write_eof(self) -> None:
        if self.closing or self.eof_wanted:
            return
        self.eof_wanted = True
        if self.size or self.dialing:
            # After the queued bytes; and never while connecting: shutdown() in the
            # handshake would abort the connect.
            self._watch_writes(True)
        else:
            self._shutdown()

    def close(self) -> None:
        """Close after the queued bytes are sent (asyncio's ``close``)."""
        if self.closing:
            return
        self.closing = True
        if not self.size or self.error is not None:
            # A connect refused meanwhile (a send met it) is reported, as the writer
            # would report it had the send waited for the handshake instead.  No
            # watching changes first: the descriptor's close ends it (`Poller.forget`).
            self._close_now(self.error)
        else:  # the writer closes once the buffer is empty; reads stop now
            self._watch_reads()

    def abort(self) -> None:
        """Close now, dropping queued bytes (asyncio's ``abort``)."""
        self.closing = True
        self._close_now(None)

    def reset(self) -> None:
        """Close now with a TCP RST (SO_LINGER 0)."""
        if not self.closed:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:  # already gone
                pass
        self.abort()

    def unsent(self) -> tuple[bytes, bool]:
        """After ``connect_failed``: every byte written, and whether write_eof() was."""
        return b"".join(self.buffer), self.eof_wanted

    def expire(self, timeout: float) -> None:
        """The connect deadline: still no sign of the connection means it timed out."""
        if not self.dialing or self.closed:
            return
        exc = self._dial_error()  # None: connected, only nothing has told us yet
        if exc is None:
            self._made()
        elif exc.errno == ENOTCONN:
            self._fail(TimeoutError(
                f"connect to {join_host_port(*self.peer[:2])} timed out after {timeout:g} s"
            ))
        else:
            self._fail(exc)

    # -- lending the socket's readiness (the relay's copier and splice pump) -------------

    def lend_reads(self, borrower: Any, on_readable: Any) -> None:
        """From now on the socket's readability calls ``on_readable``, not this stream,
        until ``take_back(borrower)``.  ``on_readable`` None: the borrower holds the
        socket but wants no reads now, and the stream's own reading applies (the relay
        keeps a pumped source paused).

        One descriptor, one registration: the borrower moves bytes on this socket's
        own descriptor and is woken through the same poller entry, so lending costs no
        system call unless the events watched change.  The stream stays the one owner:
        before it closes the socket it calls ``borrower.close()``, which must take the
        socket back (a splice pump may still hold it when the other direction ends).
        """
        self.reader = (borrower, on_readable)
        self._rewatch()

    def lend_writes(self, borrower: Any, on_writable: Any) -> None:
        """`lend_reads` for writability (a splice pump waiting for its destination)."""
        self.writer = (borrower, on_writable)
        self._rewatch()

    def take_back(self, borrower: Any) -> None:
        """Whatever ``borrower`` was lent returns to this stream's own reading/writing."""
        if self.reader is not None and self.reader[0] is borrower:
            self.reader = None
        if self.writer is not None and self.writer[0] is borrower:
            self.writer = None
        if not self.closed:
            self._rewatch()

    # -- event-loop callbacks -------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(self.error or exc)
            return
        if self.dialing:
            # Bytes prove the connection; an end of stream may be a refusal whose error
            # a send took (the kernel reports it once).
            exc = None if data else self._dial_error()
            if exc is not None:
                self._fail(exc)
                return
            self._made()
        if data:
            self.protocol.data_received(data)
            return
        self.at_eof = True
        if not self.protocol.eof_received():
            self.close()
        # Reads stop after the protocol has heard: when the end closes the connection
        # (the second FIN of a relay), the close ends the watch with no EPOLL_CTL_DEL.
        self._watch_reads()

    def _writable(self) -> None:
        if self.dialing:
            exc = self._dial_error()
            if exc is not None:
                if exc.errno != ENOTCONN or self.error is not None:
                    self._fail(exc)
                # else: still connecting (a wake-up meant for a closed descriptor of
                # the same number); the deadline bounds the wait
                return
            self._made()
        if self.size:
            data = b"".join(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(exc)
                return
            self.size -= sent
            self.buffer = [data[sent:]] if self.size else []
            if self.protocol_paused and self.size <= LOW_WATER:
                self.protocol_paused = False
                self.protocol.resume_writing()
            if self.size:
                return
        self._watch_writes(False)
        if self.closing:
            self._close_now(None)
        elif self.eof_wanted:
            self._shutdown()

    # -- inside -----------------------------------------------------------------------

    def _dial_error(self) -> OSError | None:
        """Why the connect failed, or None if the socket is connected."""
        if self.error is not None:
            return self.error
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return OSError(err, os.strerror(err))
        try:
            self.sock.getpeername()
        except OSError as exc:
            return exc
        return None

    def _made(self) -> None:
        self.dialing = False
        self._drop_deadline()
        self.protocol.connected()

    def _drop_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline[1] = None
            self.deadline = None

    def _fail(self, exc: OSError) -> None:
        if self.dialing and not self.closing:
            # Never connected: the protocol tries elsewhere with `unsent`.  Only event-
            # loop callbacks get here, so it may start that at once.
            self._release_socket()
            self.protocol.connect_failed(exc)
        else:
            self.closing = True
            self._close_now(exc)

    def _close_now(self, exc: OSError | None) -> None:
        if self.closed:
            return
        self._release_socket()
        self.loop.call_soon(self._lost, exc)

    def _release_socket(self) -> None:
        self.closed = True
        self._drop_deadline()
        for lent in (self.reader, self.writer):
            if lent is not None:
                lent[0].close()  # the borrower lets go before the descriptor closes
        assert self.reader is None and self.writer is None, "a borrower kept the socket"
        self.reading = self.writing = False
        self.poller.forget(self.fd)
        self.sock.close()

    def _lost(self, exc: OSError | None) -> None:
        protocol, self.protocol = self.protocol, None
        protocol.connection_lost(exc)

    def _shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # reset already: the reader reports it
            pass

    def _watch_reads(self) -> None:
        want = not (self.paused or self.at_eof or self.closing or self.closed)
        if want != self.reading:
            self.reading = want
            self._rewatch()

    def _watch_writes(self, want: bool) -> None:
        if want != self.writing and not (want and self.closed):
            self.writing = want
            self._rewatch()

    def _rewatch(self) -> None:
        """Tell the poller who is woken now: a borrower that wants a direction, else
        this stream if it reads (writes)."""
        on_readable = self.reader[1] if self.reader is not None else None
        if on_readable is None and self.reading:
            on_readable = self._readable
        on_writable = self.writer[1] if self.writer is not None else None
        if on_writable is None and self.writing:
            on_writable = self._writable
        self.poller.watch(self.fd, (READ if on_readable is not None else 0)
                          | (WRITE if on_writable is not None else 0), on_readable, on_writable)
