"""The checks themselves: one connection per check, closed whatever happens.

``tcp``: connect; with ``send``, send it; with ``expect``, read until those bytes came
(keepalived TCP_CHECK; HAProxy ``tcp-check send``/``expect string``).  ``http``: send
``GET path HTTP/1.1`` with ``Host`` and ``Connection: close`` and read the status line
(keepalived HTTP_GET, HAProxy ``http-check``).  The whole conversation must end within
``timeout``: an endpoint that accepts and never answers fails then.

A check is an asyncio protocol on the event loop's own transport: on uvloop that is a
libuv TCP handle, several times cheaper per connection than watching a socket of our own
(``loop.sock_connect`` makes and tears down a poll handle per socket).  Every check closes
its connection with a reset (SO_LINGER 0), as HAProxy closes its checks: the checker
would otherwise leave one TIME_WAIT entry per check behind (thousands a second on a
large set), and the endpoint has nothing left to send anyway.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from typing import Any

from ..models import Endpoint, HealthCheck, join_host_port

__all__ = ["probe", "MAX_READ"]

#: Bytes read at most while looking for ``expect`` or an HTTP status line.
MAX_READ = 16384
_LINGER_RESET = struct.pack("ii", 1, 0)


async def probe(check: HealthCheck, endpoint: Endpoint) -> str | None:
    """Check ``endpoint`` once; None if it passed, else why it failed.

    Never raises for anything the endpoint does (refusal, reset, silence, garbage); the
    connection is closed before this returns, also when the caller cancels it.
    """
    loop = asyncio.get_running_loop()
    port = check.port or endpoint.port
    conversation = _Conversation(check, endpoint.ip, port, loop.create_future())
    try:
        return await asyncio.wait_for(conversation.run(loop), check.timeout)
    except asyncio.TimeoutError:
        return f"timed out after {check.timeout:g}s"
    except OSError as exc:
        # asyncio words a failed connect its own way; the errno's text is the same everywhere
        return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    finally:
        conversation.close()


class _Conversation(asyncio.Protocol):
    """One check's connection: what it sends, and the verdict on what comes back."""

    def __init__(self, check: HealthCheck, ip: str, port: int, verdict: asyncio.Future) -> None:
        self.check = check
        self.ip = ip
        self.port = port
        self.verdict = verdict
        self.received = b""
        self.transport: Any = None

    async def run(self, loop: asyncio.AbstractEventLoop) -> str | None:
        await loop.create_connection(lambda: self, self.ip, self.port)
        return await self.verdict

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # the linger option makes it a reset

    def _decide(self, why: str | None) -> None:
        if not self.verdict.done():
            self.verdict.set_result(why)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        check = self.check
        if check.type == "http":
            host = check.host or join_host_port(self.ip, self.port)
            transport.write(
                f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbcore-health\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n".encode("ascii")
            )
        elif check.send is not None:
            transport.write(check.send)
        if check.type == "tcp" and check.expect is None:
            self._decide(None)  # connected (and the bytes to send handed to the kernel)

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.check.type == "http":
            self._status_line()
        elif self.check.expect in self.received:  # type: ignore[operator]  # expect is set
            self._decide(None)
        elif len(self.received) >= MAX_READ:
            self._decide(f"expected {self.check.expect!r} not in the first {MAX_READ} bytes")

    def _status_line(self) -> None:
        line, found, _ = self.received.partition(b"\r\n")
        if not found:
            if len(self.received) >= MAX_READ:
                self._decide(f"no status line in the first {MAX_READ} bytes")
            return
        # RFC 9112 status-line: HTTP-version SP 3DIGIT SP [reason-phrase]
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not (len(parts[1]) == 3 and parts[1].isdigit()):
            self._decide(f"not an HTTP status line: {line[:80]!r}")
            return
        status = int(parts[1])
        low, high = self.check.statuses  # type: ignore[misc]  # set for every http check
        self._decide(None if low <= status <= high else f"status {status}")

    def eof_received(self) -> bool:
        self._ended(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError) and exc.errno:
            self._decide(os.strerror(exc.errno))
        elif self.check.type == "http":
            self._decide("closed inside the status line" if self.received else "closed before a status line")
        else:
            self._decide(f"closed before sending {self.check.expect!r}")
