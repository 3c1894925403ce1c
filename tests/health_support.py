"""Real parts for the health tests: endpoints on 127.0.0.1 that behave well or badly,
and a clock the test moves.

Each `Endpoint` is an asyncio server in the test's own loop with one behaviour: accept
(and say nothing), answer ``PING`` with ``+PONG``, answer HTTP with a status, hang
(accept, read, never answer), reset (accept, then RST), or send garbage.  It counts the
connections it accepted, how many are open now, and the most that were open at once,
and keeps every request it read.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
from typing import Any

from lbcore import Endpoint

BEHAVIOURS = ("accept", "pong", "http", "hang", "reset", "garbage")


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Protocol(asyncio.Protocol):
    def __init__(self, server: CheckedServer) -> None:
        self.server = server
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        server.accepted += 1
        server.open.add(transport)
        server.peak = max(server.peak, len(server.open))
        if server.group is not None:
            server.group.opened(transport)
        if server.behaviour == "reset":
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif server.behaviour == "garbage":
            transport.write(b"\x00\x01 hello, this is no protocol\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self.transport)
        if self.server.group is not None:
            self.server.group.closed(self.transport)

    def data_received(self, data: bytes) -> None:
        server = self.server
        self.buffer += data
        if server.behaviour == "pong" and b"PING\r\n" in self.buffer:
            server.requests.append(self.buffer)
            self.transport.write(b"+PONG\r\n")
        elif server.behaviour == "http" and b"\r\n\r\n" in self.buffer:
            server.requests.append(self.buffer)
            self.transport.write(b"HTTP/1.1 %d Whatever\r\nContent-Length: 0\r\n\r\n" % server.status)
            self.transport.close()


class ConnectionGroup:
    """Counts the connections open at once across many servers."""

    def __init__(self) -> None:
        self.open: set[Any] = set()
        self.peak = 0
        self.accepted = 0

    def opened(self, transport: Any) -> None:
        self.accepted += 1
        self.open.add(transport)
        self.peak = max(self.peak, len(self.open))

    def closed(self, transport: Any) -> None:
        self.open.discard(transport)


class CheckedServer:
    """One endpoint on 127.0.0.1 with one behaviour (see the module docstring)."""

    def __init__(self, behaviour: str, *, status: int = 200, group: ConnectionGroup | None = None) -> None:
        assert behaviour in BEHAVIOURS, behaviour
        self.behaviour = behaviour
        self.status = status
        self.group = group
        self.server: Any = None
        self.port = 0
        self.accepted = 0
        self.peak = 0
        self.open: set[Any] = set()
        self.requests: list[bytes] = []

    async def start(self, port: int = 0) -> CheckedServer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", port or self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the port and reset every open connection, like a crashed process."""
        self.server.close()
        for transport in list(self.open):
            transport.abort()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)


async def servers(behaviour: str, n: int = 1, **kw: Any) -> list[CheckedServer]:
    return [await CheckedServer(behaviour, **kw).start() for _ in range(n)]


def open_descriptors() -> int:
    """Descriptors this process holds now (after collecting garbage: an earlier test's
    unreachable sockets must not close in the middle of a count)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound and released: refused until reused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
