# Compiled twin of lbcore/forwarder/_copier_py.py (read its docstring for the why).
"""The steady-state copier of a TCP relay: recv and send from C, no bytes object per read."""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno
from posix.unistd cimport close as close_fd

import os

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    enum: MSG_NOSIGNAL

cdef enum:
    _BUFFER_SIZE = 64 * 1024

BUFFER_SIZE = _BUFFER_SIZE

# One buffer for every copier: the GIL is held from recv to send, and a read is sent
# (or handed back as bytes) before the callback returns, so no two copies overlap.
cdef char _buffer[_BUFFER_SIZE]


cdef inline bint _would_block(int err) noexcept:
    return err == EAGAIN or err == EINTR  # EWOULDBLOCK is EAGAIN on Linux (and BSD)


cdef class Copier:
    """Copies bytes both ways between ``client_fd`` and ``upstream_fd`` (owned from now on)."""

    cdef object relay, client, upstream, loop
    cdef readonly int client_fd, upstream_fd
    cdef bint bulk_hands_back, started

    def __init__(self, relay, loop, int client_fd, int upstream_fd, bint bulk_hands_back):
        self.relay = relay
        self.client = relay.client
        self.upstream = relay.upstream
        self.loop = loop
        self.client_fd = client_fd
        self.upstream_fd = upstream_fd
        self.bulk_hands_back = bulk_hands_back
        self.started = False

    def send(self, bytes data):
        """Send client bytes to the upstream socket now; how many went (0: it would block)."""
        cdef ssize_t sent = send(self.upstream_fd, <char *>data, len(data), MSG_NOSIGNAL)
        if sent < 0:
            if _would_block(errno):
                return 0
            raise _error(errno)
        return sent

    def start(self):
        self.loop.add_reader(self.client_fd, self.client_readable)
        self.loop.add_reader(self.upstream_fd, self.upstream_readable)
        self.started = True

    def client_readable(self):
        self._move(self.client_fd, self.upstream_fd, self.client)

    def upstream_readable(self):
        self._move(self.upstream_fd, self.client_fd, self.upstream)

    cdef int _move(self, int src, int dst, object side) except -1:
        cdef ssize_t n = recv(src, _buffer, _BUFFER_SIZE, 0)
        cdef ssize_t sent
        cdef int err
        if n <= 0:
            if n < 0:
                err = errno
                if not _would_block(err):
                    self._hand_back(side, None, _error(err))
            else:
                self._hand_back(side, None, None)
            return 0
        side.bytes += n
        sent = send(dst, _buffer, n, MSG_NOSIGNAL)
        if sent < 0:
            err = errno
            if not _would_block(err):
                self._hand_back(side, None, _error(err))
                return 0
            sent = 0
        if sent < n:
            self._hand_back(side, PyBytes_FromStringAndSize(_buffer + sent, n - sent), None)
        elif n == _BUFFER_SIZE and self.bulk_hands_back:
            self._hand_back(side, None, None)
        return 0

    cdef _hand_back(self, side, rest, exc):
        self._stop_watching()  # nothing more is read, whatever the relay does next
        self.relay.copier_left(side, rest, exc)

    cdef _stop_watching(self):
        if self.started:
            self.started = False
            self.loop.remove_reader(self.client_fd)
            self.loop.remove_reader(self.upstream_fd)

    def close(self):
        """Stop watching and close both descriptors; idempotent."""
        self._stop_watching()
        if self.client_fd >= 0:
            close_fd(self.client_fd)
        if self.upstream_fd >= 0:
            close_fd(self.upstream_fd)
        self.client_fd = self.upstream_fd = -1


cdef object _error(int err):
    return OSError(err, os.strerror(err))
