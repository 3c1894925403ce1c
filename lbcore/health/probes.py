"""The checks themselves: one connection per check, closed whatever happens.

``tcp``: connect; with ``send``, send it; with ``expect``, read until those bytes came
(keepalived TCP_CHECK; HAProxy ``tcp-check send``/``expect string``).  ``http``: send
``GET path HTTP/1.1`` with ``Host`` and ``Connection: close`` and read the status line
(keepalived HTTP_GET, HAProxy ``http-check``).  The whole conversation must end within
``timeout``: an endpoint that accepts and never answers fails then.

Every check closes its socket with a reset (SO_LINGER 0), as HAProxy closes its checks:
the checker would otherwise leave one TIME_WAIT entry per check behind (thousands a
second on a large set), and the endpoint has nothing left to send anyway.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from ..models import Endpoint, HealthCheck, join_host_port

__all__ = ["probe", "MAX_READ"]

#: Bytes read at most while looking for ``expect`` or an HTTP status line.
MAX_READ = 16384
_LINGER_RESET = struct.pack("ii", 1, 0)


async def probe(check: HealthCheck, endpoint: Endpoint) -> str | None:
    """Check ``endpoint`` once; None if it passed, else why it failed.

    Never raises for anything the endpoint does (refusal, reset, silence, garbage); the
    socket is closed before this returns, also when the caller cancels it.
    """
    port = check.port or endpoint.port
    family = socket.AF_INET6 if ":" in endpoint.ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        talk = _http(check, sock, endpoint.ip, port) if check.type == "http" else _tcp(check, sock, endpoint.ip, port)
        return await asyncio.wait_for(talk, check.timeout)
    except asyncio.TimeoutError:
        return f"timed out after {check.timeout:g}s"
    except OSError as exc:
        # asyncio words a failed connect its own way; the errno's text is the same everywhere
        return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    finally:
        sock.close()


async def _tcp(check: HealthCheck, sock: socket.socket, ip: str, port: int) -> str | None:
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (ip, port))
    if check.send is not None:
        await loop.sock_sendall(sock, check.send)
    if check.expect is None:
        return None
    expect = check.expect
    received = b""
    while expect not in received:
        if len(received) >= MAX_READ:
            return f"expected {expect!r} not in the first {MAX_READ} bytes"
        data = await loop.sock_recv(sock, MAX_READ)
        if not data:
            return f"closed before sending {expect!r}"
        received += data
    return None


async def _http(check: HealthCheck, sock: socket.socket, ip: str, port: int) -> str | None:
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (ip, port))
    host = check.host or join_host_port(ip, port)
    request = (
        f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbcore-health\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode("ascii"))
    received = b""
    while b"\r\n" not in received:
        if len(received) >= MAX_READ:
            return "no status line in the first %d bytes" % MAX_READ
        data = await loop.sock_recv(sock, MAX_READ)
        if not data:
            return "closed before a status line" if not received else "closed inside the status line"
        received += data
    line = received.partition(b"\r\n")[0]
    # RFC 9112 status-line: HTTP-version SP 3DIGIT SP [reason-phrase]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not (len(parts[1]) == 3 and parts[1].isdigit()):
        return f"not an HTTP status line: {line[:80]!r}"
    status = int(parts[1])
    low, high = check.statuses  # type: ignore[misc]  # set for every http check
    if not low <= status <= high:
        return f"status {status}"
    return None
