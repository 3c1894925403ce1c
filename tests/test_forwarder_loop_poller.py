"""The forwarder on `poller.LoopPoller`, its watching where there is no epoll (not Linux).

On Linux the forwarder watches its sockets through its own epoll set; here the same
forwarder runs with every socket watched by the event loop instead, through the paths
that wait for the loop: a refused endpoint retried, bytes both ways with a slow reader
(backpressure), half-close, and a stop that leaves nothing watched; and a persistent
connection whose sockets the copier, then splice pumps, borrow.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from lbcore import Endpoint
from lbcore.forwarder import Forwarder, ManualClock
from lbcore.forwarder import forwarder as forwarder_module
from lbcore.forwarder import poller as poller_module

from forwarder_support import LOOPS, backends, digest, fetch, free_port, payload, run_async, service


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_forwarder_on_the_loop_poller(loop_kind, monkeypatch):
    made: list[poller_module.LoopPoller] = []
    watches: list[int] = []  # the events asked for, call by call

    class CountedLoopPoller(poller_module.LoopPoller):  # the real one, its calls counted
        __slots__ = ()

        def watch(self, fd: int, events: int, on_readable=None, on_writable=None) -> None:
            watches.append(events)
            super().watch(fd, events, on_readable, on_writable)

    def loop_poller(loop: asyncio.AbstractEventLoop) -> poller_module.LoopPoller:
        made.append(CountedLoopPoller(loop))
        return made[-1]

    monkeypatch.setattr(forwarder_module, "make_poller", loop_poller)

    async def main():
        (a,) = await backends("a")
        refused = Endpoint("127.0.0.1", free_port())
        # The clock stands still: once refused, the endpoint cools down for the whole test.
        fw = Forwarder([service("web", [refused, a.endpoint], scheduler="rr")],
                       clock=ManualClock(), splice=False, copier=False)
        await fw.start()
        address = fw.addresses["web"]
        # A small receive buffer: the slow read backs up into the forwarder, whatever
        # the kernel's buffer autotuning would absorb (backpressure both ways).
        slow = await fetch(address, 4_000_000, read_delay=0.002, rcvbuf=16384)
        client = socket.create_connection(address)
        client.sendall(b"echo\nhalf")
        client.shutdown(socket.SHUT_WR)  # the client's FIN passes, the answer comes back
        loop = asyncio.get_running_loop()
        echoed = b""
        while chunk := await loop.run_in_executor(None, client.recv, 65536):
            echoed += chunk
        client.close()
        stats = fw.stats()["web"]
        await fw.stop()
        return slow, echoed, stats, dict(made[0].watched)

    slow, echoed, stats, watched_after = run_async(loop_kind, main())
    assert len(made) == 1
    # Every socket went through it: reads, writes (the slow reader) and unwatching.
    assert {poller_module.READ, 0} <= set(watches)
    assert any(events & poller_module.WRITE for events in watches)
    assert digest(slow) == digest(payload(4_000_000))
    assert echoed == b"half"
    # rr offers the refused endpoint to the first or the second connection, once: it is
    # met, passed, and cooling down from then on.
    assert stats["failures"] == 1
    assert stats["unavailable"] == 0
    assert watched_after == {}  # every socket unwatched


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_the_copier_and_splice_pumps_on_the_loop_poller(loop_kind, monkeypatch):
    """A persistent connection moves to the copier, then a bulk transfer each way to
    splice pumps, with a slow reader (the pump waits for writability), then half-close:
    every borrowing goes through the loop's ``add_reader``/``add_writer`` on the
    sockets' own descriptors, and nothing stays watched."""
    made: list[poller_module.LoopPoller] = []

    def loop_poller(loop: asyncio.AbstractEventLoop) -> poller_module.LoopPoller:
        made.append(poller_module.LoopPoller(loop))
        return made[-1]

    monkeypatch.setattr(forwarder_module, "make_poller", loop_poller)
    big = 4_000_000

    async def main():
        (a,) = await backends("a")
        fw = Forwarder([service("web", [a.endpoint])])
        await fw.start()
        reader, writer = await asyncio.open_connection(*fw.addresses["web"], limit=1 << 16)
        writer.write(b"echo\n")
        copying = []
        for i in range(20):
            line = b"ping %d\n" % i
            writer.write(line)
            assert await reader.readexactly(len(line)) == line
            (relay,) = [r for rt in fw._all_runtimes() for r in rt.stats.live]
            copying.append(relay.copier is not None)
        writer.write(payload(big))
        echoed = bytearray()
        while len(echoed) < big:
            echoed += await reader.read(1 << 16)
            await asyncio.sleep(0.001)  # a slow reader: the pumps wait for writability
        pumps = relay.client.pump is not None, relay.upstream.pump is not None
        writer.write_eof()
        tail = await reader.read()
        writer.close()
        stats = fw.stats()["web"]
        await fw.stop()
        return copying, digest(bytes(echoed)), pumps, tail, stats, dict(made[0].watched)

    copying, echoed, pumps, tail, stats, watched_after = run_async(loop_kind, main())
    assert copying[0] is False and all(copying[1:])
    assert echoed == digest(payload(big)) and tail == b""
    assert pumps == (True, True)
    pings = sum(len(b"ping %d\n" % i) for i in range(20))
    assert (stats["bytes_in"], stats["bytes_out"]) == (len(b"echo\n") + pings + big, pings + big)
    assert watched_after == {}
