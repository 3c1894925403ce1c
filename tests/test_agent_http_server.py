"""lbcore.http_server: routes over real sockets on 127.0.0.1, and the timeouts that keep
idle and slow clients from holding connections."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from lbcore.errors import ConfigError
from lbcore.http_server import Reply, parse_listen, serve

pytest.importorskip("aiohttp")


def run(coro):
    return asyncio.run(coro)


async def request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def test_routes_answer_with_their_status_body_and_type_and_others_404():
    calls = []

    def healthz() -> Reply:
        calls.append(1)
        return Reply(503, "overdue\n")

    async def main():
        server = await serve({"/healthz": healthz, "/livez": lambda: Reply(200, "ok", "application/json")},
                             ("127.0.0.1", 0), field="healthz_bind_address")
        port = server.address[1]
        try:
            close = b"Host: x\r\nConnection: close\r\n\r\n"
            return (port, await request(port, b"GET /healthz HTTP/1.1\r\n" + close),
                    await request(port, b"GET /livez HTTP/1.1\r\n" + close),
                    await request(port, b"GET /nothing HTTP/1.1\r\n" + close),
                    await request(port, b"POST /livez HTTP/1.1\r\nContent-Length: 0\r\n" + close))
        finally:
            await server.close()

    port, health, live, missing, post = run(main())
    assert port > 0
    assert health.startswith(b"HTTP/1.1 503 ") and health.endswith(b"\r\n\r\noverdue\n")
    assert b"Content-Type: text/plain; charset=utf-8" in health
    assert live.startswith(b"HTTP/1.1 200 ") and b"Content-Type: application/json" in live
    assert missing.startswith(b"HTTP/1.1 404 ")
    assert post.startswith(b"HTTP/1.1 405 ")
    assert calls == [1]  # one call per request, none for other paths


def test_idle_and_trickling_clients_are_closed_at_the_timeout():
    timeout = 0.3

    async def closed_after(port: int, trickle: bool) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()

        async def send_slowly():
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            for i in range(100):  # a header line every 50 ms, never the blank line
                writer.write(b"X-Slow: %d\r\n" % i)
                await asyncio.sleep(0.05)

        task = asyncio.create_task(send_slowly()) if trickle else None
        data = await asyncio.wait_for(reader.read(), 10)
        elapsed = time.monotonic() - start
        if task:
            task.cancel()
        writer.close()
        assert data == b""  # closed without an answer
        return elapsed

    async def main():
        server = await serve({"/healthz": lambda: Reply(200, "ok")}, ("127.0.0.1", 0),
                             field="healthz_bind_address", idle_timeout=timeout)
        try:
            port = server.address[1]
            return await closed_after(port, False), await closed_after(port, True)
        finally:
            await server.close()

    idle, trickling = run(main())
    # The wall clock: a 10x margin above, and not before the timeout.
    assert timeout * 0.9 <= idle < timeout * 10
    assert timeout * 0.9 <= trickling < timeout * 10


def test_an_address_in_use_is_a_config_error_naming_the_field():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def main():
        await serve({}, ("127.0.0.1", port), field="metrics_bind_address")

    try:
        with pytest.raises(ConfigError, match=rf"metrics_bind_address: '127.0.0.1:{port}' cannot be bound"):
            run(main())
    finally:
        taken.close()


def test_close_stops_listening():
    async def main():
        server = await serve({"/livez": lambda: Reply(200, "ok")}, ("127.0.0.1", 0), field="f")
        port = server.address[1]
        await server.close()
        return port

    port = run(main())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.mark.parametrize("value", ["10256", "localhost:10256", "127.0.0.1:70000", 10256])
def test_bad_listen_values_name_the_field(value):
    with pytest.raises(ConfigError, match=r"^healthz_bind_address: .* must be 'ip:port'"):
        parse_listen(value, "healthz_bind_address")
