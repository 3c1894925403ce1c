"""The steady-state copier: a persistent connection's bytes between raw sockets.

First the two twins of `Copier` alone, on real TCP sockets on 127.0.0.1 in real
transports (`stream.Stream`) under a real event loop and both pollers, with a recording
stand-in for the relay they report to; then the forwarder with a copier in charge:
byte-exact, backpressure, half-close, resets, idle timeout and stop, each checked to
reach the endpoint.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import types
from typing import Any

import pytest

from lbcore.forwarder import Forwarder, ManualClock
from lbcore.forwarder import poller as poller_module
from lbcore.forwarder.stream import accepted
from lbcore._pure import copier as _copier_py

from forwarder_support import LOOPS, digest, payload, poll_entry, run_async, service

try:
    from lbcore._fast import copier as _copier_compiled
except ImportError:  # a pure build: test_build.py fails if it should have been built
    _copier_compiled = None


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["pure", "compiled"])
def twin(request: pytest.FixtureRequest) -> types.ModuleType:
    """One twin's module."""
    if request.param == "pure":
        return _copier_py
    if _copier_compiled is None:
        pytest.skip("compiled twins not built (test_build.py fails if they should be)")
    return _copier_compiled


@pytest.fixture(params=["epoll", "loop"])
def make_poller(request: pytest.FixtureRequest) -> Any:
    """The forwarder's own epoll set, or the loop's watching (where there is no epoll)."""
    return poller_module.Poller if request.param == "epoll" else poller_module.LoopPoller


def test_both_twins_use_one_buffer_size():
    if _copier_compiled is None:
        pytest.skip("compiled twins not built")
    assert _copier_compiled.BUFFER_SIZE == _copier_py.BUFFER_SIZE == 64 * 1024


# -- the twins alone ------------------------------------------------------------------


class _Relay:
    """What a Copier sees of its relay: its two sides, and where it reports."""

    def __init__(self) -> None:
        self.client = "client side"
        self.upstream = "upstream side"
        self.left: list[tuple[object, bytes | None, OSError | None]] = []

    def copier_left(self, side, rest, exc) -> None:
        self.left.append((side, rest, exc))


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        outer = socket.create_connection(server.getsockname())
        inner, _ = server.accept()
    inner.setblocking(False)
    return outer, inner


class _Reader(asyncio.Protocol):
    """A transport's own protocol: what the stream reads once it has its socket back."""

    def __init__(self) -> None:
        self.data = bytearray()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        return True


class _Rig:
    """client peer ⇄ [client stream | Copier | upstream stream] ⇄ upstream peer, all TCP."""

    def __init__(
        self, twin: types.ModuleType, make_poller: Any, bulk_hands_back: bool = False
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.poller = make_poller(self.loop)
        self.client_peer, client_inner = _tcp_pair()
        self.upstream_peer, upstream_inner = _tcp_pair()
        self.readers = (_Reader(), _Reader())
        self.streams = tuple(
            accepted(self.loop, self.poller, inner.detach(), socket.AF_INET, ("127.0.0.1", 0),
                     reader)
            for inner, reader in zip((client_inner, upstream_inner), self.readers)
        )
        self.fds = tuple(stream.fd for stream in self.streams)
        self.relay = _Relay()
        self.copier = twin.Copier(self.relay, *self.streams, bulk_hands_back)
        self.copier.start()

    def turn(self, seconds: float = 0.05) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        self.copier.close()
        for stream in self.streams:
            stream.abort()
        for sock in (self.client_peer, self.upstream_peer):
            sock.close()
        self.poller.close()
        self.loop.close()


def _read_all(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(5)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_a_copier_copies_both_ways_and_counts(twin, make_poller):
    rig = _Rig(twin, make_poller)
    try:
        rig.client_peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
        rig.turn()
        assert _read_all(rig.upstream_peer, 18) == b"GET / HTTP/1.1\r\n\r\n"
        rig.upstream_peer.sendall(payload(5000))
        rig.turn()
        assert _read_all(rig.client_peer, 5000) == payload(5000)
        assert (rig.copier.client_bytes, rig.copier.upstream_bytes) == (18, 5000)
        assert rig.relay.left == []
        assert rig.copier.send(b"direct") == 6  # the relay's first message goes this way
        assert _read_all(rig.upstream_peer, 6) == b"direct"
    finally:
        rig.close()


def test_end_of_stream_hands_back_without_bytes(twin, make_poller):
    rig = _Rig(twin, make_poller)
    try:
        rig.upstream_peer.shutdown(socket.SHUT_WR)
        rig.turn()
        assert rig.relay.left == [(rig.relay.upstream, None, None)]
    finally:
        rig.close()


def test_a_reset_hands_back_the_error(twin, make_poller):
    rig = _Rig(twin, make_poller)
    try:
        rig.client_peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rig.client_peer.close()
        rig.turn()
        ((side, rest, exc),) = rig.relay.left
        assert side is rig.relay.client and rest is None
        assert isinstance(exc, ConnectionResetError) and exc.errno == errno.ECONNRESET
    finally:
        rig.close()


def test_a_full_destination_hands_back_exactly_the_unsent_bytes(twin, make_poller):
    rig = _Rig(twin, make_poller)
    try:
        # The upstream peer reads nothing: its window and our send buffer fill up.
        rig.streams[1].get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        data = payload(4_000_000)
        rig.client_peer.setblocking(False)
        sent = 0
        while not rig.relay.left and sent < len(data):
            try:
                sent += rig.client_peer.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
            rig.turn(0.001)
        ((side, rest, exc),) = rig.relay.left
        assert side is rig.relay.client and exc is None and rest
        # Everything the copier read either reached the upstream peer or came back as rest.
        counted = rig.copier.client_bytes
        arrived = counted - len(rest)
        assert _read_all(rig.upstream_peer, arrived) == data[:arrived]
        assert rest == data[arrived:counted]
    finally:
        rig.close()


def test_a_full_read_hands_back_for_splice_only_when_asked(twin, make_poller):
    size = 2 * 65536 + 1000  # queued before the copier runs (small enough for the buffers)
    for bulk_hands_back in (True, False):
        rig = _Rig(twin, make_poller, bulk_hands_back)
        try:
            rig.upstream_peer.sendall(payload(size))
            rig.turn(0.2)
            got = _read_all(rig.client_peer, 65536)
            assert got == payload(size)[:65536]
            if bulk_hands_back:  # the first full read is sent, then handed back
                assert rig.relay.left == [(rig.relay.upstream, None, None)]
                assert rig.copier.upstream_bytes == 65536
            else:
                assert rig.relay.left == []
                assert _read_all(rig.client_peer, size - 65536) == payload(size)[65536:]
        finally:
            rig.close()


def test_close_gives_both_sockets_back_to_their_transports_once(twin, make_poller):
    """The copier never owns a descriptor: closed, it leaves both sockets open and
    watched by their own transports, which read again."""
    rig = _Rig(twin, make_poller)
    try:
        rig.copier.close()
        rig.copier.close()  # idempotent
        for fd in rig.fds:
            os.fstat(fd)  # still open: only the transport closes it
        assert {fd: poll_entry(rig.poller, fd)[1] for fd in rig.fds} == {
            stream.fd: stream._readable for stream in rig.streams
        }
        rig.client_peer.sendall(b"after close")
        rig.upstream_peer.sendall(b"and back")
        rig.turn()
        assert rig.copier.client_bytes == rig.copier.upstream_bytes == 0
        assert [bytes(reader.data) for reader in rig.readers] == [b"after close", b"and back"]
    finally:
        rig.close()


# -- the forwarder with a copier in charge -----------------------------------------------


_LINE_LIMIT = 1024 * 1024


async def open_client(address):
    return await asyncio.open_connection(*address, limit=_LINE_LIMIT)


async def _line_server(handle_line) -> tuple[asyncio.AbstractServer, list[bytes]]:
    """An endpoint answering each line with ``handle_line(line)``; it records how each
    connection ended: b"eof" (FIN) or the error's name."""
    endings: list[bytes] = []

    async def serve(reader, writer):
        try:
            while line := await reader.readline():
                answer = handle_line(line)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
            endings.append(b"eof")
        except OSError as exc:
            endings.append(type(exc).__name__.encode())
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=_LINE_LIMIT)
    return server, endings


def _endpoint(server):
    from lbcore import Endpoint

    return Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])


def _relays(fw: Forwarder) -> list:
    return [relay for runtime in fw._all_runtimes() for relay in runtime.stats.live]


async def _wait_for(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def _ping(reader, writer, line: bytes) -> bytes:
    writer.write(line)
    return await reader.readline()


async def _steady_client(fw: Forwarder) -> tuple[Any, Any, bool]:
    """A client of "web" after three pings; whether a copier holds its connection now."""
    reader, writer = await open_client(fw.addresses["web"])
    for _ in range(3):
        assert await _ping(reader, writer, b"ping\n") == b"pong\n"
    me = writer.get_extra_info("sockname")
    (relay,) = [r for r in _relays(fw) if r.client.transport.get_extra_info("peername") == me]
    return reader, writer, relay.copier is not None


@pytest.mark.parametrize("copier", [True, False], ids=["copier", "transports"])
def test_a_persistent_connection_is_byte_exact_and_counted(loop_kind, copier):
    """Hundreds of requests of every size on one connection: each answer exact; the copier
    takes over from the second request (or never, with ``copier=False``)."""

    def answer(line: bytes) -> bytes:
        return digest(line).encode() + b" " + line

    async def main():
        server, endings = await _line_server(answer)
        fw = Forwarder([service("web", [_endpoint(server)])], copier=copier)
        await fw.start()
        reader, writer = await open_client(fw.addresses["web"])
        copying = []
        sent = received = 0
        for i in range(300):
            # Below the splice threshold: a bulk read would hand a direction to a pump.
            line = payload(1 + (i * 7919) % 60_000).replace(b"\n", b"-") + b"\n"
            got = await _ping(reader, writer, line)
            assert got == answer(line), i
            sent, received = sent + len(line), received + len(got)
            copying.append(_relays(fw)[0].copier is not None)
        live = fw.stats()["web"]  # counted while the copier still holds the connection
        writer.close()
        await _wait_for(lambda: not _relays(fw))
        stats = fw.stats()["web"]
        await fw.stop()
        server.close()
        return copying, live, stats, sent, received

    copying, live, stats, sent, received = run_async(loop_kind, main())
    assert (live["bytes_in"], live["bytes_out"], live["active"]) == (sent, received, 1)
    if copier:
        assert copying[0] is False and sum(copying) >= 250  # big reads pass through Python
    else:
        assert not any(copying)
    assert (stats["bytes_in"], stats["bytes_out"], stats["active"]) == (sent, received, 0)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "no-splice"])
def test_a_slow_reader_in_the_copier_gets_bounded_buffers_then_everything(loop_kind, splice):
    """The client stops reading while its endpoint answers with 30 MB: the copier hands the
    connection back, the transports hold a bounded amount, and every byte arrives.  Then
    the copier takes over again, unless that bulk answer moved its direction to splice."""
    big = 30_000_000

    def answer(line: bytes) -> bytes:
        return payload(big) if line == b"big\n" else b"pong\n"

    async def main():
        server, _ = await _line_server(answer)
        fw = Forwarder([service("web", [_endpoint(server)])], splice=splice)
        await fw.start()
        reader, writer = await asyncio.open_connection(*fw.addresses["web"])
        for _ in range(2):
            assert await _ping(reader, writer, b"ping\n") == b"pong\n"
        (relay,) = _relays(fw)
        assert relay.copier is not None
        writer.write(b"big\n")
        await asyncio.sleep(0.5)  # no reading: everything between us stalls
        held = relay.client.transport.get_write_buffer_size()
        handed_back = relay.copier is None
        got = await reader.readexactly(big)
        assert await _ping(reader, writer, b"ping\n") == b"pong\n"
        assert await _ping(reader, writer, b"ping\n") == b"pong\n"
        copying_again = relay.copier is not None
        spliced = relay.upstream.pump is not None
        writer.close()
        await fw.stop()
        server.close()
        return held, handed_back, got, copying_again, spliced

    held, handed_back, got, copying_again, spliced = run_async(loop_kind, main())
    assert handed_back and (copying_again, spliced) == (not splice, splice)
    assert held <= 1024 * 1024  # a high-water mark and a read or two, not 30 MB
    assert digest(got) == digest(payload(big))


def test_half_close_and_the_endpoint_closing_pass_through_the_copier(loop_kind):
    def answer(line: bytes) -> bytes | None:
        return b"pong\n" if line == b"ping\n" else None  # anything else: close

    async def main():
        server, endings = await _line_server(answer)
        fw = Forwarder([service("web", [_endpoint(server)])])
        await fw.start()
        # 1. the client half-closes: the endpoint sees the FIN and closes; the client EOF.
        reader, writer, copying = await _steady_client(fw)
        writer.write_eof()
        first = await asyncio.wait_for(reader.read(), 5), list(endings)
        writer.close()
        # 2. the endpoint closes first.
        reader, writer, _ = await _steady_client(fw)
        writer.write(b"quit\n")
        second = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await _wait_for(lambda: not _relays(fw))
        stats = fw.stats()["web"]
        await fw.stop()
        server.close()
        return copying, first, second, stats

    copying, (first, endings), second, stats = run_async(loop_kind, main())
    assert copying
    assert first == b"" and endings == [b"eof"]
    assert second == b""
    assert stats["total"] == 2 and stats["active"] == 0


def test_a_client_reset_in_the_copier_closes_the_endpoint_connection(loop_kind):
    async def main():
        server, endings = await _line_server(lambda line: b"pong\n")
        fw = Forwarder([service("web", [_endpoint(server)])])
        await fw.start()
        reader, writer, copying = await _steady_client(fw)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await _wait_for(lambda: endings)
        await _wait_for(lambda: not _relays(fw))
        await fw.stop()
        server.close()
        return copying, endings

    copying, endings = run_async(loop_kind, main())
    assert copying and len(endings) == 1


@pytest.mark.parametrize("how", ["idle timeout", "stop"])
def test_idle_timeout_and_stop_really_close_a_copier_connection(loop_kind, how):
    """Both the client and the endpoint see the end: the copier never keeps a socket open."""

    async def main():
        server, endings = await _line_server(lambda line: b"pong\n")
        clock = ManualClock()
        fw = Forwarder([service("web", [_endpoint(server)])], clock=clock,
                       idle_timeout=4 if how == "idle timeout" else 60, drain_timeout=4)
        await fw.start()
        reader, writer, copying = await _steady_client(fw)
        if how == "stop":
            armed = clock.pending
            stopping = asyncio.ensure_future(fw.stop())
            await _wait_for(lambda: clock.pending > armed)  # the drain deadline, on the clock
            clock.advance(4)  # passes, with the connection open: stop() closes it
        else:
            stopping = None
            clock.advance(5)  # the sweep at 1 s saw its bytes, the next four none
        tail = await asyncio.wait_for(reader.read(), 5)
        await _wait_for(lambda: endings)
        if stopping is None:
            await fw.stop()
        else:
            await stopping
        writer.close()
        server.close()
        return copying, tail, endings

    copying, tail, endings = run_async(loop_kind, main())
    assert copying and tail == b"" and len(endings) == 1


def test_copier_option_is_validated_by_name():
    from lbcore import ConfigError

    with pytest.raises(ConfigError, match="^copier: 1 must be true or false"):
        Forwarder([], copier=1)
