"""A real etcd for tests: one member or a cluster on 127.0.0.1, free ports, a temporary data dir.

Debian's ``etcd-server`` (etcd 3.4) and ``etcd-client`` (``etcdctl``).  Members are
started, stopped (SIGTERM), killed (SIGKILL) and restarted on the same ports and data
directories, so a restarted member has every key it had.  Writes go through
``etcdctl`` (etcd's own client), never through the code under test.

    with EtcdCluster(tmp_path, size=3) as cluster:
        cluster.put("/lbcore/services/web", '{"vip": "10.96.0.10", "port": 80}')
        cluster.kill(0)
        ...
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from ports import free_port

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
MISSING = None if ETCD and ETCDCTL else "etcd and etcdctl are not installed (apt-get install etcd-server etcd-client)"

#: How long a member may take to answer /health after it was started.
START_TIMEOUT = 30.0


class Member:
    """One etcd process; its ports and data directory outlive the process."""

    def __init__(self, name: str, directory: Path):
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = directory / name
        self.log = directory / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, initial_cluster: str, token: str) -> None:
        client_url = f"http://{self.endpoint}"
        command = [
            ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
            "--initial-cluster-state", "new",
            # elections in a second rather than in several: the tests kill leaders
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(number)
            self.process.wait(timeout=30)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as answer:
                return json.load(answer).get("health") == "true"
        except (OSError, ValueError):
            return False


class EtcdCluster:
    """``size`` members on 127.0.0.1 under ``directory``; a context manager that kills them all."""

    def __init__(self, directory: Path, size: int = 1):
        directory.mkdir(parents=True, exist_ok=True)
        self.members = [Member(f"m{i}", directory) for i in range(size)]
        self._initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        self._token = f"lbcore-test-{os.getpid()}-{self.members[0].client_port}"

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start every member that is not running and wait until all answer healthy."""
        for member in self.members:
            if not member.running:
                member.start(self._initial_cluster, self._token)
        self.wait_healthy(*range(len(self.members)))

    def restart(self, *indexes: int, wait: bool = True) -> None:
        """Start the members at ``indexes`` again (same ports, same data)."""
        for i in indexes:
            self.members[i].start(self._initial_cluster, self._token)
        if wait:
            self.wait_healthy(*indexes)

    def stop(self, *indexes: int) -> None:
        """SIGTERM: a clean shutdown."""
        for i in indexes:
            self.members[i].signal(signal.SIGTERM)

    def kill(self, *indexes: int) -> None:
        """SIGKILL: the process dies at once, its connections reset."""
        for i in indexes:
            self.members[i].signal(signal.SIGKILL)

    def close(self) -> None:
        self.kill(*range(len(self.members)))

    def wait_healthy(self, *indexes: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for i in indexes:
            member = self.members[i]
            while not member.healthy():
                if not member.running:
                    raise RuntimeError(f"etcd {member.name} exited; see {member.log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {member.name} not healthy after {START_TIMEOUT} s; see {member.log}")
                time.sleep(0.05)

    # -- addresses ----------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def spec(self, prefix: str) -> str:
        """The source text lbcore takes: ``etcd://HOST:PORT,.../PREFIX``."""
        return f"etcd://{','.join(self.endpoints)}{prefix}"

    # -- data, through etcdctl ----------------------------------------------------------

    def ctl(self, *args: str) -> str:
        """Run ``etcdctl`` against the running members; its output.

        A request that meets an election (a leader was just killed) is tried again, as a
        real writer would, for up to `START_TIMEOUT` seconds.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            running = [m.endpoint for m in self.members if m.running]
            result = subprocess.run(
                [ETCDCTL, f"--endpoints={','.join(running)}", "--command-timeout=5s", *args],
                capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"},
            )
            if result.returncode == 0:
                return result.stdout
            electing = any(sign in result.stderr for sign in ("leader", "Unavailable", "timed out", "deadline exceeded"))
            if not electing or time.monotonic() > deadline:
                raise RuntimeError(f"etcdctl {' '.join(args)}: {result.stderr.strip()}")
            time.sleep(0.1)

    def put(self, key: str, value: str) -> int:
        """Write ``key``; the revision it was written at."""
        self.ctl("put", key, value)
        return self.revision()

    def delete(self, key: str) -> int:
        self.ctl("del", key)
        return self.revision()

    def revision(self) -> int:
        status = json.loads(self.ctl("endpoint", "status", "--write-out=json"))
        return max(int(entry["Status"]["header"]["revision"]) for entry in status)

    def compact(self, revision: int | None = None) -> int:
        """Compact the history up to ``revision`` (default: the current one)."""
        revision = self.revision() if revision is None else revision
        self.ctl("compact", str(revision), "--physical")
        return revision


class Relay:
    """A TCP relay on 127.0.0.1 in front of one address, that a test can cut and restore.

    While cut, it resets the connections it carries and closes each new one at once: to a
    client the member has gone away, while the member itself runs on (and can be written
    to and compacted behind the client's back).  Runs on the test's event loop.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self.cut = False
        self._server = None
        self._pipes: set = set()

    async def start(self) -> Relay:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _carry(self, reader, writer) -> None:
        if self.cut:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pair = (writer, upstream_writer)
        self._pipes.add(pair)

        async def pump(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))
        self._pipes.discard(pair)

    def sever(self) -> None:
        """Cut: drop every carried connection and refuse new ones until `restore`."""
        self.cut = True
        for pair in list(self._pipes):
            for writer in pair:
                writer.transport.abort()

    def restore(self) -> None:
        self.cut = False

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
