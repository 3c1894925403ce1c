"""The relay's sockets: `stream.Stream` (dialing and accepted), `poller`, `deadlines`.

Real TCP sockets on 127.0.0.1 under both event loops, through both pollers (the
forwarder's own epoll set and the loop's watching); a recording protocol stands in for
the relay.  A refused port is a port just closed; a blackhole is a listener whose accept
queue is full (SYNs dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
from typing import Any

import pytest

from lbcore import Endpoint
from lbcore.forwarder import ManualClock
from lbcore.forwarder import poller as poller_module
from lbcore.forwarder.deadlines import Deadlines
from lbcore.forwarder.stream import HIGH_WATER, accepted, dial

from forwarder_support import LOOPS, eventually, free_port, payload, run_async


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["epoll", "loop"])
def make_poller(request: pytest.FixtureRequest) -> Any:
    if request.param == "epoll":
        return poller_module.Poller
    return poller_module.LoopPoller


class Recorder(asyncio.Protocol):
    """Records every call a stream makes, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.data = bytearray()
        self.transport: Any = None
        self.lost = asyncio.get_running_loop().create_future()
        self.failed = asyncio.get_running_loop().create_future()
        self.keep_open_at_eof = True

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.calls.append(("made",))

    def connected(self) -> None:
        self.calls.append(("connected",))

    def connect_failed(self, exc: OSError) -> None:
        self.calls.append(("connect_failed", exc))
        self.failed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.calls.append(("eof",))
        return self.keep_open_at_eof

    def pause_writing(self) -> None:
        self.calls.append(("pause",))

    def resume_writing(self) -> None:
        self.calls.append(("resume",))

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append(("lost", exc))
        self.lost.set_result(exc)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


def endpoint_of(sock: socket.socket) -> Endpoint:
    return Endpoint("127.0.0.1", sock.getsockname()[1])


async def accept(loop: asyncio.AbstractEventLoop, listener: socket.socket) -> socket.socket:
    conn, _ = await loop.sock_accept(listener)
    conn.setblocking(False)
    return conn


async def read_all(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    got = bytearray()
    while chunk := await loop.sock_recv(conn, 1 << 16):
        got += chunk
    return bytes(got)


@contextlib.asynccontextmanager
async def dialing(make_poller: Any) -> Any:
    """A stream dialed to a fresh listener, not yet accepted: (loop, listener, stream,
    protocol).  The listener and the poller are closed afterwards."""
    loop = asyncio.get_running_loop()
    poller = make_poller(loop)
    with listening() as listener:
        protocol = Recorder()
        stream = dial(loop, poller, endpoint_of(listener), protocol)
        try:
            yield loop, listener, stream, protocol
        finally:
            poller.close()


@contextlib.asynccontextmanager
async def dialed(make_poller: Any) -> Any:
    """The same, accepted: (loop, stream, protocol, the accepted socket), which is
    closed afterwards too."""
    async with dialing(make_poller) as (loop, listener, stream, protocol):
        conn = await accept(loop, listener)
        try:
            yield loop, stream, protocol, conn
        finally:
            conn.close()


def test_a_dialing_stream_takes_writes_before_the_handshake_is_known(loop_kind, make_poller):
    async def main():
        async with dialing(make_poller) as (loop, listener, stream, protocol):
            made_first = protocol.names() == ["made"] and stream.dialing
            stream.write(b"hello ")
            stream.write(b"world")
            stream.write_eof()
            conn = await accept(loop, listener)
            got = await read_all(loop, conn)
            await loop.sock_sendall(conn, b"answer")
            conn.close()
            while not protocol.lost.done():
                await asyncio.sleep(0.01)
                if ("eof",) in protocol.calls:
                    stream.close()
            return made_first, got, bytes(protocol.data), protocol.names()

    made_first, got, answer, names = run_async(loop_kind, main())
    assert made_first
    assert got == b"hello world"
    assert answer == b"answer"
    assert names == ["made", "connected", "eof", "lost"]  # connected once, lost once


@pytest.mark.parametrize("written", [b"", b"request"])
@pytest.mark.parametrize("eof", [False, True])
def test_a_refused_connect_is_connect_failed_with_every_byte_unsent(
    loop_kind, make_poller, written, eof
):
    async def main():
        loop = asyncio.get_running_loop()
        poller = make_poller(loop)
        protocol = Recorder()
        stream = dial(loop, poller, Endpoint("127.0.0.1", free_port()), protocol)
        if written:
            stream.write(written)
        if eof:
            stream.write_eof()
        exc = await asyncio.wait_for(protocol.failed, 5)
        await asyncio.sleep(0.05)  # nothing more may come
        unsent = stream.unsent()
        poller.close()
        return exc, unsent, protocol.names()

    exc, unsent, names = run_async(loop_kind, main())
    assert isinstance(exc, ConnectionRefusedError)
    assert unsent == (written, eof)
    assert names == ["made", "connect_failed"]  # never connected, never "lost"


@pytest.mark.parametrize("paused", ["paused", "paused and resumed"])
def test_a_connect_refused_while_reading_is_paused_is_heard_without_a_deadline(
    loop_kind, make_poller, paused
):
    """Reads are how a refusal shows while nothing is queued; pausing them must not hide
    it until a deadline (there is none here)."""

    async def main():
        loop = asyncio.get_running_loop()
        poller = make_poller(loop)
        protocol = Recorder()
        stream = dial(loop, poller, Endpoint("127.0.0.1", free_port()), protocol)
        stream.pause_reading()
        if paused == "paused and resumed":
            stream.resume_reading()
        exc = await asyncio.wait_for(protocol.failed, 5)
        await asyncio.sleep(0.05)  # nothing more may come
        poller.close()
        return exc, protocol.names()

    exc, names = run_async(loop_kind, main())
    assert isinstance(exc, ConnectionRefusedError)
    assert names == ["made", "connect_failed"]


def test_a_connect_made_while_reading_is_paused_is_heard_and_stays_paused(loop_kind, make_poller):
    async def main():
        async with dialing(make_poller) as (loop, listener, stream, protocol):
            stream.pause_reading()
            conn = await accept(loop, listener)
            await loop.sock_sendall(conn, b"early")
            await asyncio.sleep(0.1)
            while_paused = protocol.names(), bytes(protocol.data)
            stream.resume_reading()
            await eventually(lambda: protocol.data)
            data = bytes(protocol.data)
            conn.close()
            stream.abort()
            await protocol.lost
            return while_paused, data

    while_paused, data = run_async(loop_kind, main())
    assert while_paused == (["made", "connected"], b"")  # heard, and nothing read
    assert data == b"early"


@pytest.mark.parametrize("how", ["close", "abort"])
def test_closing_a_refused_dialing_stream_reports_the_refusal_once(loop_kind, make_poller, how):
    """Closed while its connect fails: the protocol hears connection_lost with the error
    (whichever of the send or the close met it first), never connect_failed."""

    async def main():
        loop = asyncio.get_running_loop()
        poller = make_poller(loop)
        protocol = Recorder()
        stream = dial(loop, poller, Endpoint("127.0.0.1", free_port()), protocol)
        stream.write(b"request")  # meets the refusal, or waits for the handshake
        getattr(stream, how)()
        exc = await asyncio.wait_for(protocol.lost, 5)
        await asyncio.sleep(0.05)  # nothing more may come
        poller.close()
        return exc, protocol.names()

    exc, names = run_async(loop_kind, main())
    assert names == ["made", "lost"]
    if how == "close":
        assert isinstance(exc, ConnectionRefusedError)
    else:
        assert exc is None  # abort() is the caller's own end: asyncio reports None


def test_a_decided_connect_lets_go_of_its_deadline_entry(loop_kind, make_poller):
    """The deadline queue must not keep a made (or closed) stream, and with it a relay,
    alive until the timeout passes."""

    async def main():
        loop = asyncio.get_running_loop()
        poller = make_poller(loop)
        deadlines = Deadlines(ManualClock())
        with listening() as listener:
            made = dial(loop, poller, endpoint_of(listener), Recorder())
            made_entry = made.deadline = deadlines.add(made, 30)
            made.write(b"x")  # the send proves the connection
            closed = dial(loop, poller, endpoint_of(listener), Recorder())
            closed_entry = closed.deadline = deadlines.add(closed, 30)
            closed.abort()
            result = (made_entry[1], closed_entry[1], made.deadline, closed.deadline)
            made.abort()
            await asyncio.sleep(0.01)
            poller.close()
            return result

    assert run_async(loop_kind, main()) == (None, None, None, None)


def test_the_deadline_times_out_a_connect_to_a_blackhole(loop_kind, make_poller, blackhole):
    hole = blackhole()

    async def main():
        loop = asyncio.get_running_loop()
        poller = make_poller(loop)
        clock = ManualClock()
        deadlines = Deadlines(clock)
        protocol = Recorder()
        stream = dial(loop, poller, Endpoint("127.0.0.1", hole), protocol)
        stream.deadline = deadlines.add(stream, 5)
        stream.write(b"waits")
        # Wake-ups meant for a closed descriptor of the same number: not a failure.
        stream._readable()
        stream._writable()
        spurious = protocol.names()
        clock.advance(4.99)
        before = protocol.names()
        clock.advance(0.01)
        exc = await asyncio.wait_for(protocol.failed, 5)
        unsent = stream.unsent()
        poller.close()
        return spurious, before, exc, unsent, protocol.names()

    spurious, before, exc, unsent, names = run_async(loop_kind, main())
    assert spurious == ["made"] and before == ["made"]
    assert isinstance(exc, TimeoutError)
    assert str(exc) == f"connect to 127.0.0.1:{hole} timed out after 5 s"
    assert unsent == (b"waits", False)
    assert names == ["made", "connect_failed"]


def test_a_deadline_meeting_a_silent_connected_socket_keeps_it(loop_kind, make_poller):
    """Nothing was written or read, so only the deadline's check can tell: connected."""

    async def main():
        async with dialing(make_poller) as (loop, listener, stream, protocol):
            clock = ManualClock()
            Deadlines(clock).add(stream, 5)  # kept: the entry is not the stream's to drop
            conn = await accept(loop, listener)
            clock.advance(5)
            names = protocol.names()
            stream.write(b"still open")
            got = await loop.sock_recv(conn, 100)
            conn.close()
            stream.abort()
            await protocol.lost
            return names, got

    names, got = run_async(loop_kind, main())
    assert names == ["made", "connected"]
    assert got == b"still open"


def test_deadlines_expire_in_order_per_timeout_and_skip_what_was_made():
    class Entry:
        def __init__(self, name: str, log: list) -> None:
            self.name, self.log = name, log

        def expire(self, timeout: float) -> None:
            self.log.append((self.name, timeout, clock.now()))

    clock = ManualClock()
    deadlines = Deadlines(clock)
    log: list = []
    deadlines.add(Entry("a", log), 1)
    dropped = deadlines.add(Entry("dropped", log), 1)
    deadlines.add(Entry("long", log), 3)
    dropped[1] = None  # what a stream does once its connect is decided
    clock.advance(0.5)
    deadlines.add(Entry("b", log), 1)
    armed = clock.pending  # one timer per timeout, not one per entry
    clock.advance(0.49)
    early = list(log)
    clock.advance(10)
    assert armed == 2 and early == []
    assert log == [("a", 1, 1.0), ("b", 1, 1.5), ("long", 3, 3.0)]
    timers = {t: q.timer for t, q in deadlines.queues.items()}
    assert timers == {1: None, 3: None} and clock.pending == 0  # no timer left armed


def test_backpressure_pauses_and_resumes_the_writer_and_close_flushes(loop_kind, make_poller):
    async def main():
        async with dialed(make_poller) as (loop, stream, protocol, conn):
            data = payload(8 * 1024 * 1024)
            for i in range(0, len(data), 65536):
                stream.write(data[i:i + 65536])
            queued = stream.get_write_buffer_size()
            stream.close()  # after every queued byte
            got = await read_all(loop, conn)
            await protocol.lost
            return queued, got == data, protocol.names()

    queued, same, names = run_async(loop_kind, main())
    assert queued > HIGH_WATER
    assert same
    assert names == ["made", "connected", "pause", "resume", "lost"]


def test_abort_drops_queued_bytes(loop_kind, make_poller):
    async def main():
        async with dialed(make_poller) as (loop, stream, protocol, conn):
            stream.write(payload(16 * 1024 * 1024))  # far more than the socket buffers
            queued = stream.get_write_buffer_size()
            stream.abort()
            got = len(await read_all(loop, conn))
            exc = await protocol.lost
            return queued, got, exc, protocol.names()

    queued, got, exc, names = run_async(loop_kind, main())
    assert queued > 0
    assert got <= 16 * 1024 * 1024 - queued  # what was still queued never went out
    assert exc is None
    assert names == ["made", "connected", "pause", "lost"]


def test_an_accepted_stream_knows_its_peer_and_closes_at_eof_when_told(loop_kind, make_poller):
    async def main():
        loop = asyncio.get_running_loop()
        poller = make_poller(loop)
        with listening() as listener:
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, listener.getsockname())
            sock, address = await loop.sock_accept(listener)
            protocol = Recorder()
            protocol.keep_open_at_eof = False
            stream = accepted(loop, poller, sock.detach(), sock.family, address, protocol)
            peer = stream.get_extra_info("peername")
            await loop.sock_sendall(client, b"ping")
            client.shutdown(socket.SHUT_WR)
            exc = await asyncio.wait_for(protocol.lost, 5)
            end = await loop.sock_recv(client, 10)  # the stream closed: our end of stream
            client_name = client.getsockname()
            client.close()
            poller.close()
            return peer, client_name, bytes(protocol.data), exc, end, protocol.names()

    peer, client_name, data, exc, end, names = run_async(loop_kind, main())
    assert peer == client_name
    assert data == b"ping"
    assert exc is None and end == b""
    assert names == ["made", "eof", "lost"]


def test_a_reset_once_connected_is_connection_lost_with_the_error(loop_kind, make_poller):
    async def main():
        async with dialed(make_poller) as (_, stream, protocol, conn):
            stream.write(b"x")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            conn.close()  # RST
            exc = await asyncio.wait_for(protocol.lost, 5)
            return exc, protocol.names()

    exc, names = run_async(loop_kind, main())
    assert isinstance(exc, ConnectionResetError) and exc.errno == errno.ECONNRESET
    assert names == ["made", "connected", "lost"]


def test_the_poller_unwatches_and_dispatches_both_directions(loop_kind, make_poller):
    class Owner:
        def __init__(self) -> None:
            self.log: list[str] = []

        def _readable(self) -> None:
            self.log.append("r")

        def _writable(self) -> None:
            self.log.append("w")

    async def main():
        loop = asyncio.get_running_loop()
        poller = make_poller(loop)
        a, b = socket.socketpair()
        owner = Owner()
        fd = a.fileno()
        poller.watch(fd, poller_module.WRITE, None, owner._writable)
        await eventually(lambda: owner.log)
        wrote = "w" in owner.log and "r" not in owner.log
        poller.watch(fd, poller_module.READ, owner._readable, None)
        owner.log.clear()
        await asyncio.sleep(0.02)  # a wake-up would come within a loop turn or two
        quiet = owner.log == []  # nothing to read yet, and no longer watching writes
        b.send(b"x")
        await eventually(lambda: owner.log)
        read = "r" in owner.log and "w" not in owner.log
        # Lent to another callback (the copier's way): the same events, the new callee.
        borrower = Owner()
        poller.watch(fd, poller_module.READ, borrower._readable, None)
        owner.log.clear()
        await asyncio.sleep(0.02)
        lent = owner.log == [] and "r" in borrower.log
        poller.watch(fd, 0)
        borrower.log.clear()
        b.send(b"y")
        await asyncio.sleep(0.02)  # as above
        gone = owner.log == [] == borrower.log
        poller.close()
        a.close()
        b.close()
        return wrote, quiet, read, lent, gone

    assert run_async(loop_kind, main()) == (True, True, True, True, True)


def test_a_forgotten_descriptor_leaves_the_epoll_set_when_it_closes(loop_kind):
    """`Poller.forget` makes no EPOLL_CTL_DEL: close(2) itself takes the socket out of the
    set.  The kernel's list of the set's descriptors (/proc/self/fdinfo) shows it."""

    def in_set(poller: Any, fd: int) -> bool:
        info = open(f"/proc/self/fdinfo/{poller.fileno()}").read()
        return f"tfd: {fd:8d} " in info

    async def main():
        poller = poller_module.Poller(asyncio.get_running_loop())
        a, b = socket.socketpair()
        fd = a.fileno()
        poller.watch(fd, poller_module.READ, lambda: None)
        watched = in_set(poller, fd)
        poller.forget(fd)
        still_in_set = in_set(poller, fd)  # forgotten by us, not yet by the kernel
        a.close()
        after_close = in_set(poller, fd)
        poller.close()
        b.close()
        return watched, still_in_set, after_close

    assert run_async(loop_kind, main()) == (True, True, False)


class Borrower:
    """What the copier and the splice pump are to a stream: it borrows the socket's
    readiness, and lets go (``take_back``) when told to close."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.log: list[str] = []

    def readable(self) -> None:
        self.log.append("r")
        self.stream.get_extra_info("socket").recv(100)

    def close(self) -> None:
        # The descriptor must still be open: nothing may have been given its number yet.
        self.log.append("close, fd open" if _is_open(self.stream.fd) else "close, fd closed")
        self.stream.take_back(self)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_stream_lends_its_readiness_and_its_borrower_lets_go_before_it_closes(
    loop_kind, make_poller
):
    async def main():
        async with dialed(make_poller) as (loop, stream, protocol, conn):
            await asyncio.sleep(0.02)  # connected
            borrower = Borrower(stream)
            stream.lend_reads(borrower, borrower.readable)
            conn.send(b"to the borrower")
            await asyncio.sleep(0.02)
            lent = list(borrower.log), bytes(protocol.data)
            stream.take_back(borrower)
            conn.send(b"to the stream")
            await asyncio.sleep(0.02)
            back = list(borrower.log), bytes(protocol.data)
            stream.lend_reads(borrower, borrower.readable)
            stream.abort()  # still lent: the stream makes its borrower let go first
            fd = stream.fd
            watched = fd in stream.poller.watched
            await protocol.lost
            return lent, back, borrower.log, watched, _is_open(fd)

    lent, back, log, watched, still_open = run_async(loop_kind, main())
    assert lent == (["r"], b"")
    assert back == (["r"], b"to the stream")
    assert log == ["r", "close, fd open"]
    assert not watched and not still_open
