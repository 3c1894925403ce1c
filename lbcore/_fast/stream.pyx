# Compiled twin of lbcore/_pure/stream.py (read its docstring for the why).
"""The sockets of a TCP relay and their transport, every system call made from C.

The same transport as the pure twin, call for call.  What compiling buys, per
connection: no Python socket object (its constructor validates the descriptor with a
getsockname, and `accept` takes a non-blocking descriptor from accept4 instead of a
blocking one that needs an ioctl), and none of the transport's own bookkeeping
interpreted.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINPROGRESS, EINTR, ENOTCONN, errno
from libc.string cimport memset

import os
import socket as _socket

from .._shared.poll_events import READ, WRITE
from ..models import join_host_port

__all__ = ["Stream", "accept", "accepted", "dial", "HIGH_WATER", "LOW_WATER", "READ_SIZE"]

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct linger:
        int l_onoff
        int l_linger
    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr *addr, socklen_t len)
    int accept4(int fd, sockaddr *addr, socklen_t *len, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int shutdown(int fd, int how)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
    int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
    int getpeername(int fd, sockaddr *addr, socklen_t *len)
    enum:
        AF_INET
        AF_INET6
        SOCK_STREAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_ERROR
        SO_LINGER
        SHUT_WR
        MSG_NOSIGNAL

cdef extern from "<netinet/in.h>" nogil:
    ctypedef unsigned short in_port_t
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        in_port_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        in_port_t sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)
    enum:
        IPPROTO_TCP

cdef extern from "<netinet/tcp.h>" nogil:
    enum:
        TCP_NODELAY

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    enum:
        INET6_ADDRSTRLEN

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

#: asyncio's default write-buffer limits (``pause_writing`` above, ``resume_writing`` at
#: or below the low mark).
HIGH_WATER = 64 * 1024
LOW_WATER = HIGH_WATER // 4
#: Bytes asked for per read: what asyncio's and uvloop's transports read at most.
READ_SIZE = 256 * 1024

cdef enum:
    _HIGH_WATER = 64 * 1024
    _LOW_WATER = 16 * 1024  # HIGH_WATER // 4
    _READ_SIZE = 256 * 1024
    _READ = 1
    _WRITE = 2

assert (READ, WRITE) == (_READ, _WRITE)

# One buffer for every read: the GIL is held from recv until its bytes object is made.
cdef char _buffer[_READ_SIZE]
cdef int _ONE = 1
cdef linger _LINGER_RESET = linger(1, 0)


cdef object _error(int err):
    return OSError(err, os.strerror(err))


cdef inline bint _would_block(int err) noexcept:
    return err == EAGAIN or err == EINTR  # EWOULDBLOCK is EAGAIN on Linux


cdef object _address(sockaddr_storage *addr):
    """A sockaddr as the socket module gives it: (host, port) or (host, port, flow, scope)."""
    cdef char text[INET6_ADDRSTRLEN]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if addr.ss_family == AF_INET:
        v4 = <sockaddr_in *>addr
        inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
        return (text.decode("ascii"), ntohs(v4.sin_port))
    v6 = <sockaddr_in6 *>addr
    inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
    return (text.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo), v6.sin6_scope_id)


def accept(listening):
    """One connection from the listening socket: (descriptor, peer address).

    The descriptor is non-blocking and close-on-exec from accept4 itself (no ioctl).
    BlockingIOError when none is waiting; OSError as ``socket.accept`` raises it.
    """
    cdef sockaddr_storage addr
    cdef socklen_t size = sizeof(addr)
    cdef int fd = accept4(listening.fileno(), <sockaddr *>&addr, &size,
                          SOCK_NONBLOCK | SOCK_CLOEXEC)
    if fd < 0:
        raise _error(errno)
    return fd, _address(&addr)


def accepted(loop, poller, int fd, int family, address, protocol):
    """A stream over the connection ``fd`` from `accept`, whose peer is ``address``;
    calls ``protocol.connection_made``.  The descriptor is closed if that fails."""
    if setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &_ONE, sizeof(_ONE)) < 0:
        err = errno
        close(fd)
        raise _error(err)
    transport = Stream(loop, poller, fd, protocol, address, False)
    protocol.connection_made(transport)
    return transport


def dial(loop, poller, endpoint, protocol):
    """Start connecting to ``endpoint``; OSError if the connect fails at once.

    Calls ``protocol.connection_made`` at once; ``connected`` or ``connect_failed``
    follow."""
    cdef sockaddr_storage addr
    cdef sockaddr_in *v4 = <sockaddr_in *>&addr
    cdef sockaddr_in6 *v6 = <sockaddr_in6 *>&addr
    cdef socklen_t size
    cdef int family, fd, err
    ip = endpoint.ip
    cdef bytes ip_bytes = ip.encode("ascii")
    cdef unsigned short port = endpoint.port
    memset(&addr, 0, sizeof(addr))
    if b":" in ip_bytes:
        family, size = AF_INET6, sizeof(sockaddr_in6)
        v6.sin6_family, v6.sin6_port = AF_INET6, htons(port)
        ok = inet_pton(AF_INET6, ip_bytes, &v6.sin6_addr)
    else:
        family, size = AF_INET, sizeof(sockaddr_in)
        v4.sin_family, v4.sin_port = AF_INET, htons(port)
        ok = inet_pton(AF_INET, ip_bytes, &v4.sin_addr)
    if ok != 1:  # models.Endpoint takes IP addresses only: not reached from a Service
        raise ValueError(f"ip: {ip!r} is not an IP address")
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        raise _error(errno)
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &_ONE, sizeof(_ONE)) < 0
            or connect(fd, <sockaddr *>&addr, size) < 0 and errno != EINPROGRESS and errno != EINTR):
        err = errno
        close(fd)
        raise _error(err)
    transport = Stream(loop, poller, fd, protocol, (ip, port), True)
    protocol.connection_made(transport)
    return transport


cdef class Stream:
    """An asyncio-style transport over a non-blocking TCP socket (see the pure twin)."""

    cdef readonly object loop, poller, peer
    cdef readonly int fd
    cdef public object protocol
    cdef list buffer  # unsent bytes, oldest first
    cdef Py_ssize_t size
    cdef readonly bint dialing
    cdef object error  # a send's error while dialing, reported soon
    cdef bint reading, paused, at_eof, writing, eof_wanted, closing
    cdef readonly bint closed, protocol_paused
    cdef public object deadline  # a `Deadlines` entry, let go once decided
    # A direction lent out (`lend_reads`, `lend_writes`): (borrower, its callback).
    cdef object reader, writer
    cdef object sock  # a socket object over ``fd``, made only if asked for

    def __init__(self, loop, poller, int fd, protocol, peer, bint dialing):
        self.loop = loop
        self.poller = poller
        self.fd = fd
        self.peer = peer
        self.protocol = protocol
        self.buffer = []
        self.dialing = dialing
        # Read from the start: a refused or reset connect shows here first, and so do
        # the first bytes of a server that speaks first.
        self.reading = True
        poller.watch(fd, _READ, self._readable)

    # -- the transport calls the relay makes ------------------------------------------

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self.peer
        if name == "socket":
            # Made on demand (the relay never asks), and let go of before the stream
            # closes the descriptor, which stays this stream's alone.
            if self.sock is None and not self.closed:
                self.sock = _socket.socket(fileno=self.fd)
            return self.sock
        return default

    def is_closing(self):
        return self.closing

    def get_write_buffer_size(self):
        return self.size

    def pause_reading(self):
        self.paused = True
        self._watch_reads()
        if self.dialing:
            # Reads were how the connect's outcome showed: writability shows it now.
            self._watch_writes(True)

    def resume_reading(self):
        self.paused = False
        self._watch_reads()

    def write(self, data):
        cdef ssize_t sent = 0
        cdef int err
        if self.closing:
            return
        if type(data) is not bytes:
            data = bytes(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if not self.size and self.error is None:
            sent = send(self.fd, PyBytes_AS_STRING(data), n, MSG_NOSIGNAL)
            if sent < 0:
                err = errno
                sent = 0
                if not _would_block(err):
                    if not self.dialing:
                        self._fail(_error(err))
                        return
                    # Refused, most likely; the callback reports it (not here, inside
                    # the caller's own work).
                    self.error = _error(err)
            elif self.dialing and sent:
                self._made()
            if sent == n:
                return
            if sent:
                data = data[sent:]
            self._watch_writes(True)
        self.buffer.append(data)
        self.size += n - sent
        if self.size > _HIGH_WATER and not self.protocol_paused:
            self.protocol_paused = True
            self.protocol.pause_writing()

    def write_eof(self):
        if self.closing or self.eof_wanted:
            return
        self.eof_wanted = True
        if self.size or self.dialing:
            # After the queued bytes; and never while connecting: shutdown() in the
            # handshake would abort the connect.
            self._watch_writes(True)
        else:
            self._shutdown()

    def close(self):
        """Close after the queued bytes are sent (asyncio's ``close``)."""
        if self.closing:
            return
        self.closing = True
        if not self.size or self.error is not None:
            self._close_now(self.error)  # no EPOLL_CTL_MOD first: the close ends the watch
        else:  # the writer closes once the buffer is empty; reads stop now
            self._watch_reads()

    def abort(self):
        """Close now, dropping queued bytes (asyncio's ``abort``)."""
        self.closing = True
        self._close_now(None)

    def reset(self):
        """Close now with a TCP RST (SO_LINGER 0)."""
        if not self.closed:
            setsockopt(self.fd, SOL_SOCKET, SO_LINGER, &_LINGER_RESET, sizeof(_LINGER_RESET))
        self.abort()

    def unsent(self):
        """After ``connect_failed``: every byte written, and whether write_eof() was."""
        return b"".join(self.buffer), self.eof_wanted

    def expire(self, timeout):
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

    def lend_reads(self, borrower, on_readable):
        """The pure twin's `lend_reads`."""
        self.reader = (borrower, on_readable)
        self._rewatch()

    def lend_writes(self, borrower, on_writable):
        """The pure twin's `lend_writes`."""
        self.writer = (borrower, on_writable)
        self._rewatch()

    def take_back(self, borrower):
        """Whatever ``borrower`` was lent returns to this stream's own reading/writing."""
        if self.reader is not None and self.reader[0] is borrower:
            self.reader = None
        if self.writer is not None and self.writer[0] is borrower:
            self.writer = None
        if not self.closed:
            self._rewatch()

    # -- event-loop callbacks -------------------------------------------------------

    def _readable(self):
        cdef ssize_t n = recv(self.fd, _buffer, _READ_SIZE, 0)
        cdef int err
        if n < 0:
            err = errno
            if not _would_block(err):
                self._fail(self.error or _error(err))
            return
        if self.dialing:
            # Bytes prove the connection; an end of stream may be a refusal whose error
            # a send took (the kernel reports it once).
            exc = None if n else self._dial_error()
            if exc is not None:
                self._fail(exc)
                return
            self._made()
        if n:
            self.protocol.data_received(PyBytes_FromStringAndSize(_buffer, n))
            return
        self.at_eof = True
        if not self.protocol.eof_received():
            self.close()
        # Reads stop after the protocol has heard: when the end closes the connection
        # (the second FIN of a relay), the close ends the watch with no EPOLL_CTL_DEL.
        self._watch_reads()

    def _writable(self):
        cdef ssize_t sent
        cdef int err
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
            sent = send(self.fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), MSG_NOSIGNAL)
            if sent < 0:
                err = errno
                if not _would_block(err):
                    self._fail(_error(err))
                return
            self.size -= sent
            self.buffer = [data[sent:]] if self.size else []
            if self.protocol_paused and self.size <= _LOW_WATER:
                self.protocol_paused = False
                self.protocol.resume_writing()
            if self.size:
                return
        self._watch_writes(False)
        if self.closing:
            self._close_now(None)
        elif self.eof_wanted:
            self._shutdown()

    def _lost(self, exc):
        protocol, self.protocol = self.protocol, None
        protocol.connection_lost(exc)

    # -- inside -----------------------------------------------------------------------

    cdef object _dial_error(self):
        """Why the connect failed, or None if the socket is connected."""
        cdef int err = 0
        cdef socklen_t size = sizeof(err)
        cdef sockaddr_storage addr
        if self.error is not None:
            return self.error
        if getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &err, &size) < 0:
            return _error(errno)
        if err:
            return _error(err)
        size = sizeof(addr)
        if getpeername(self.fd, <sockaddr *>&addr, &size) < 0:
            return _error(errno)
        return None

    cdef _made(self):
        self.dialing = False
        self._drop_deadline()
        self.protocol.connected()

    cdef inline _drop_deadline(self):
        if self.deadline is not None:
            self.deadline[1] = None
            self.deadline = None

    cdef _fail(self, exc):
        if self.dialing and not self.closing:
            # Never connected: the protocol tries elsewhere with `unsent`.  Only event-
            # loop callbacks get here, so it may start that at once.
            self._release_socket()
            self.protocol.connect_failed(exc)
        else:
            self.closing = True
            self._close_now(exc)

    cdef _close_now(self, exc):
        if self.closed:
            return
        self._release_socket()
        self.loop.call_soon(self._lost, exc)

    cdef _release_socket(self):
        self.closed = True
        self._drop_deadline()
        for lent in (self.reader, self.writer):
            if lent is not None:
                lent[0].close()  # the borrower lets go before the descriptor closes
        assert self.reader is None and self.writer is None, "a borrower kept the socket"
        self.reading = self.writing = False
        self.poller.forget(self.fd)
        if self.sock is not None:
            self.sock.detach()  # the descriptor is closed here, once
            self.sock = None
        close(self.fd)

    cdef inline _shutdown(self):
        shutdown(self.fd, SHUT_WR)  # an error means reset already: the reader reports it

    cdef _watch_reads(self):
        cdef bint want = not (self.paused or self.at_eof or self.closing or self.closed)
        if want != self.reading:
            self.reading = want
            self._rewatch()

    cdef _watch_writes(self, bint want):
        if want != self.writing and not (want and self.closed):
            self.writing = want
            self._rewatch()

    cdef _rewatch(self):
        """Tell the poller who is woken now: a borrower that wants a direction, else
        this stream if it reads (writes)."""
        on_readable = self.reader[1] if self.reader is not None else None
        if on_readable is None and self.reading:
            on_readable = self._readable
        on_writable = self.writer[1] if self.writer is not None else None
        if on_writable is None and self.writing:
            on_writable = self._writable
        self.poller.watch(self.fd, (_READ if on_readable is not None else 0)
                          | (_WRITE if on_writable is not None else 0), on_readable, on_writable)
