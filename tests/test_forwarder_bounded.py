"""The forwarder over bounded loads: one client's connections through real sockets."""

from __future__ import annotations

import asyncio

import pytest

from forwarder_support import LOOPS, backends, open_client, run_async, service


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


async def _held(address, n: int) -> list:
    """``n`` echo connections from one client address, each answered, all kept open."""
    writers = []
    for _ in range(n):
        reader, writer = await open_client(address)
        writer.write(b"echo\nx")
        assert await reader.readexactly(1) == b"x"
        writers.append(writer)
    return writers


async def _settled(fw, endpoints, total: int) -> list[int]:
    """Active connections per endpoint, by the forwarder's stats, once they add up to
    ``total`` (a closed connection is released asynchronously)."""
    for _ in range(200):
        stats = fw.stats()["cache"]["endpoints"]
        counts = [stats[e.address]["active"] for e in endpoints]
        if sum(counts) == total:
            return counts
        await asyncio.sleep(0.01)
    return counts


@pytest.mark.parametrize("scheduler", ["mh", "ring"])
def test_one_clients_connections_spread_and_a_reload_changes_the_factor(loop_kind, scheduler):
    from lbcore.forwarder import Forwarder

    async def main():
        trio = await backends("a", "b", "c")
        endpoints = [b.endpoint for b in trio]
        fw = Forwarder([service("cache", endpoints, scheduler=scheduler, balance_factor=1)])
        await fw.start()
        port = fw.addresses["cache"][1]
        # c = 1: at most ceil((active + 1) / 3) each, so six connections go 2, 2, 2.
        writers = await _held(fw.addresses["cache"], 6)
        bounded = await _settled(fw, endpoints, 6)
        for w in writers:
            w.close()
        assert await _settled(fw, endpoints, 0) == [0, 0, 0]
        # A reload without the factor builds a plain balancer: one key, one backend.
        fw.update([service("cache", endpoints, scheduler=scheduler, listen=f"127.0.0.1:{port}")])
        writers = await _held(fw.addresses["cache"], 6)
        plain = await _settled(fw, endpoints, 6)
        for w in writers:
            w.close()
        await fw.stop()
        return bounded, plain

    bounded, plain = run_async(loop_kind, main())
    assert bounded == [2, 2, 2]
    assert sorted(plain) == [0, 0, 6]
