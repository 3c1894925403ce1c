"""A throw-away network namespace for the iptables/ipset kernel tests, plus the backend
server and the client that run inside it.

The test process stays in the host namespace; everything that must happen inside runs
as a subprocess under ``ip netns exec``: the kernel tools, the backends (this file run as
``serve IP:PORT...``: a threaded TCP server per address that answers every connection
with "<its port> <the client's address>") and the client (this file run as ``connect``:
it reads the connections to make as JSON on stdin and prints, for each, the answer,
"refused" or "timeout").
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import threading

import pytest

_TOOLS = ("ip", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save", "ipset")
_counter = itertools.count()


def skip_reason() -> str | None:
    """Why the kernel tests cannot run here, or None.  CI is root and installs the tools."""
    if os.geteuid() != 0:
        return "needs root for network namespaces (CI runs as root)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install iptables ipset iproute2)"
    return None


kernel = [
    pytest.mark.kernel,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]


class Netns:
    """``ip netns add lbcore-test-<pid>-<n>`` with lo up; deleted on exit, whatever happened."""

    def __init__(self) -> None:
        self.name = f"lbcore-test-{os.getpid()}-{next(_counter)}"
        self._servers: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for server in self._servers:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", self.name], check=False)

    def run(self, *argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace; raise with its stderr if ``check`` and it fails."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], input=input, capture_output=True, text=True
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def iptables_restore(self, payload: str, *, check: bool = True, ipv6: bool = False) -> subprocess.CompletedProcess[str]:
        tool = "ip6tables-restore" if ipv6 else "iptables-restore"
        return self.run(tool, "--noflush", input=payload, check=check)

    def ipset_restore(self, payload: str) -> None:
        if payload:  # nothing to create or destroy
            self.run("ipset", "restore", input=payload)

    def ruleset(self) -> str:
        """``iptables-save`` with what differs between equal rulesets taken out: comment
        lines, counters, and the order of the chain declarations (creation order)."""
        text = self.run("iptables-save").stdout
        return normalise(text)

    def set_names(self) -> list[str]:
        return sorted(self.run("ipset", "list", "-n").stdout.split())

    def serve(self, *addresses: str) -> None:
        """Start a server on each ``ip:port``; return once all listen."""
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, __file__, "serve", *addresses],
            stdout=subprocess.PIPE, text=True,
        )
        self._servers.append(server)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise AssertionError("backend servers did not start")

    def connect(self, vip: str, port: int, sources: list[str | None]) -> list[str]:
        """One TCP connection to vip:port per source address (None: the kernel's
        choice); what answered each: "<port> <client address seen>", "refused",
        "timeout", or "not tried" after three timeouts in a row."""
        request = json.dumps({"vip": vip, "port": port, "sources": sources})
        done = self.run(sys.executable, __file__, "connect", input=request)
        return json.loads(done.stdout)


def normalise(save_output: str) -> str:
    tables = []
    for block in re.split(r"^\*", save_output, flags=re.M)[1:]:
        lines = [line for line in block.splitlines() if line and not line.startswith("#")]
        name, body = lines[0], lines[1:]
        chains = sorted(re.sub(r"\[\d+:\d+\]", "[0:0]", l) for l in body if l.startswith(":"))
        # Rules keep their order within a chain (it matters); chains are sorted by name.
        rules = sorted(
            (l for l in body if l.startswith("-A ")), key=lambda l: l.split()[1]
        )
        tables.append("\n".join([f"*{name}", *chains, *rules, "COMMIT"]))
    return "\n".join(tables) + "\n"


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        port = self.server.server_address[1]
        self.request.sendall(f"{port} {self.client_address[0]}".encode())


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def _serve(addresses: list[str]) -> None:
    servers = []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        servers.append(_Server((host, int(port)), _Handler))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _connect(vip: str, port: int, sources: list[str | None]) -> list[str]:
    answers: list[str] = []
    for source in sources:
        if answers[-3:] == ["timeout"] * 3:  # broken: fail in seconds, not minutes
            answers.append("not tried")
            continue
        try:
            with socket.create_connection(
                (vip, port), timeout=2, source_address=(source, 0) if source else None
            ) as conn:
                answers.append(conn.recv(64).decode() or "closed")
        except ConnectionRefusedError:
            answers.append("refused")
        except TimeoutError:
            answers.append("timeout")
    return answers


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve(sys.argv[2:])
    else:
        request = json.load(sys.stdin)
        print(json.dumps(_connect(request["vip"], request["port"], request["sources"])))
