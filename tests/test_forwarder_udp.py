"""UDP flows over real sockets: pinning, idle timeout, ICMP refusals, the flow limit."""

from __future__ import annotations

import asyncio
import socket

import pytest

from lbcore import Endpoint
from lbcore.forwarder import Forwarder, ManualClock

from forwarder_support import LOOPS, eventually, run_async, service


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.name = name.encode()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(self.name + b":" + data, addr)


async def udp_backend(name: str) -> tuple[Endpoint, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Echo(name), local_addr=("127.0.0.1", 0)
    )
    return Endpoint("127.0.0.1", transport.get_extra_info("sockname")[1]), transport


def dead_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed: datagrams there draw ICMP port unreachable


class Client:
    """A real UDP client socket; ``ask`` sends and waits for one reply (None on timeout)."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(address)

    async def ask(self, data: bytes, timeout: float = 0.3) -> bytes | None:
        loop = asyncio.get_running_loop()
        self.sock.send(data)
        try:
            return await asyncio.wait_for(loop.sock_recv(self.sock, 65536), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self):
        self.sock.close()


def udp_service(name, endpoints, **kw):
    return service(name, endpoints, protocol="udp", **kw)


def test_each_client_flow_stays_on_one_endpoint(loop_kind):
    async def main():
        (a, ta), (b, tb) = await udp_backend("a"), await udp_backend("b")
        fw = Forwarder([udp_service("dns", [a, b])])
        await fw.start()
        clients = [Client(fw.addresses["dns"]) for _ in range(4)]
        replies = [[await c.ask(b"q%d" % i) for i in range(5)] for c in clients]
        stats = fw.stats()["dns"]
        for c in clients:
            c.close()
        await fw.stop()
        ta.close()
        tb.close()
        return replies, stats

    replies, stats = run_async(loop_kind, main())
    owners = []
    for client_replies in replies:
        names = {r.split(b":")[0] for r in client_replies}
        assert len(names) == 1  # pinned
        assert [r.split(b":")[1] for r in client_replies] == [b"q%d" % i for i in range(5)]
        owners.append(names.pop())
    assert sorted(owners) == [b"a", b"a", b"b", b"b"]  # round robin over the flows
    assert stats["active"] == 4 and stats["total"] == 4
    assert stats["bytes_in"] == 4 * 5 * 2 and stats["bytes_out"] == 4 * 5 * 4


def test_idle_flows_end_and_the_client_gets_a_new_one(loop_kind):
    async def main():
        (a, ta) = await udp_backend("a")
        clock = ManualClock()
        fw = Forwarder([udp_service("dns", [a])], udp_idle_timeout=4, clock=clock)
        await fw.start()
        (listener,) = fw._listeners
        client = Client(fw.addresses["dns"])
        assert await client.ask(b"1") == b"a:1"
        during = fw.stats()["dns"]["active"]
        (flow,) = listener.flows.values()
        # The sweep at 1 s sees its bytes; IDLE_TICKS silent sweeps later, at 5 s, it ends.
        clock.advance(4)
        closing = [flow.transport.is_closing()]
        clock.advance(1)
        closing.append(flow.transport.is_closing())
        await eventually(lambda: fw.stats()["dns"]["active"] == 0)
        after = fw.stats()["dns"]
        again = await client.ask(b"2")
        total = fw.stats()["dns"]["total"]
        client.close()
        await fw.stop()
        ta.close()
        return during, closing, after, again, total

    during, closing, after, again, total = run_async(loop_kind, main())
    assert during == 1 and closing == [False, True]
    assert after["active"] == 0 and after["endpoints"]
    assert again == b"a:2" and total == 2


def test_icmp_refusal_cools_the_endpoint_down_and_the_retry_lands_elsewhere(loop_kind):
    async def main():
        (a, ta) = await udp_backend("a")
        dead = Endpoint("127.0.0.1", dead_udp_port())
        fw = Forwarder([udp_service("dns", [dead, a])], cooldown=5)
        await fw.start()
        answers = []
        for i in range(4):  # each client retries its question once, as DNS clients do
            client = Client(fw.addresses["dns"])
            reply = await client.ask(b"q") or await client.ask(b"q")
            answers.append(reply)
            client.close()
        stats = fw.stats()["dns"]["endpoints"][dead.address]
        await fw.stop()
        ta.close()
        return answers, stats

    answers, dead_stats = run_async(loop_kind, main())
    assert answers == [b"a:q"] * 4
    assert dead_stats["failures"] == 1 and dead_stats["failed"]


def test_flow_limit_drops_new_clients_until_a_flow_ends(loop_kind):
    async def main():
        (a, ta) = await udp_backend("a")
        clock = ManualClock()
        fw = Forwarder([udp_service("dns", [a], max_connections=2)], udp_idle_timeout=4,
                       clock=clock)
        await fw.start()
        first = [Client(fw.addresses["dns"]) for _ in range(2)]
        assert [await c.ask(b"x") for c in first] == [b"a:x", b"a:x"]
        late = Client(fw.addresses["dns"])
        dropped = await late.ask(b"y", timeout=0.15)
        refused = fw.stats()["dns"]["refused"]
        clock.advance(5)  # the first two go idle and end
        await eventually(lambda: fw.stats()["dns"]["active"] == 0)
        recovered = await late.ask(b"z")
        for c in first + [late]:
            c.close()
        await fw.stop()
        ta.close()
        return dropped, refused, recovered

    dropped, refused, recovered = run_async(loop_kind, main())
    assert dropped is None and refused == 1 and recovered == b"a:z"


def test_removed_udp_service_keeps_answering_its_flows_then_closes(loop_kind):
    async def main():
        (a, ta) = await udp_backend("a")
        clock = ManualClock()
        fw = Forwarder([udp_service("dns", [a])], udp_idle_timeout=4, clock=clock)
        await fw.start()
        address = fw.addresses["dns"]
        (listener,) = fw._listeners
        old = Client(address)
        assert await old.ask(b"1") == b"a:1"
        fw.update([])
        still = await old.ask(b"2")  # the existing flow still gets its replies
        newcomer = Client(address)
        ignored = await newcomer.ask(b"3", timeout=0.15)
        draining = fw.stats()
        open_while_draining = not listener.closed
        clock.advance(5)  # the old flow goes idle and ends
        await eventually(lambda: listener.closed)
        rebind = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rebind.bind(address)  # the listener closed once its last flow went idle
        rebind.close()
        for c in (old, newcomer):
            c.close()
        await fw.stop()
        ta.close()
        return still, ignored, draining, open_while_draining

    still, ignored, draining, open_while_draining = run_async(loop_kind, main())
    assert still == b"a:2" and ignored is None and open_while_draining
    assert draining["dns"]["removed"] and draining["dns"]["active"] == 1
