"""The agent's IPVS sink against a real Linux IPVS in a QEMU guest.

tools/ipvs-vm/run-ipvs-vm.sh boots the guest (the same one tests/kernel/test_ipvs_vm.py
uses).  The guest gets a third serial port, joined to a Unix socket here (a
``qemu-system-x86_64`` wrapper first in PATH appends ``-serial unix:...``), and its
TEST_SH turns that port into a command channel: each line brings a command and its
standard input, base64-coded; the guest runs it under dash and sends back the exit
status, stdout and stderr.  `GuestRunner` is the sink's `Runner` over that channel.

So the agent and its sink run here, unchanged, and every command line the sink builds
(``ipvsadm -S -n``, ``ipvsadm -R`` with its input, ``sh -eu`` with the node setup
script, ``ipvsadm -C``) runs in the guest, in order, against the guest's IPVS, and what
the sink reads back comes from that kernel.  What is proved:

- a full sync on a table holding a stale service removes it and reaches exactly
  ``render(services)``, read back with ``ipvsadm -S -n``, with every VIP (and only
  those) on the dummy interface, and real TCP connections through the VIPs land on the
  real servers;
- partial syncs (a real server removed, a weight changed, a service added with a new
  VIP, one removed) reach ``render(new)`` each, and traffic follows;
- a partial apply the kernel refuses a line of fails the sync; the full sync that
  follows reads the table back and repairs it;
- ``cleanup()`` leaves an empty table and no dummy interface.

What is not proved here: the sink's timing against IPVS at scale (the guest is software
emulated), and UDP/SCTP traffic (their virtual services are checked by read-back only).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from lbcore import Endpoint, Service
from lbcore.agent import Agent
from lbcore.agent.sinks.commands import Result
from lbcore.agent.sinks.ipvs import IpvsSink
from lbcore.render.ipvs import DEFAULT_INTERFACE, render
from lbcore.sources.live import Snapshot

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "ipvs-vm" / "run-ipvs-vm.sh"
BOOT_TIMEOUT = 240
STALE = "-A -t 10.96.9.9:80 -s rr\n-a -t 10.96.9.9:80 -r 127.0.0.1:8089 -m -w 1\n"

# The guest's end of the channel: raw mode (no line editing, no 4 KiB line limit).
CHANNEL = r"""#!/usr/local/sbin/dash
port=/dev/ttyS2
stty -F $port raw -echo
exec 4<$port 5>$port
echo READY >&5
while read -r command input <&4; do
  [ "$command" = QUIT ] && break
  printf %s "$command" | base64 -d > /tmp/command
  printf %s "$input" | base64 -d > /tmp/input
  dash /tmp/command < /tmp/input > /tmp/out 2> /tmp/err
  echo "RESULT $? $(base64 -w0 < /tmp/out) $(base64 -w0 < /tmp/err)" >&5
done
"""


class GuestRunner:
    """A sink `Runner` that runs each command line in the guest, one at a time."""

    def __init__(self, path: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                assert time.monotonic() < deadline, "QEMU did not open the channel"
                time.sleep(0.1)
        self.file = self.sock.makefile("rwb")
        self.lock = threading.Lock()
        self.calls: list[tuple[list[str], str | None]] = []

    def wait_ready(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        while self.file.readline().strip() != b"READY":
            pass

    def __call__(self, argv, input, timeout) -> Result:
        with self.lock:
            self.calls.append((list(argv), input))
            line = b"%s %s\n" % (base64.b64encode(shlex.join(argv).encode()),
                                 base64.b64encode((input or "").encode()))
            self.sock.settimeout(timeout)
            self.file.write(line)
            self.file.flush()
            while True:
                answer = self.file.readline()
                if answer.startswith(b"RESULT "):
                    break
            _, code, out, err = (answer.decode().rstrip("\n").split(" ") + ["", ""])[:4]
            return Result(int(code), base64.b64decode(out).decode(), base64.b64decode(err).decode())

    def sh(self, script: str) -> str:
        result = self(["sh", "-c", script], None, 60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def quit(self) -> None:
        self.file.write(b"QUIT\n")
        self.file.flush()
        self.sock.close()


def _missing() -> str | None:
    tools = ("qemu-system-x86_64", "ipvsadm", "busybox", "ip", "dash")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        return f"the QEMU IPVS guest needs {', '.join(missing)}, and apt-get as root cannot install them here"
    return None


@pytest.fixture(scope="module")
def guest():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="lbcore-agent-ipvs-") as tmp:
        work = Path(tmp)
        channel = work / "channel.sock"
        wrapper = work / "bin" / "qemu-system-x86_64"
        wrapper.parent.mkdir()
        real_qemu = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
        wrapper.write_text(f'#!/bin/sh\nexec {real_qemu} "$@" -serial unix:{channel},server=on,wait=off\n')
        wrapper.chmod(0o755)
        (work / "rules.ipvs").write_text(STALE)
        (work / "channel.sh").write_text(CHANNEL)
        (work / "channel.sh").chmod(0o755)
        env = dict(os.environ, PATH=f"{wrapper.parent}:{os.environ['PATH']}", IPVS_TRAFFIC="0",
                   SCHEDS="rr,wrr,sh,mh", QEMU_TIMEOUT=str(BOOT_TIMEOUT - 30), TEST_SH=str(work / "channel.sh"))
        vm = subprocess.Popen(["bash", str(TOOL), str(work / "rules.ipvs"), str(work / "out")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while not channel.exists():  # a first run downloads the kernel first
                assert vm.poll() is None, vm.stdout.read()
                assert time.monotonic() < deadline, "the guest did not start"
                time.sleep(0.2)
            runner = GuestRunner(str(channel))
            runner.wait_ready(BOOT_TIMEOUT)
            yield runner
            runner.quit()
            vm.communicate(timeout=60)
        finally:
            if vm.poll() is None:
                vm.kill()
                vm.communicate()


def web(*ports: int, vip: str = "10.96.0.10", weights: dict[int, int] | None = None, **fields) -> Service:
    weights = weights or {}
    return Service(fields.pop("name", "web"), vip, 80, **fields,
                   endpoints=[Endpoint("127.0.0.1", p, weight=weights.get(p, 1)) for p in ports])


DNS = Service("dns", "10.96.0.53", 53, protocol="udp", scheduler="sh", affinity_timeout=300,
              endpoints=[Endpoint("127.0.0.1", 5353)])
HASHED = Service("hashed", "10.96.0.20", 443, scheduler="mh", sched_flags=["mh-port", "mh-fallback"],
                 endpoints=[Endpoint("127.0.0.1", 8443), Endpoint("127.0.0.1", 8444, weight=0)])


def readback(guest: GuestRunner) -> list[str]:
    return sorted(guest.sh("ipvsadm -S -n").splitlines())


def vips(guest: GuestRunner) -> list[str]:
    return sorted(re.findall(r"inet6? (\S+) ", guest.sh(f"ip -o address show dev {DEFAULT_INTERFACE} scope global")))


def gets(guest: GuestRunner, vip: str, count: int) -> list[str]:
    script = f'i=0; while [ $i -lt {count} ]; do i=$((i+1)); timeout 3 wget -q -O - http://{vip}/ || echo FAIL; done'
    return guest.sh(script).split()


def test_the_ipvs_sink_drives_a_real_ipvs(guest):
    agent = Agent([_Named()], IpvsSink(runner=guest, timeout=60), min_sync_period=0, sync_period=3600)
    loop = asyncio.new_event_loop()

    def sync(*services: Service) -> bool:
        agent.receive(Snapshot("test://s", services, (), loop.time()))
        return loop.run_until_complete(agent.sync())

    guest.sh("for p in 8081 8082 8083; do mkdir -p /www/$p; echo backend-$p > /www/$p/index.html; "
             "httpd -p 127.0.0.1:$p -h /www/$p; done")
    try:
        assert readback(guest) == sorted(STALE.splitlines())
        first = [web(8081, 8082), DNS, HASHED]
        assert sync(*first)
        assert readback(guest) == sorted(render(first).splitlines())  # the stale service is gone
        assert vips(guest) == ["10.96.0.10/32", "10.96.0.20/32", "10.96.0.53/32"]
        assert sorted(set(gets(guest, "10.96.0.10", 6))) == ["backend-8081", "backend-8082"]

        second = [web(8082, 8083, weights={8083: 3}, scheduler="wrr"), DNS,
                  web(8081, vip="10.96.0.30", name="new")]
        before = len(guest.calls)
        assert sync(*second)
        assert [argv for argv, _ in guest.calls[before:]] == [["sh", "-eu"], ["ipvsadm", "-R"]]
        assert readback(guest) == sorted(render(second).splitlines())
        assert vips(guest) == ["10.96.0.10/32", "10.96.0.30/32", "10.96.0.53/32"]
        answers = gets(guest, "10.96.0.10", 8)
        assert sorted(answers) == ["backend-8082"] * 2 + ["backend-8083"] * 6  # wrr 1:3, exactly
        assert set(gets(guest, "10.96.0.30", 2)) == {"backend-8081"}
        assert agent.syncs == {"full": 1, "partial": 1}

        # A line the kernel refuses, slipped into the next partial apply.
        real = agent.sink.runner

        def refused_once(argv, input, timeout):
            if list(argv) == ["ipvsadm", "-R"] and not refused_once.done:
                refused_once.done = True
                input = "-a -t 10.96.0.99:80 -r 127.0.0.1:8081 -m -w 1\n" + input
            return real(argv, input, timeout)

        refused_once.done = False
        agent.sink.runner = refused_once
        third = [web(8081, 8083), DNS]
        assert not sync(*third)
        assert agent.applied is None
        assert loop.run_until_complete(agent.sync())  # the retry: a full sync
        assert agent.syncs == {"full": 2, "partial": 1}
        assert readback(guest) == sorted(render(third).splitlines())
        assert vips(guest) == ["10.96.0.10/32", "10.96.0.53/32"]
        assert sorted(set(gets(guest, "10.96.0.10", 6))) == ["backend-8081", "backend-8083"]

        # p2c, ring and balance_factor have no IPVS counterpart: left out, the rest served;
        # with --fallback (the sink's fallback) run as wlc and mh -b mh-fallback.
        cache = Service("cache", "10.96.0.40", 80, scheduler="ring", balance_factor=1.25,
                        endpoints=[Endpoint("127.0.0.1", 8081), Endpoint("127.0.0.1", 8083)])
        fourth = [web(8081, 8083, scheduler="p2c"), DNS, cache]
        assert sync(*fourth)
        assert readback(guest) == sorted(render([DNS]).splitlines())
        assert len(agent.tracker.problems()) == 2
        agent.sink.fallback = True
        fifth = [web(8081, 8083, weights={8083: 2}, scheduler="p2c"), DNS, cache]
        assert sync(*fifth)
        assert readback(guest) == sorted(render(fifth, fallback=True).splitlines())
        assert "-A -t 10.96.0.40:80 -s mh -b mh-fallback" in readback(guest)
        assert set(gets(guest, "10.96.0.10", 6)) == {"backend-8081", "backend-8083"}
        assert len(set(gets(guest, "10.96.0.40", 4))) == 1  # one client address: one endpoint

        loop.run_until_complete(agent.sink.cleanup())
        assert readback(guest) == []
        assert guest.sh(f"ip link show dev {DEFAULT_INTERFACE} >/dev/null 2>&1 && echo there || echo gone") == "gone\n"
    finally:
        loop.close()


class _Named:
    source = "test://s"
    connected = True
