"""A file or a directory of files, watched with inotify and read again when it changes.

Why inotify through ctypes: the kernel tells at once which directory changed, at no
cost while nothing does, and libc's three calls need no C extension or package (a
polling loop would wake every interval and still see a change only on the next tick).
lbcore's kernel modes are Linux-only anyway; where libc has no inotify, `FileSource`
refuses to open with a `ConfigError` that says so.

What is watched is the *directory* (a named file's parent): editors and ``kubectl``
write a new file and rename it over the old one, which replaces the inode a watch on
the file would have followed, and a Kubernetes ConfigMap volume swaps a symlink in the
directory.  Any event in the directory leads to a rescan that compares each file's
(device, inode, size, mtime) with what was read last, and reads only the files that
differ.  Only completed writes count (close after write, rename, create, delete,
attribute change): a file written in several pieces is read once its writer closes it.
Bursts are debounced: the rescan waits until the directory has been quiet for
`QUIET` seconds (at most `LONGEST` after the first event).

Rules:

- A directory's files are its non-hidden ``*.yaml``, ``*.yml`` and ``*.json`` files, in
  name order: editors' swap and backup files (``.name.swp``, ``name~``, ``#name#``,
  ``4913``) and hidden temp files are never read.  A file that is added is read; a file
  that is removed takes its services with it.
- A file that cannot be read or parsed (a syntax error, a half-saved file, a named file
  that has gone) keeps serving its last good content, and the problem says so; it is
  never taken as empty.  Bad entries in a file that parses are left out and reported,
  the rest served.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from typing import AsyncIterator, Callable, NamedTuple

from ..errors import ConfigError
from . import locate
from ._problems import Problems, SourceError
from ._watching import Changes, problem_lines, snapshot, snapshots
from .documents import read
from .live import Snapshot

__all__ = ["FileSource", "QUIET", "LONGEST", "SUFFIXES"]

#: Seconds without an event before a burst of events is taken as finished.
QUIET = 0.1
#: Seconds after a burst's first event at which it is read even if events go on.
LONGEST = 1.0
#: The files of a directory that are read.
SUFFIXES = (".yaml", ".yml", ".json")

# <sys/inotify.h>
_IN_ATTRIB = 0x00000004
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_FROM = 0x00000040
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE = 0x00000200
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EMPTY = "holds no document; expected lbcore's 'services:' or Kubernetes objects"
_MASK = _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_ONLYDIR


class _Inotify:
    """One inotify descriptor watching one directory; only "something changed" matters."""

    def __init__(self, directory: str):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if not hasattr(libc, "inotify_init1"):
            raise ConfigError("source", directory, "cannot be watched: this system's C library has no inotify")
        self.fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK) < 0:
            error = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(error, f"inotify_add_watch {directory}: {os.strerror(error)}")

    def drain(self) -> None:
        """Read and drop every queued event (a rescan finds what changed)."""
        try:
            while os.read(self.fd, 65536):
                pass
        except BlockingIOError:
            pass

    async def readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(self.fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class _File(NamedTuple):
    #: (device, inode, size, mtime in ns) when read, or None if it could not be stat'ed.
    signature: tuple[int, int, int, int] | None
    #: The documents of its last good read, or None if it never read well.
    documents: list[object] | None
    #: Why its last read failed (empty if it did not).
    problems: tuple[str, ...]


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileSource:
    """The Services of a file or a directory of files; see the module docstring.

    ``path`` must exist when the source is opened (a mistyped path fails at once).
    """

    connected = True

    def __init__(self, path: str, *, clock: Callable[[], float]):
        if not os.path.exists(path):
            raise ConfigError("source", path, "does not exist; give a file, a directory of "
                              ".yaml/.yml/.json files, etcd://HOST:PORT/PREFIX or kubernetes")
        self.source = path
        self._clock = clock
        self._is_directory = os.path.isdir(path)
        self._directory = path if self._is_directory else os.path.dirname(os.path.abspath(path))
        self._files: dict[str, _File] = {}

    def watch(self) -> AsyncIterator[Snapshot]:
        changes = Changes(self._clock)
        return snapshots(self._read(changes), changes, self._snapshot)

    async def _read(self, changes: Changes) -> None:
        inotify = _Inotify(self._directory)  # before the first read: no change slips between
        try:
            self._rescan()
            changes.seen()
            while True:
                await inotify.readable()
                first = self._clock()
                await self._quiet(inotify)
                if self._rescan():
                    changes.seen(at=first)  # when it happened, not when the debounce ended
        finally:
            inotify.close()

    async def _quiet(self, inotify: _Inotify) -> None:
        """Return once no event came for `QUIET` seconds, or `LONGEST` after the first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LONGEST
        while True:
            inotify.drain()
            wait = min(QUIET, deadline - loop.time())
            if wait <= 0:
                return
            try:
                await asyncio.wait_for(inotify.readable(), wait)
            except asyncio.TimeoutError:
                return

    def _paths(self) -> list[str]:
        if not self._is_directory:
            return [self.source]
        try:
            names = sorted(os.listdir(self.source))
        except OSError:
            return list(self._files)  # the directory itself is unreadable: keep what it had
        return [os.path.join(self.source, name) for name in names
                if not name.startswith(".") and name.endswith(SUFFIXES)
                and os.path.isfile(os.path.join(self.source, name))]

    def _rescan(self) -> bool:
        """Read every file whose signature changed; whether anything did."""
        paths = self._paths()
        changed = False
        for gone in set(self._files).difference(paths):
            del self._files[gone]
            changed = True
        for path in paths:
            signature = _signature(path)
            known = self._files.get(path)
            if known is not None and known.signature == signature and signature is not None:
                continue
            try:
                documents = read(path)
                if not documents:  # truncated by a writer that has not written yet
                    raise SourceError([ConfigError("file", path, _EMPTY).at(path)])
                new = _File(signature, documents, ())
            except SourceError as error:
                lines = problem_lines(error)
                kept = known.documents if known is not None else None
                if kept is not None:
                    lines = [f"{line} (its last good content is still served)" for line in lines]
                new = _File(signature, kept, tuple(lines))
            self._files[path] = new
            changed = changed or known is None or (known.documents, known.problems) != (new.documents, new.problems)
        return changed

    def _snapshot(self, changed_at: float) -> Snapshot:
        problems = Problems()
        notes: list[str] = []
        read_problems = [line for path in sorted(self._files) for line in self._files[path].problems]
        parsed = [(path, file.documents) for path, file in sorted(self._files.items()) if file.documents is not None]
        located = locate(parsed, problems, notes)
        return snapshot(self.source, located, problems, changed_at, earlier=read_problems, notes=notes)
