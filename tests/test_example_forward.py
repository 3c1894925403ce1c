"""examples/services.yaml as a forwarder config: `lbcore forward` serves it as it says."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
CONFIG = os.path.join(ROOT, "examples", "services.yaml")
TCP_BACKENDS = (9001, 9002, 9003, 9004, 9005)  # 9006 is quiesced: nothing may reach it
UDP_BACKENDS = (9053, 9054)


class _Answer(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        port = self.server.server_address[1]
        if isinstance(self.request, tuple):  # UDP: (data, socket)
            data, sock = self.request
            sock.sendto(b"%d %s" % (port, data), self.client_address)
        else:
            self.request.sendall(b"%d" % port)


class _TCP(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


@pytest.fixture
def backends():
    servers = []
    try:
        for port in TCP_BACKENDS:
            servers.append(_TCP(("127.0.0.1", port), _Answer))
        for port in UDP_BACKENDS:
            servers.append(socketserver.ThreadingUDPServer(("127.0.0.1", port), _Answer))
    except OSError as error:
        for server in servers:
            server.server_close()
        pytest.skip(f"the example's fixed backend ports must be free: {error}")
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    for server in servers:
        server.shutdown()
        server.server_close()


def _ask(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return int(s.recv(64))


def _wait_until_serving(process: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            _ask(port)
            return
        except (OSError, ValueError):
            if process.poll() is not None:
                raise AssertionError(f"lbcore forward exited: {process.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError("lbcore forward did not start serving in time")
            time.sleep(0.05)


def test_lbcore_forward_serves_the_example_config(backends):
    for port in (8080, 8443):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"the example listens on 127.0.0.1:{port}, which is taken here")
    process = subprocess.Popen(
        [sys.executable, "-m", "lbcore", "forward", CONFIG], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    try:
        _wait_until_serving(process, 8080)
        # web, wrr 3:1: any 8 consecutive picks hold 6 and 2; the terminating :9003 only
        # serves when no endpoint is ready, so never here.
        assert Counter(_ask(8080) for _ in range(8)) == {9001: 6, 9002: 2}
        # api, Maglev on client ip:port (mh-port): both live endpoints, never the quiesced one.
        assert set(_ask(8443) for _ in range(40)) == {9004, 9005}
        # dns, UDP: one client socket is one flow, pinned to one endpoint.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(5)
            answers = set()
            for _ in range(4):
                udp.sendto(b"query", ("127.0.0.1", 5353))
                reply, _ = udp.recvfrom(64)
                port, _, body = reply.partition(b" ")
                assert body == b"query"
                answers.add(int(port))
            assert len(answers) == 1 and answers <= set(UDP_BACKENDS)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
