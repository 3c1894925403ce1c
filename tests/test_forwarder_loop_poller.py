"""The forwarder on `poller.LoopPoller`, its watching where there is no epoll (not Linux).

On Linux the forwarder watches its sockets through its own epoll set; here the same
forwarder runs with every socket watched by the event loop instead, through the paths
that wait for the loop: a refused endpoint retried, bytes both ways with a slow reader
(backpressure), half-close, and a stop that leaves nothing watched.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from lbcore import Endpoint
from lbcore.forwarder import Forwarder
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
        fw = Forwarder([service("web", [refused, a.endpoint], scheduler="rr")],
                       cooldown=0.01, splice=False, copier=False)
        await fw.start()
        address = fw.addresses["web"]
        slow = await fetch(address, 4_000_000, read_delay=0.002)  # backpressure both ways
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
    assert stats["failures"] >= 1  # the refused endpoint was met and passed
    assert stats["unavailable"] == 0
    assert watched_after == {}  # every socket unwatched
