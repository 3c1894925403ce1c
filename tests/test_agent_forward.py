"""The agent with its forward sink: the forwarder in the agent's process, updated live,
with real backends and clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

from agent_support import QueueSource
from forwarder_support import backends, run_async, service, who

from lbcore import Service
from lbcore.agent import Agent
from lbcore.agent.sinks.forward import ForwardSink


def test_the_forward_sink_serves_the_current_set_and_follows_changes_live():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = f"127.0.0.1:{taken.getsockname()[1]}"

    async def main():
        a, b = await backends("a", "b")
        source = QueueSource()
        sink = ForwardSink(connect_timeout=0.5, drain_timeout=1)
        agent = Agent([source], sink, min_sync_period=0, sync_period=60)
        task = asyncio.create_task(agent.run())
        loop = asyncio.get_running_loop()

        async def synced(count: int) -> None:
            while sum(agent.syncs.values()) + sum(
                    agent.metrics.registry.get_sample_value("lbcore_sync_proxy_rules_failures_total",
                                                            {"sync": kind}) or 0
                    for kind in ("full", "partial")) < count:
                await asyncio.sleep(0.01)

        try:
            source.send([service("web", [a.endpoint])], loop.time())
            await asyncio.wait_for(synced(1), 10)
            address = sink.forwarder.addresses["web"]
            answers = [await who(address) for _ in range(3)]
            # a connection opened before the change stays on its endpoint
            reader, writer = await asyncio.open_connection(*address)
            source.send([service("web", [b.endpoint])], loop.time())
            await asyncio.wait_for(synced(2), 10)
            moved = [await who(address) for _ in range(3)]
            writer.write(b"who\n")
            kept = (await reader.read()).decode().strip()
            # a listen address that cannot be bound fails the sync, and the old set serves on
            other = Service("other", "10.96.0.2", 80, endpoints=[a.endpoint], listen=busy)
            source.send([service("web", [b.endpoint]), other], loop.time())
            await asyncio.wait_for(synced(3), 10)
            still = [await who(address) for _ in range(2)]
            problems = (agent.applied, agent.tracker.pending)
            return answers, moved, kept, still, problems, agent.syncs
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sink.close()

    try:
        answers, moved, kept, still, (applied, pending), syncs = run_async("asyncio", main())
    finally:
        taken.close()
    assert answers == ["a"] * 3
    assert moved == ["b"] * 3
    assert kept == "a"
    assert still == ["b"] * 2
    assert applied is None and set(pending) == {"other"}  # retried with backoff, full
    assert syncs == {"full": 1, "partial": 1}


def test_the_forward_sink_refuses_sctp_by_name():
    sink = ForwardSink()
    refused = sink.refuse(service("s", [], protocol="sctp"))
    assert refused == "protocol: 'sctp' is not carried by the userspace forwarder (tcp, udp); use --mode ipvs"
    assert sink.refuse(service("u", [], protocol="udp")) is None
