"""What the agent tests share: a live source fed from a queue, a sink that records what
it was asked to apply, and Services to feed them.

`QueueSource` is an adapter on the public `LiveSource` interface (kube-proxy tests its
change tracker with fake events the same way); the sources themselves are tested with
real files, a real etcd and a replayed API server in their own tests.  `RecordingSink`
is the loop's counterpart of knftables' fake: it records each apply (full or partial,
what it carried) and can be told to fail, so the loop's decisions can be checked alone;
the real sinks are tested against real kernels in tests/kernel/test_agent_*.py.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Sequence

from lbcore import Endpoint, Service
from lbcore.agent.sinks import ApplyError
from lbcore.sources.live import Snapshot


class QueueSource:
    """A live source whose snapshots the test puts in a queue."""

    def __init__(self, source: str = "test://a") -> None:
        self.source = source
        self.connected = True
        self.queue: asyncio.Queue[Snapshot] = asyncio.Queue()

    def send(self, services: Sequence[Service], changed_at: float, problems: Sequence[str] = ()) -> Snapshot:
        snapshot = Snapshot(self.source, tuple(services), tuple(problems), changed_at)
        self.queue.put_nowait(snapshot)
        return snapshot

    async def watch(self) -> AsyncIterator[Snapshot]:
        while True:
            yield await self.queue.get()


class RecordingSink:
    """Records ``("full"|"partial", names)`` per apply; ``fail_next`` makes the next one fail."""

    mode = "recording"

    def __init__(self, refused: Sequence[str] = ()) -> None:
        self.applies: list[tuple[str, list[str]]] = []
        self.carried: tuple[Service, ...] = ()
        self.fail_next = 0
        self.refused = set(refused)
        self.applied = asyncio.Event()

    def refuse(self, service: Service) -> str | None:
        return f"scheduler: {service.scheduler!r} refused by the test" if service.name in self.refused else None

    async def apply(self, old: Sequence[Service] | None, new: Sequence[Service]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ApplyError("iptables-restore exited with 1: injected by the test")
        self.applies.append(("full" if old is None else "partial", [s.name for s in new]))
        self.carried = tuple(new)
        self.applied.set()

    async def cleanup(self) -> None:
        self.carried = ()

    async def close(self) -> None:
        pass


def service(name: str, vip: str, *endpoints: str, port: int = 80, **fields: object) -> Service:
    """A Service with endpoints given as "ip:port" (or "ip:port:weight")."""
    eps = []
    for text in endpoints:
        ip, eport, *weight = text.split(":")
        eps.append(Endpoint(ip, int(eport), weight=int(weight[0]) if weight else 1))
    return Service(name, vip, port, endpoints=eps, **fields)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
