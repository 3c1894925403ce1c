# Compiled twin of lbcore/_pure/copier.py (read its docstring for the why).
"""The steady-state copier of a TCP relay: recv and send from C, nothing allocated per read."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno

import os

__all__ = ["BUFFER_SIZE", "Copier"]

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    enum: MSG_NOSIGNAL

cdef enum:
    _BUFFER_SIZE = 64 * 1024

BUFFER_SIZE = _BUFFER_SIZE

# One buffer for every copier: the GIL is held from recv to send, and a read is sent
# (or handed back as bytes) before the copy returns, so no two copies overlap.
cdef char _buffer[_BUFFER_SIZE]


cdef inline bint _would_block(int err) noexcept:
    return err == EAGAIN or err == EINTR  # EWOULDBLOCK is EAGAIN on Linux (and BSD)


cdef object _error(int err):
    return OSError(err, os.strerror(err))


cdef class Copier:
    """Copies bytes both ways between the sockets of the ``client`` and ``upstream``
    transports (`stream.Stream`), from `start` until `close`."""

    cdef object relay
    cdef readonly object client, upstream
    cdef int client_fd, upstream_fd  # the transports' own descriptors, never closed here
    cdef readonly unsigned long long client_bytes, upstream_bytes
    cdef bint bulk_hands_back, started

    def __init__(self, relay, client, upstream, bint bulk_hands_back):
        self.relay = relay
        self.client = client
        self.upstream = upstream
        self.client_fd = client.fd
        self.upstream_fd = upstream.fd
        self.bulk_hands_back = bulk_hands_back

    def send(self, bytes data):
        """Send client bytes to the upstream socket now; how many went (0: it would block).

        Not counted: the relay counts what it was given.
        """
        cdef ssize_t sent = send(self.upstream_fd, <char *>data, len(data), MSG_NOSIGNAL)
        if sent < 0:
            if _would_block(errno):
                return 0
            raise _error(errno)
        return sent

    def start(self):
        """Borrow both sockets' readability from their transports."""
        self.started = True
        self.client.lend_reads(self, self.client_readable)
        self.upstream.lend_reads(self, self.upstream_readable)

    def client_readable(self):
        self._move(self.client_fd, True)

    def upstream_readable(self):
        self._move(self.upstream_fd, False)

    cdef int _move(self, int fd, bint from_client) except -1:
        """One read from ``fd`` sent on to the other socket."""
        cdef ssize_t n = recv(fd, _buffer, _BUFFER_SIZE, 0)
        cdef ssize_t sent
        cdef int err
        if n <= 0:
            if n < 0:
                err = errno
                if not _would_block(err):
                    self._hand_back(from_client, None, _error(err))
            else:
                self._hand_back(from_client, None, None)
            return 0
        if from_client:  # counted before any hand-back: the relay takes the counts then
            self.client_bytes += n
        else:
            self.upstream_bytes += n
        sent = send(self.upstream_fd if from_client else self.client_fd, _buffer, n, MSG_NOSIGNAL)
        if sent < 0:
            err = errno
            if not _would_block(err):
                self._hand_back(from_client, None, _error(err))
                return 0
            sent = 0
        if sent < n:
            self._hand_back(from_client, PyBytes_FromStringAndSize(_buffer + sent, n - sent), None)
        elif n == _BUFFER_SIZE and self.bulk_hands_back:
            self._hand_back(from_client, None, None)
        return 0

    cdef _hand_back(self, bint from_client, rest, exc):
        self.close()  # nothing more is read, whatever the relay does next
        relay = self.relay
        relay.copier_left(relay.client if from_client else relay.upstream, rest, exc)

    def close(self):
        """Give both sockets back to their transports; idempotent."""
        if self.started:
            self.started = False
            self.client.take_back(self)
            self.upstream.take_back(self)
