"""`lbcore forward`: real backends on 127.0.0.1, the forwarder in a subprocess, SIGHUP, SIGTERM.

This needs lbcore.forwarder (the forwarder branch); bad input on `forward` is tested in
test_cli.py and needs no forwarder.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import fields

import pytest
from forwarder_support import free_port, until_or_exit

from lbcore.cli import _FORWARD_OPTIONS
from lbcore.forwarder import Options, run

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


class _Backend(socketserver.ThreadingTCPServer):
    """Answers each connection with ``name:`` and what it read, then closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: bytes):
        self.name = name
        super().__init__(("127.0.0.1", 0), _Reply)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Reply(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(1024)
        self.request.sendall(self.server.name + b":" + data)


@pytest.fixture
def backends():
    servers = [_Backend(b"a"), _Backend(b"b")]
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def _config(path, port: int, *endpoint_ports: int) -> None:
    endpoints = "".join(f"      - {{ip: 127.0.0.1, port: {p}}}\n" for p in endpoint_ports)
    path.write_text(f"services:\n  - name: web\n    vip: 127.0.0.1\n    port: {port}\n    endpoints:\n{endpoints}")


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"hi")
        reply = b""
        while chunk := client.recv(1024):
            reply += chunk
    return reply


def test_forward_serves_reloads_on_sighup_and_exits_on_sigterm(backends, tmp_path):
    a, b = backends
    port = free_port()
    config = tmp_path / "services.yaml"
    _config(config, port, a.port)
    metrics_port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    # Every tuning flag, so a keyword lbcore.forwarder.run does not take fails here.
    process = subprocess.Popen(
        [sys.executable, "-m", "lbcore", "forward", str(config), "--connect-timeout", "1",
         "--idle-timeout", "30", "--udp-idle-timeout", "20", "--tries", "2", "--cooldown", "5",
         "--max-connections", "100", "--drain-timeout", "2",
         "--metrics-listen", f"127.0.0.1:{metrics_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert until_or_exit(process, lambda: _ask(port)) == b"a:hi"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert b"lbcore_forwarder_" in response.read()
        assert {_ask(port) for _ in range(5)} == {b"a:hi"}

        _config(config, port, b.port)  # the endpoint moves: new connections follow on SIGHUP
        process.send_signal(signal.SIGHUP)
        until_or_exit(process, lambda: _ask(port) == b"b:hi")
        assert {_ask(port) for _ in range(5)} == {b"b:hi"}

        config.write_text("services:\n  - {name: web, vip: 127.0.0.1, port: 0}\n")  # bad: refused
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.poll() is None
        assert {_ask(port) for _ in range(5)} == {b"b:hi"}  # the old services keep serving

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_forward_retries_a_dead_endpoint(backends, tmp_path):
    a, _ = backends
    port = free_port()
    config = tmp_path / "services.yaml"
    _config(config, port, free_port(), a.port)  # the first endpoint refuses connections
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-m", "lbcore", "forward", str(config), "--tries", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        until_or_exit(process, lambda: _ask(port))
        assert [_ask(port) for _ in range(10)] == [b"a:hi"] * 10
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


def test_forward_reads_its_files_once_at_start(backends, tmp_path):
    # The start checks the files and serves what that read gave.  A FIFO written once
    # can be read once: a second read at start would block and nothing would listen.
    a, _ = backends
    port = free_port()
    written = tmp_path / "written.yaml"
    _config(written, port, a.port)
    fifo = tmp_path / "services.yaml"
    os.mkfifo(fifo)

    def write_once() -> None:
        with open(fifo, "w") as pipe:  # blocks until lbcore opens it for reading
            pipe.write(written.read_text())

    writer = threading.Thread(target=write_once, daemon=True)
    writer.start()
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-m", "lbcore", "forward", str(fifo)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert until_or_exit(process, lambda: _ask(port)) == b"a:hi"
        writer.join(timeout=5)
        assert not writer.is_alive()
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


def test_forward_help_states_the_forwarder_defaults():
    """The help of each flag states lbcore.forwarder's own default, which holds when the
    flag is left out.  lbcore.cli cannot read Options for it (that would import asyncio
    on every command), so this test keeps the two from drifting apart."""
    defaults = Options()
    option_names = {f.name for f in fields(Options)}
    for flag, keyword, _, _, help_text in _FORWARD_OPTIONS:
        stated = re.search(r"\(default ([^)]+)\)", help_text)
        if keyword in option_names:
            assert stated, f"{flag}: its help states no default"
            assert float(stated[1]) == getattr(defaults, keyword), flag
        else:  # a keyword of run() itself, off by default
            assert inspect.signature(run).parameters[keyword].default is None and stated is None, flag
