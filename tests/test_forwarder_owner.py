"""One owner per descriptor: a connection's copier and splice pumps borrow its sockets.

Counted from the process's own tables (/proc/self/fd, and /proc/self/fdinfo of every
epoll set): while a connection is in the copier or spliced, each of its sockets is one
descriptor, registered once, in the forwarder's own epoll set (never in the event loop's);
a pump adds only its pipe; and a connection that ends while copying or splicing leaves
no descriptor behind.  Real sockets on 127.0.0.1, both event loops.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

from lbcore import Endpoint
from lbcore.forwarder import Forwarder

from forwarder_support import LOOPS, eventually, payload, run_async, service

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="Linux /proc")


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def open_files() -> set[tuple[int, str]]:
    """This process's open descriptors: (number, what it is: "socket:[inode]", ...)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            found.add((int(name), os.readlink(f"/proc/self/fd/{name}")))
        except OSError:  # the directory's own descriptor, closed by now
            pass
    return found


def opened_since(baseline: set[tuple[int, str]]) -> tuple[int, int]:
    """(sockets, pipe ends) open now that were not at ``baseline``.  By identity, not by
    count: a descriptor an earlier test left to the garbage collector may close meanwhile."""
    new = open_files() - baseline
    return (sum(what.startswith("socket:") for _, what in new),
            sum(what.startswith("pipe:") for _, what in new))


def registrations(fd: int) -> list[int]:
    """The epoll sets (their descriptors) that watch the socket open as ``fd``, under
    whatever descriptor number it was registered: one entry per registration."""
    inode = os.readlink(f"/proc/self/fd/{fd}")
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as info:
                lines = info.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("tfd:"):
                watched = int(line.split()[1])
                try:
                    if os.readlink(f"/proc/self/fd/{watched}") == inode:
                        found.append(int(name))
                except OSError:  # a descriptor closed since
                    pass
    return found


def only_relay(fw: Forwarder):
    (relay,) = [relay for runtime in fw._all_runtimes() for relay in runtime.stats.live]
    return relay


def relay_sockets(relay) -> list[int]:
    return [relay.client.transport.fd, relay.upstream.transport.fd]


async def line_server(big: int):
    """An endpoint answering ``ping`` with ``pong``, ``big`` with ``big`` bytes and
    ``echo`` by echoing everything after it; it closes at the client's FIN."""
    ended: list[str] = []

    async def serve(reader, writer):
        try:
            while line := await reader.readline():
                if line == b"echo\n":
                    while chunk := await reader.read(1 << 20):
                        writer.write(chunk)
                        await writer.drain()
                    break
                writer.write(payload(big) if line == b"big\n" else b"pong\n")
                await writer.drain()
            ended.append("eof")
        except OSError as exc:
            ended.append(type(exc).__name__)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, ended


def endpoint(server) -> Endpoint:
    return Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])


def reset(writer) -> None:
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("ending", ["fin", "reset", "idle timeout"])
def test_a_copied_connection_holds_one_descriptor_per_socket(loop_kind, ending):
    async def main():
        server, ended = await line_server(0)
        fw = Forwarder([service("web", [endpoint(server)])],
                       idle_timeout=0.3 if ending == "idle timeout" else 60)
        await fw.start()
        poller_epoll = fw._poller.fileno()
        baseline = open_files()
        reader, writer = await asyncio.open_connection(*fw.addresses["web"])
        writer.write(b"ping\n")
        assert await reader.readline() == b"pong\n"
        relay = only_relay(fw)
        before = relay.copier, opened_since(baseline)
        for _ in range(3):
            writer.write(b"ping\n")
            assert await reader.readline() == b"pong\n"
        copying = relay.copier is not None, opened_since(baseline)
        watched_by = [registrations(fd) for fd in relay_sockets(relay)]
        if ending == "fin":
            writer.close()
        elif ending == "reset":
            reset(writer)
        else:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the forwarder closed
            writer.close()
        await eventually(lambda: ended and not fw.stats()["web"]["active"])
        await eventually(lambda: opened_since(baseline) == (0, 0))
        await fw.stop()
        server.close()
        return before, copying, watched_by, poller_epoll

    before, copying, watched_by, poller_epoll = run_async(loop_kind, main())
    # The client's socket, the forwarder's two, the endpoint's accepted one.
    assert before == (None, (4, 0))
    assert copying == (True, (4, 0))  # no duplicate for the copier
    assert watched_by == [[poller_epoll], [poller_epoll]]  # the loop watches neither


@pytest.mark.parametrize("how", ["both ways, fin", "answers only, client reset"])
def test_a_spliced_connection_holds_one_descriptor_per_socket_and_a_pipe(loop_kind, how):
    """Both directions spliced (echo) and closed with FINs; or only the answers spliced,
    the requests still in the transports, whose client then resets: the client's
    transport closes on its own error while lending its writability to the pump, and
    makes the pump let go first."""
    big = 4 * 1024 * 1024

    async def main():
        server, ended = await line_server(big)
        fw = Forwarder([service("web", [endpoint(server)])])
        await fw.start()
        poller_epoll = fw._poller.fileno()
        baseline = open_files()
        reader, writer = await asyncio.open_connection(*fw.addresses["web"], limit=1 << 22)
        writer.write(b"ping\n")
        assert await reader.readline() == b"pong\n"
        relay = only_relay(fw)
        before = opened_since(baseline)
        if how.startswith("both"):
            writer.write(b"echo\n")
            for _ in range(20):  # until a bulk read each way has started a pump
                writer.write(payload(big))
                assert await reader.readexactly(big) == payload(big)
                if relay.client.pump and relay.upstream.pump:
                    break
            pumps = [relay.client.pump is not None, relay.upstream.pump is not None]
        else:
            writer.write(b"big\n")
            assert await reader.readexactly(big) == payload(big)
            pumps = [relay.client.pump is not None, relay.upstream.pump is not None]
        splicing = opened_since(baseline)
        watched_by = [registrations(fd) for fd in relay_sockets(relay)]
        if how.endswith("fin"):
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        else:
            reset(writer)
        await eventually(lambda: ended and not fw.stats()["web"]["active"])
        await eventually(lambda: opened_since(baseline) == (0, 0))
        stats = fw.stats()["web"]
        await fw.stop()
        server.close()
        return before, pumps, splicing, watched_by, poller_epoll, stats

    before, pumps, splicing, watched_by, poller_epoll, stats = run_async(loop_kind, main())
    assert before == (4, 0)
    assert pumps == ([True, True] if how.startswith("both") else [False, True])
    # A pump's pipe is two descriptors; the sockets stay four.
    assert splicing == (4, 2 * sum(pumps))
    assert watched_by == [[poller_epoll], [poller_epoll]]
    assert stats["bytes_out"] >= big
