# Compiled twin of lbcore/_pure/poller.py (read its docstring for the why).
"""The forwarder's own epoll set: epoll_ctl and epoll_wait from C, nothing allocated per event."""

cimport cython
from libc.errno cimport EINTR, errno
from libc.stdint cimport uint32_t, uint64_t
from posix.unistd cimport close as close_fd

import os

from lbcore._shared.poll_events import READ, WRITE

__all__ = ["Poller"]

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        int fd
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

cdef enum:
    # Events fetched per wait.  A full batch leaves the rest ready in the set, which the
    # loop sees as still readable (level-triggered), so it calls `_ready` again.
    _BATCH = 256

cdef int _READ = READ, _WRITE = WRITE
# An error or hang-up wakes both directions (the loop's rule).
cdef uint32_t _READABLE = EPOLLIN | EPOLLERR | EPOLLHUP
cdef uint32_t _WRITABLE = EPOLLOUT | EPOLLERR | EPOLLHUP


cdef object _error(int err):
    return OSError(err, os.strerror(err))  # as select.epoll raises it (a FileExistsError, ...)


@cython.final
cdef class _Entry:
    """What a watched descriptor waits for, and whom each direction wakes."""

    cdef readonly int events
    cdef readonly object on_readable, on_writable


@cython.final
cdef class Poller:
    """Sockets watched through one epoll set; each with a callback per direction."""

    cdef readonly object loop
    cdef readonly dict watched  # fd -> _Entry
    cdef int epfd

    def __cinit__(self):
        self.epfd = -1

    def __init__(self, loop):
        cdef int epfd = epoll_create1(EPOLL_CLOEXEC)
        if epfd < 0:
            raise _error(errno)
        self.epfd = epfd
        self.loop = loop
        self.watched = {}
        loop.add_reader(epfd, self._ready)

    def __dealloc__(self):
        if self.epfd >= 0:  # never closed (the loop let go of `_ready`): as select.epoll does
            close_fd(self.epfd)

    def fileno(self):
        """The epoll set's own descriptor (the one the loop watches)."""
        if self.epfd < 0:
            raise ValueError("I/O operation on closed epoll object")
        return self.epfd

    def watch(self, fd, int events, on_readable=None, on_writable=None):
        """Call ``on_readable`` (``on_writable``) when ``fd`` is readable (writable) for
        ``events`` (READ, WRITE, both, or 0: not at all).

        The kernel hears only of a change of ``events``: handing a direction to another
        callback (a stream lending its readiness to the copier) costs no system call.
        An OSError from adding or changing leaves the entry as it was; stopping drops
        it whatever the kernel says (a descriptor it does not know is not watched)."""
        cdef _Entry entry
        found = self.watched.get(fd)
        if found is None:
            if events:
                self._control(EPOLL_CTL_ADD, fd, events)
                entry = _Entry.__new__(_Entry)
                entry.events = events
                entry.on_readable = on_readable
                entry.on_writable = on_writable
                self.watched[fd] = entry
            return
        entry = <_Entry>found
        if not events:
            del self.watched[fd]
            self._control(EPOLL_CTL_DEL, fd, 0)
            return
        if events != entry.events:
            self._control(EPOLL_CTL_MOD, fd, events)
            entry.events = events
        entry.on_readable = on_readable
        entry.on_writable = on_writable

    cdef int _control(self, int op, int fd, int events) except -1:
        cdef epoll_event change
        change.events = (EPOLLIN if events & _READ else 0) | (EPOLLOUT if events & _WRITE else 0)
        change.data.u64 = 0  # the whole union defined, then the descriptor in it
        change.data.fd = fd
        if epoll_ctl(self.epfd, op, fd, &change) < 0:
            raise _error(errno)
        return 0

    def forget(self, fd):
        """``fd`` is about to be closed: stop watching it without telling the kernel
        (close(2) takes it out of the set; see the pure twin)."""
        self.watched.pop(fd, None)

    def _ready(self):
        # One epoll_wait(0) and a dispatch per event, the pure twin's rules: a callback
        # of None is a direction not watched; after a read callback, the write callback
        # only if the descriptor's entry is still the same (not closed, maybe reused).
        cdef epoll_event ready[_BATCH]
        cdef int count = epoll_wait(self.epfd, ready, _BATCH, 0)
        cdef int i
        cdef uint32_t happened
        cdef _Entry entry
        if count < 0:
            if errno == EINTR:
                return  # still ready: the loop calls again
            raise _error(errno)
        watched = self.watched
        for i in range(count):
            happened = ready[i].events
            fd = ready[i].data.fd
            found = watched.get(fd)
            if found is None:
                continue  # forgotten, its close not yet seen by the kernel
            entry = <_Entry>found
            if happened & _READABLE:
                callback = entry.on_readable
                if callback is not None:
                    callback()
                    if not happened & _WRITABLE or watched.get(fd) is not entry:
                        continue
            if happened & _WRITABLE:
                callback = entry.on_writable
                if callback is not None:
                    callback()

    def close(self):
        """Stop watching everything and close the epoll set; idempotent."""
        if self.epfd < 0:
            return
        self.loop.remove_reader(self.epfd)
        close_fd(self.epfd)
        self.epfd = -1
        self.watched.clear()
