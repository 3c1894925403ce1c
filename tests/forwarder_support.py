"""Real parts for the forwarder tests: backends, clients and a subprocess forwarder.

Everything talks over real sockets on 127.0.0.1.  Backends are asyncio servers in the
test's own event loop (killing one closes its port and resets its connections, as a
crashed process would); clients are real sockets, some bound to other 127/8 source
addresses so hash schedulers see many clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lbcore
from lbcore import Endpoint, Service
from ports import free_port  # noqa: F401 (used here and re-exported to the tests)

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ["uvloop", "asyncio"]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        uvloop = __import__("pytest").importorskip("uvloop")
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run_async(kind: str, coro: Any) -> Any:
    """Run ``coro`` to completion on a fresh event loop of ``kind``."""
    loop = new_loop(kind)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 60))
    finally:
        loop.close()


def until_or_exit(process: subprocess.Popen, condition: Any, timeout: float = 10.0) -> Any:
    """Poll ``condition`` (OSError counts as not yet) until it returns something true, and
    return that; fail at once, with its stderr, if the ``lbcore forward`` process exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
            if result:
                return result
        except OSError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"lbcore forward exited with {process.returncode}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def poll_entry(poller: Any, fd: int) -> tuple[int, Any, Any]:
    """(events, on_readable, on_writable) of ``fd`` in a poller: the pure pollers keep a
    list per descriptor, the compiled one an entry with those names."""
    entry = poller.watched[fd]
    if isinstance(entry, list):
        return entry[0], entry[1], entry[2]
    return entry.events, entry.on_readable, entry.on_writable


def read_lines(stream: Any, count: int, timeout: float = 10.0) -> str:
    """``count`` lines from a child's text pipe, failing after ``timeout`` instead of
    blocking the run (the reading thread ends when the child does)."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(lambda: "".join(stream.readline() for _ in range(count))).result(timeout)
    finally:
        pool.shutdown(wait=False)


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, giving the loop turns (sockets move in real time).

    The wall-clock bound only catches a hang: what it waits for takes milliseconds, so
    ``timeout`` leaves far more than 10x margin.  Timeouts under test never wait here:
    they run on the forwarder's `ManualClock`.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {predicate}")
        await asyncio.sleep(0.002)


def scheduler_cases() -> list[tuple[str, int | None]]:
    """(scheduler, affinity_timeout) for every scheduler, plus rr with affinity."""
    return [(name, None) for name in lbcore.SCHEDULERS] + [("rr", 60)]


_PAYLOADS: dict[int, bytes] = {}


def payload(n: int) -> bytes:
    """``n`` reproducible pseudo-random bytes (no period to hide a lost or repeated block)."""
    if n not in _PAYLOADS:
        _PAYLOADS[n] = random.Random(n).randbytes(n)
    return _PAYLOADS[n]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _BackendProtocol(asyncio.Protocol):
    """Line commands: ``who`` → the backend's name and close; ``echo`` → echo until EOF,
    then half-close; ``send N`` → N payload bytes (respecting backpressure), then close."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.buffer = b""
        self.mode = "command"
        self.to_send = memoryview(b"")
        self.paused = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.backend.dead:  # accepted by the loop after the kill: a dead process accepts nothing
            transport.abort()
            return
        self.backend.connections.add(transport)
        self.backend.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.mode == "echo":
            self.transport.write(data)
            return
        self.buffer += data
        if b"\n" not in self.buffer:
            return
        line, _, rest = self.buffer.partition(b"\n")
        command = line.decode().split()
        self.backend.requests += 1
        if command[0] == "who":
            self.transport.write(self.backend.name.encode() + b"\n")
            self.transport.close()
        elif command[0] == "echo":
            self.mode = "echo"
            if rest:
                self.transport.write(rest)
        elif command[0] == "send":
            self.to_send = memoryview(payload(int(command[1])))
            self._send()

    def eof_received(self) -> bool:
        if self.mode == "echo":
            self.transport.write_eof()
            return True
        return False

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._send()

    def _send(self) -> None:
        while self.to_send and not self.paused:
            chunk, self.to_send = self.to_send[:65536], self.to_send[65536:]
            self.transport.write(chunk)
        if not self.to_send and not self.paused:
            self.transport.close()


class Backend:
    """A TCP backend on 127.0.0.1 with a name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: Any = None
        self.connections: set[Any] = set()
        self.accepted = 0
        self.requests = 0
        self.port = 0
        self.dead = False

    async def start(self, port: int = 0) -> Backend:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _BackendProtocol(self), "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port)

    def kill(self) -> None:
        """Close the port and reset every connection, like a crashed process."""
        self.dead = True
        self.server.close()
        for transport in list(self.connections):
            transport.abort()


async def backends(*names: str) -> list[Backend]:
    return [await Backend(name).start() for name in names]


def service(name: str, endpoints: list[Endpoint], **kw: Any) -> Service:
    kw.setdefault("listen", "127.0.0.1:0")
    return Service(name, "10.96.0.1", 80, endpoints=endpoints, **kw)


async def open_client(address: tuple[str, int], source: str | None = None) -> tuple[Any, Any]:
    """A stream client, optionally from another 127/8 source address."""
    local = (source, 0) if source else None
    return await asyncio.open_connection(*address, local_addr=local)


async def refused_or_read(address: tuple[str, int]) -> Any:
    """Connect and read to the end: "reset" if the forwarder reset the connection.

    The reset may come before the client's own connect has finished (the forwarder
    accepts and refuses at once) or after; either way the client hears it.
    """
    try:
        reader, writer = await open_client(address)
    except ConnectionResetError:
        return "reset"
    try:
        return await reader.read()
    except ConnectionResetError:
        return "reset"
    finally:
        writer.close()


async def who(address: tuple[str, int], source: str | None = None) -> str:
    """One request on a new connection: the name of the backend that answered."""
    reader, writer = await open_client(address, source)
    try:
        writer.write(b"who\n")
        return (await reader.read()).decode().strip()
    finally:
        writer.close()


async def fetch(
    address: tuple[str, int], n: int, read_delay: float = 0.0, chunk: int = 65536,
    rcvbuf: int | None = None,
) -> bytes:
    """Ask for ``n`` bytes and read them all, sleeping ``read_delay`` per chunk (a slow reader).

    ``rcvbuf`` shrinks the client's receive buffer, so that the kernel cannot absorb a
    slow read and the forwarder's writes back up (its transport, its flow control).
    """
    if rcvbuf is None:
        reader, writer = await asyncio.open_connection(*address, limit=chunk)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before the handshake
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=chunk)
    try:
        writer.write(b"send %d\n" % n)
        parts = []
        while data := await reader.read(chunk):
            parts.append(data)
            if read_delay:
                await asyncio.sleep(read_delay)
        return b"".join(parts)
    finally:
        writer.close()


async def steady_requests(
    address: tuple[str, int], stop: asyncio.Event, workers: int = 8
) -> tuple[list[str], list[str]]:
    """New-connection requests from ``workers`` clients until ``stop``; (answers, failures)."""
    answers: list[str] = []
    failures: list[str] = []

    async def worker(i: int) -> None:
        source = f"127.0.0.{2 + i}"
        while not stop.is_set():
            try:
                name = await who(address, source)
                if name:
                    answers.append(name)
                else:
                    failures.append("empty reply")
            except OSError as exc:
                failures.append(repr(exc))

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return answers, failures


# -- a forwarder in a subprocess, through lbcore.forwarder.run() ------------------------

CHILD = """
import json, sys
from lbcore import Endpoint, Service
from lbcore.forwarder import run

def load():
    with open(sys.argv[1]) as f:
        config = json.load(f)
    return [
        Service(s["name"], "10.96.0.1", 80, listen=s["listen"], protocol=s.get("protocol", "tcp"),
                endpoints=[Endpoint("127.0.0.1", p) for p in s["ports"]])
        for s in config["services"]
    ]

sys.exit(run(load, **json.loads(sys.argv[2])))
"""


def write_config(path: Path, services: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": services}))
    os.replace(tmp, path)


class ChildForwarder:
    """``python -c CHILD config.json options``: run() in its own process."""

    def __init__(self, config: Path, **options: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(config), json.dumps(options)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.log: list[str] = []
        self.terminated = False

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        """Read stderr lines until one contains ``needle``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(
                    f"child exited ({self.proc.poll()}) before {needle!r}:\n" + "".join(self.log)
                )
            self.log.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no {needle!r} within {timeout}s:\n" + "".join(self.log))

    def address(self, name: str) -> tuple[str, int]:
        line = self.wait_log(f"{name}: listening on ")
        host, port = line.split("listening on ")[1].split("/")[0].rsplit(":", 1)
        return host, int(port)

    def signal(self, signum: int) -> None:
        self.terminated |= signum == signal.SIGTERM
        self.proc.send_signal(signum)

    def vm(self, key: str) -> int:
        """A /proc/PID/status figure in bytes (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def stop(self, timeout: float = 15.0) -> tuple[int, str, str]:
        if not self.terminated:
            self.signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, "".join(self.log) + err


