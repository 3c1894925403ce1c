"""Live updates: validation before anything changes, rebinding, takeover, draining."""

from __future__ import annotations

import socket

import pytest

from lbcore import ConfigError, Endpoint, Service
from lbcore.forwarder import Forwarder

from forwarder_support import (
    LOOPS, backends, eventually, free_port, open_client, refused_or_read, run_async, service,
    who,
)


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_a_bad_update_changes_nothing_and_closes_what_it_bound(loop_kind):
    occupied = socket.socket()
    occupied.bind(("127.0.0.1", 0))
    occupied.listen()
    fresh = free_port()

    async def main():
        a, b = await backends("a", "b")
        fw = Forwarder([service("web", [a.endpoint])])
        await fw.start()
        before = dict(fw.addresses)
        with pytest.raises(ConfigError) as info:
            fw.update([
                service("web", [b.endpoint]),
                service("fresh", [b.endpoint], listen=f"127.0.0.1:{fresh}"),  # binds fine
                service("taken", [b.endpoint], listen=f"127.0.0.1:{occupied.getsockname()[1]}"),
            ])
        answer = await who(fw.addresses["web"])
        after = dict(fw.addresses)
        probe = socket.socket()
        probe.bind(("127.0.0.1", fresh))  # the plan released what it had bound
        probe.close()
        await fw.stop()
        return str(info.value), before, after, answer, fw.stats()

    try:
        message, before, after, answer, stats = run_async(loop_kind, main())
    finally:
        occupied.close()
    assert message.startswith("services[taken].listen: '127.0.0.1:")
    assert "cannot be bound for tcp" in message
    assert before == after and answer == "a" and set(stats) == {"web"}


@pytest.mark.parametrize(
    "services, message",
    [
        ([1], r"^services\[0\]: 1 is not a Service"),
        (
            [service("web", []), service("web", [])],
            r"^services\[web\]\.name: 'web' is used twice",
        ),
        (
            [
                service("a", [], listen="127.0.0.1:18080"),
                service("b", [], listen="127.0.0.1:18080"),
            ],
            r"^services\[b\]\.listen: '127\.0\.0\.1:18080' is also the tcp address of service a",
        ),
        (
            [Service("s", "10.0.0.1", 80, protocol="sctp", listen="127.0.0.1:0")],
            r"^services\[s\]\.protocol: 'sctp' is not supported by the userspace forwarder",
        ),
    ],
)
def test_bad_service_sets_are_refused_by_name(loop_kind, services, message):
    async def main():
        fw = Forwarder(services)
        with pytest.raises(ConfigError, match=message):
            await fw.start()
        await fw.stop()

    run_async(loop_kind, main())


def test_same_port_for_tcp_and_udp_is_two_services(loop_kind):
    port = free_port()

    async def main():
        fw = Forwarder([
            service("t", [Endpoint("127.0.0.1", 9)], listen=f"127.0.0.1:{port}"),
            service("u", [Endpoint("127.0.0.1", 9)], listen=f"127.0.0.1:{port}", protocol="udp"),
        ])
        await fw.start()
        addresses = dict(fw.addresses)
        await fw.stop()
        return addresses

    assert run_async(loop_kind, main()) == {"t": ("127.0.0.1", port), "u": ("127.0.0.1", port)}


def test_moved_listener_serves_the_new_address_and_old_connections_finish(loop_kind):
    async def main():
        (a,) = await backends("a")
        fw = Forwarder([service("web", [a.endpoint])])
        await fw.start()
        old = fw.addresses["web"]
        reader, writer = await open_client(old)
        writer.write(b"echo\nbefore ")
        assert await reader.readexactly(7) == b"before "
        fw.update([service("web", [a.endpoint], listen=f"127.0.0.1:{free_port()}")])
        new = fw.addresses["web"]
        with pytest.raises(ConnectionRefusedError):
            await open_client(old)
        answer = await who(new)
        writer.write(b"after")  # the connection made on the old address lives on
        rest = await reader.readexactly(5)
        writer.close()
        await fw.stop()
        return old != new, answer, rest

    assert run_async(loop_kind, main()) == (True, "a", b"after")


def test_two_services_swap_addresses_without_closing_a_port(loop_kind):
    p, q = free_port(), free_port()

    async def main():
        a, b = await backends("a", "b")
        fw = Forwarder([
            service("x", [a.endpoint], listen=f"127.0.0.1:{p}"),
            service("y", [b.endpoint], listen=f"127.0.0.1:{q}"),
        ])
        await fw.start()
        first = (await who(("127.0.0.1", p)), await who(("127.0.0.1", q)))
        fw.update([
            service("x", [a.endpoint], listen=f"127.0.0.1:{q}"),
            service("y", [b.endpoint], listen=f"127.0.0.1:{p}"),
        ])
        second = (await who(("127.0.0.1", p)), await who(("127.0.0.1", q)))
        addresses = dict(fw.addresses)
        await fw.stop()
        return first, second, addresses

    first, second, addresses = run_async(loop_kind, main())
    assert first == ("a", "b") and second == ("b", "a")
    assert addresses == {"x": ("127.0.0.1", q), "y": ("127.0.0.1", p)}


def test_removed_service_stops_accepting_and_its_connections_finish(loop_kind):
    async def main():
        (a,) = await backends("a")
        fw = Forwarder([service("web", [a.endpoint]), service("api", [a.endpoint])])
        await fw.start()
        web = fw.addresses["web"]
        reader, writer = await open_client(web)
        writer.write(b"echo\none ")
        assert await reader.readexactly(4) == b"one "
        fw.update([service("api", [a.endpoint])])
        draining = fw.stats()["web"]
        with pytest.raises(ConnectionRefusedError):
            await open_client(web)
        writer.write(b"two")
        tail = await reader.readexactly(3)
        writer.close()
        await eventually(lambda: "web" not in fw.stats())  # drained: forgotten
        gone = "web" not in fw.stats()
        await fw.stop()
        return draining, tail, gone

    draining, tail, gone = run_async(loop_kind, main())
    assert draining["removed"] and draining["active"] == 1
    assert tail == b"two" and gone


def test_lowering_max_connections_counts_the_connections_already_open(loop_kind):
    async def main():
        (a,) = await backends("a")
        fw = Forwarder([service("web", [a.endpoint])])
        await fw.start()
        port = fw.addresses["web"][1]
        held = []
        for _ in range(2):
            reader, writer = await open_client(fw.addresses["web"])
            writer.write(b"echo\nx")
            await reader.readexactly(1)
            held.append(writer)
        fw.update([service("web", [a.endpoint], listen=f"127.0.0.1:{port}", max_connections=2)])
        refused = await refused_or_read(fw.addresses["web"])
        for w in held:
            w.close()
        await fw.stop()
        return refused

    assert run_async(loop_kind, main()) == "reset"


def test_new_service_added_live_gets_a_listener(loop_kind):
    async def main():
        (a,) = await backends("a")
        fw = Forwarder([])
        await fw.start()
        fw.update([service("late", [a.endpoint])])
        answer = await who(fw.addresses["late"])  # the socket listens before update() returns
        await fw.stop()
        return answer

    assert run_async(loop_kind, main()) == "a"


def test_update_needs_a_started_forwarder():
    with pytest.raises(RuntimeError, match="started"):
        Forwarder([]).update([])


def test_a_port_chosen_for_a_port_0_service_is_not_taken_over(loop_kind):
    async def main():
        (a,) = await backends("a")
        fw = Forwarder([service("web", [a.endpoint])])  # listen 127.0.0.1:0
        await fw.start()
        port = fw.addresses["web"][1]
        taken = r"^services\[api\]\.listen: .* Address already in use"
        with pytest.raises(ConfigError, match=taken):
            fw.update([
                service("api", [a.endpoint], listen=f"127.0.0.1:{port}"),
                service("web", [a.endpoint]),
            ])
        answer = await who(("127.0.0.1", port))
        names = set(fw.stats())
        await fw.stop()
        return answer, names

    assert run_async(loop_kind, main()) == ("a", {"web"})
