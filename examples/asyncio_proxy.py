"""Embed a balancer in an asyncio TCP proxy: one pick per connection, released at its end.

Starts three backends, a proxy in front of them and twelve clients, all on 127.0.0.1,
and prints which backend answered each client.  The third backend is down: the proxy
marks it failed on the first refused connection and the balancer skips it from then on.

    python examples/asyncio_proxy.py
"""

import asyncio
from collections import Counter

from lbcore import Endpoint, NoEndpointsError, make_balancer


async def start_backend(name: str) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read(1024)
        writer.write(f"{name} got {request.decode()}".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()  # backpressure: wait while the other side is slow
    finally:
        writer.close()


def proxy(balancer):
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        client_ip = client_writer.get_extra_info("peername")[0]
        while True:
            try:
                lease = balancer.lease(key=client_ip)  # the key matters to sh, mh and affinity
            except NoEndpointsError:
                client_writer.close()
                return
            with lease as endpoint:  # release() when the connection ends: lc/wlc count it
                try:
                    upstream = await asyncio.open_connection(endpoint.ip, endpoint.port)
                except OSError:
                    balancer.mark_failed(endpoint)  # skipped until mark_healthy()
                    continue
                await asyncio.gather(pipe(client_reader, upstream[1]), pipe(upstream[0], client_writer))
                return

    return handle


async def ask(port: int, text: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text.encode())
    reply = await reader.read()
    writer.close()
    return reply.decode()


async def main() -> None:
    backends = [await start_backend(name) for name in ("alpha", "beta")]
    ports = [server.sockets[0].getsockname()[1] for server in backends]
    down = await start_backend("gamma")
    ports.append(down.sockets[0].getsockname()[1])
    down.close()  # gamma's port now refuses connections
    await down.wait_closed()

    balancer = make_balancer("rr", [Endpoint("127.0.0.1", port) for port in ports])
    server = await asyncio.start_server(proxy(balancer), "127.0.0.1", 0)
    proxy_port = server.sockets[0].getsockname()[1]

    replies = [await ask(proxy_port, f"request {i}") for i in range(12)]
    for reply in replies:
        print(reply)
    print(dict(Counter(reply.split()[0] for reply in replies)))
    server.close()
    for backend in backends:
        backend.close()


if __name__ == "__main__":
    asyncio.run(main())
