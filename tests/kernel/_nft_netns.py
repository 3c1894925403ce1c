"""What the nftables kernel tests share: the throw-away namespace of _iptables_netns
with ``nft`` on top, backends and a client that speak IPv4 and IPv6, and a listing
that compares as a ruleset.

``nft list table`` prints a set's elements in the order of the kernel's hash table,
whose seed is random per set, and objects in the order they were created: two tables
with the same content can print differently.  `NftNetns.ruleset` sorts both away and
keeps everything else (the order of the rules in a chain matters and stays).

Run as a script, this file is the backends (``serve [IP]:PORT...``: every TCP
connection is answered with "<port> <client address>"; ``serve-udp``: every UDP
datagram likewise) or the client (``connect`` / ``ask-udp``: JSON [[vip, port, source
or null], ...] on stdin, the answers as JSON on stdout).
"""

from __future__ import annotations

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
from _iptables_netns import Netns

__all__ = ["NftNetns", "kernel", "skip_reason", "normalise", "FOREIGN"]


def skip_reason() -> str | None:
    """Why the nft kernel tests cannot run here, or None.  CI is root and installs nft."""
    if os.geteuid() != 0:
        return "needs root for network namespaces (CI runs as root)"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install nftables iproute2)"
    return None


kernel = [
    pytest.mark.kernel,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

#: Another tool's table, which lbcore must never touch.
FOREIGN = """table ip foreign {
    set blocked { type ipv4_addr; elements = { 203.0.113.7 } }
    chain input { type filter hook input priority 0; policy accept; ip saddr @blocked drop; }
    chain output { type nat hook output priority -100; policy accept; ip daddr 203.0.113.8 return; }
}
"""


class NftNetns(Netns):
    """`Netns` plus ``nft``, dual-stack backends and a client for many targets."""

    def nft(self, payload: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``nft -f -`` with ``payload``; raises with nft's stderr if ``check`` and it fails."""
        return self.run("nft", "-f", "-", input=payload, check=check)

    def ruleset(self, *tables: str) -> str:
        """`normalise`'d ``nft list table`` of each table ("ip lbcore"); "" for a missing one."""
        out = []
        for table in tables:
            listed = self.run("nft", "list", "table", *table.split(), check=False)
            out.append(normalise(listed.stdout) if listed.returncode == 0 else "")
        return "\n".join(out)

    def serve(self, *addresses: str, udp: bool = False) -> None:
        """A TCP (``udp``: UDP) server on each ``ip:port`` or ``[ip6]:port``; returns once
        all listen."""
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, __file__, "serve-udp" if udp else "serve",
             *addresses],
            stdout=subprocess.PIPE, text=True,
        )
        self._servers.append(server)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise AssertionError("backend servers did not start")

    def connect_all(self, targets: list[tuple[str, int, str | None]]) -> list[str]:
        """One TCP connection per (vip, port, source address or None: the kernel's
        choice), in order, from one client process; what answered each: "<port>
        <client address seen>", "refused", "timeout", or "not tried" after three
        timeouts in a row."""
        done = self.run(sys.executable, __file__, "connect", input=json.dumps(targets))
        return json.loads(done.stdout)

    def ask_udp(self, targets: list[tuple[str, int, str | None]]) -> list[str]:
        """`connect_all` for UDP: one datagram per target from a fresh socket, and the
        answer, "refused" (ICMP port unreachable, or REJECT before it left) or
        "timeout"."""
        done = self.run(sys.executable, __file__, "ask-udp", input=json.dumps(targets))
        return json.loads(done.stdout)


def normalise(listing: str) -> str:
    """One table's listing with its sets, maps and chains sorted by kind and name and
    every set's elements sorted; the rules keep their order."""
    lines = listing.rstrip("\n").split("\n")
    head, body = lines[0], "\n".join(lines[1:-1])
    blocks = [block.strip("\n") for block in re.split(r"\n(?=\t(?:set|map|chain) )", body.strip("\n"))]
    return "\n".join([head, *sorted(map(_sorted_elements, blocks)), "}"]) + "\n"


def _sorted_elements(block: str) -> str:
    def sort(match: re.Match[str]) -> str:
        elements = sorted(e.strip() for e in match.group(1).split(",") if e.strip())
        return "elements = { " + ", ".join(elements) + " }"

    return re.sub(r"elements = \{(.*?)\}(?=\n)", sort, block, flags=re.S)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        port = self.server.server_address[1]
        self.request.sendall(f"{port} {self.client_address[0]}".encode())


class _UdpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        port = self.server.server_address[1]
        self.request[1].sendto(f"{port} {self.client_address[0]}".encode(), self.client_address)


def _serve(addresses: list[str], udp: bool = False) -> None:
    for address in addresses:
        host, port = address.rsplit(":", 1)
        base = socketserver.ThreadingUDPServer if udp else socketserver.ThreadingTCPServer
        server_class = type("Server", (base,), {
            "allow_reuse_address": True, "daemon_threads": True, "request_queue_size": 1024,
            "address_family": socket.AF_INET6 if host.startswith("[") else socket.AF_INET,
        })
        server = server_class((host.strip("[]"), int(port)), _UdpHandler if udp else _Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


def _connect(targets: list[list]) -> list[str]:
    answers: list[str] = []
    for vip, port, source in targets:
        if answers[-3:] == ["timeout"] * 3:  # broken: fail in seconds, not minutes
            answers.append("not tried")
            continue
        family = socket.AF_INET6 if ":" in vip else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as conn:
                conn.settimeout(2)
                if source:
                    conn.bind((source, 0))
                conn.connect((vip, port))
                answers.append(conn.recv(64).decode() or "closed")
        except ConnectionRefusedError:
            answers.append("refused")
        except TimeoutError:
            answers.append("timeout")
    return answers


def _ask_udp(targets: list[list]) -> list[str]:
    answers: list[str] = []
    for vip, port, source in targets:
        family = socket.AF_INET6 if ":" in vip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            if source:
                sock.bind((source, 0))
            sock.connect((vip, port))
            try:
                sock.send(b"?")
                answers.append(sock.recv(64).decode())
            except (ConnectionRefusedError, PermissionError):
                # ICMP port unreachable; for a packet refused on its way out of this
                # host (filter output), the send itself fails with EPERM.
                answers.append("refused")
            except TimeoutError:
                answers.append("timeout")
    return answers


if __name__ == "__main__":
    if sys.argv[1] in ("serve", "serve-udp"):
        _serve(sys.argv[2:], udp=sys.argv[1] == "serve-udp")
    elif sys.argv[1] == "ask-udp":
        print(json.dumps(_ask_udp(json.load(sys.stdin))))
    else:
        print(json.dumps(_connect(json.load(sys.stdin))))
