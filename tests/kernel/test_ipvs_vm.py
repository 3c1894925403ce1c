"""The IPVS renderings, applied to a real Linux IPVS in a QEMU guest.

Two guests boot in parallel (about 20 s of software emulation each), both from
tools/ipvs-vm/run-ipvs-vm.sh with ``render(old)`` restored by the real
``ipvsadm-restore``:

- *traffic*: the node setup binds the VIPs (run twice: it must be idempotent), then real
  TCP connections go through every TCP virtual service with a loopback real server, and
  the per-real-server connection counts must follow each scheduler's rule;
- *diff*: ``ipvsadm -R`` of ``render_diff(old, new)`` must reach the table of a full
  ``render(new)``, and back again; the node setup of ``new`` must leave exactly the new
  VIPs; and ipvsadm's own listing order is pinned where it stops being numeric.

The scenario is tests/golden/ipvs-{old,new}.json, the same models whose renderings
tests/test_render_ipvs.py pins in the golden files: those files are what a kernel reads
back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from lbcore import Endpoint, Service
from lbcore.render.ipvs import render, render_diff, render_node_setup

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "ipvs-vm" / "run-ipvs-vm.sh"
GOLDEN = ROOT / "tests" / "golden"
# Connections per TCP virtual service: a multiple of 3 and 4, so rr over three real
# servers and wrr 1:3 divide evenly, and enough that sh-port/mh-port spreads show.
TRIES = 24
BOOT_TIMEOUT = 240  # seconds per guest; a first run also downloads the Debian kernel


def services(name: str) -> list[Service]:
    data = json.loads((GOLDEN / f"ipvs-{name}.json").read_text())
    return [Service(**dict(s, endpoints=[Endpoint(**e) for e in s["endpoints"]])) for s in data]


OLD, NEW = services("old"), services("new")

# Addresses more than 2**31 apart, where ipvsadm's listing order is not numeric (its
# comparator subtracts unsigned words into an int), plus IPv6 forms Python's ipaddress
# writes differently from inet_ntop.
WIDE = [
    Service(
        "wide/low",
        "10.0.0.1",
        80,
        endpoints=[Endpoint("10.244.0.1", 80), Endpoint("192.168.1.1", 80)],
    ),
    Service("wide/high", "192.168.0.1", 80),
    Service("wide/mapped", "::ffff:10.1.2.3", 53, protocol="udp"),
    Service("wide/compat", "2001:db8:0:0:1:0:0:1", 53, protocol="udp"),
]
WIDE_AS_IPVSADM_PRINTS_IT = """\
-A -t 192.168.0.1:80 -s rr
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m -w 1
-a -t 10.0.0.1:80 -r 10.244.0.1:80 -m -w 1
-A -u [::ffff:10.1.2.3]:53 -s rr
-A -u [2001:db8::1:0:0:1]:53 -s rr
"""


# What IPVS has no scheduler for, rendered with fallback=True (p2c as wlc, ring as mh
# with mh-fallback, balance_factor dropped): the guest must take it and read it back.
FALLBACK = [
    Service("fallback/p2c", "10.96.1.1", 80, scheduler="p2c", affinity_timeout=300,
            endpoints=[Endpoint("10.244.1.1", 80), Endpoint("10.244.1.2", 80, weight=3)]),
    Service("fallback/ring", "10.96.1.2", 11211, scheduler="ring", balance_factor=1.25,
            endpoints=[Endpoint("10.244.1.3", 11211), Endpoint("10.244.1.4", 11211)]),
]


def _missing_prerequisites() -> str | None:
    # The runner apt-get installs what is missing, which needs root and apt-get.
    tools = ("qemu-system-x86_64", "ipvsadm", "busybox", "ip", "dash")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        return (
            f"the QEMU IPVS guest needs {', '.join(missing)}, "
            "and apt-get as root cannot install them here"
        )
    return None


def _guest_script(files: dict[str, str], commands: str) -> str:
    """A TEST_SH for the guest: write ``files`` under /tmp, then run ``commands``.

    Run by dash (iproute2's ``ip`` first in PATH; busybox sh would run its own ip).
    """
    lines = ["#!/usr/local/sbin/dash"]
    for name, text in files.items():
        lines += [f"cat > /tmp/{name} <<'LBCORE_PAYLOAD'", text + "LBCORE_PAYLOAD"]
    return "\n".join(lines) + "\n" + commands


DIFF_COMMANDS = """\
section() { echo "=== lbcore:$1"; }
section diff-stderr; ipvsadm -R < /tmp/diff 2>&1
section after-diff; ipvsadm -S -n
ipvsadm -C
section full-new-stderr; ipvsadm -R < /tmp/new 2>&1
section full-new; ipvsadm -S -n
section back-stderr; ipvsadm -R < /tmp/back 2>&1
section after-back; ipvsadm -S -n
section node-old; dash -eu /tmp/node-old; echo "rc=$?"
ip -o address show dev lbcore-ipvs0 scope global
section node-new; dash -eu /tmp/node-new; echo "rc=$?"; dash -eu < /tmp/node-new; echo "rc=$?"
ip -o address show dev lbcore-ipvs0 scope global
section node-none; dash -eu /tmp/node-none; echo "rc=$?"
ip -o address show dev lbcore-ipvs0 scope global
section node-no-awk; PATH=/usr/local/sbin dash -eu /tmp/node-new 2>/dev/null; echo "rc=$?"
ip -o address show dev lbcore-ipvs0 scope global
ipvsadm -C
section wide-stderr; ipvsadm -R < /tmp/wide 2>&1
section wide; ipvsadm -S -n
ipvsadm -C
section fallback-stderr; ipvsadm -R < /tmp/fallback 2>&1
section fallback; ipvsadm -S -n
"""


def _boot(
    workdir: Path,
    name: str,
    *,
    traffic: bool,
    node_setup: str | None = None,
    test_sh: str | None = None,
) -> subprocess.Popen:
    out = workdir / name
    out.mkdir()
    (out / "rules.ipvs").write_text(render(OLD))
    env = dict(
        os.environ,
        IPVS_TRAFFIC="1" if traffic else "0",
        TRIES=str(TRIES),
        SCHEDS="rr,wrr,lc,wlc,dh,sh,mh",
        QEMU_TIMEOUT=str(BOOT_TIMEOUT - 30),
    )
    for variable, text in (("NODE_SETUP", node_setup), ("TEST_SH", test_sh)):
        if text is not None:
            path = workdir / f"{name}.{variable.lower()}"
            path.write_text(text)
            path.chmod(0o755)
            env[variable] = str(path)
    return subprocess.Popen(
        ["bash", str(TOOL), str(out / "rules.ipvs"), str(out / "run")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def guests() -> dict[str, str]:
    """Boot both guests at once; return each one's result channel text."""
    reason = _missing_prerequisites()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="lbcore-ipvs-vm-") as tmp:
        workdir = Path(tmp)
        diff_script = _guest_script(
            {
                "diff": render_diff(OLD, NEW),
                "new": render(NEW),
                "back": render_diff(NEW, OLD),
                "node-old": render_node_setup(OLD),
                "node-new": render_node_setup(NEW),
                "node-none": render_node_setup([]),
                "wide": render(WIDE),
                "fallback": render(FALLBACK, fallback=True),
            },
            DIFF_COMMANDS,
        )
        runs = {
            "traffic": _boot(workdir, "traffic", traffic=True, node_setup=render_node_setup(OLD)),
            "diff": _boot(workdir, "diff", traffic=False, test_sh=diff_script),
        }
        results = {}
        for name, run in runs.items():
            output, _ = run.communicate(timeout=BOOT_TIMEOUT)
            assert run.returncode == 0, f"{name} guest failed:\n{output[-4000:]}"
            results[name] = (workdir / name / "run" / "result.txt").read_text()
        return results


def _section(text: str, name: str) -> str:
    """The lines after ``=== name`` up to the next section or the tool's status line."""
    match = re.search(
        rf"^=== {re.escape(name)}\n(.*?)(?=^=== |^restore-rc=|^test\.sh-rc=|^IPVSVM-DONE)",
        text,
        re.S | re.M,
    )
    assert match, f"no section {name!r} in the guest output:\n{text[-3000:]}"
    return match.group(1)


# ---------------------------------------------------------------- the full rendering


def test_every_scheduler_is_in_the_guest_kernel(guests):
    ok = re.search(r"^SCHEDULERS-OK:(.*)$", guests["traffic"], re.M).group(1).split()
    assert sorted(ok) == sorted(["rr", "wrr", "lc", "wlc", "dh", "sh", "mh"])


@pytest.mark.parametrize("guest", ["traffic", "diff"])
def test_ipvsadm_restore_takes_every_line_and_reads_back_exactly(guests, guest):
    restore = _section(guests[guest], "ipvsadm-restore")
    assert restore == "", f"ipvsadm-restore complained:\n{restore}"
    assert re.search(r"^restore-rc=0$", guests[guest], re.M)
    assert _section(guests[guest], "ipvsadm -S -n") == render(OLD)


def _connections(text: str) -> dict[str, dict[str, int]]:
    """``ipvsadm -Ln --stats``: {virtual address: {real server address: connections}}."""
    counts: dict[str, dict[str, int]] = {}
    current = None
    for line in _section(text, "ipvsadm -Ln --stats").splitlines():
        fields = line.split()
        if fields[:1] == ["->"] and current is not None and fields[1] != "RemoteAddress:Port":
            counts[current][fields[1]] = int(fields[2])
        elif fields and fields[0] in ("TCP", "UDP", "SCTP"):
            current = f"{fields[0].lower()} {fields[1]}"
            counts[current] = {}
    return counts


def _weights(service: Service) -> dict[str, int]:
    """Real server → rendered weight, read from the rendering itself."""
    lines = render([service]).splitlines()[1:]
    return {line.split()[4]: int(line.split()[-1]) for line in lines}


def _loopback_tcp_services() -> list[Service]:
    return [
        s
        for s in OLD
        if s.protocol == "tcp" and any(e.ip in ("127.0.0.1", "::1") for e in s.endpoints)
    ]


def test_every_connection_landed(guests):
    gets = re.findall(r"^GET (\S+) -> (.*)$", guests["traffic"], re.M)
    assert len(gets) == TRIES * len(_loopback_tcp_services())
    failed = [answer for _, answer in gets if not answer.startswith("backend-")]
    assert failed == []


@pytest.mark.parametrize("service", _loopback_tcp_services(), ids=lambda s: s.name)
def test_tcp_traffic_follows_the_scheduler(guests, service):
    weights = _weights(service)
    address = render([service]).split()[2]
    counts = _connections(guests["traffic"])[f"tcp {address}"]
    assert set(counts) == set(weights)
    assert sum(counts.values()) == TRIES
    live = {server: w for server, w in weights.items() if w > 0}
    assert all(counts[server] == 0 for server in weights if server not in live), counts
    one_key = service.scheduler == "dh" or (
        service.scheduler in ("sh", "mh")
        and not any(f.endswith("-port") for f in service.sched_flags)
    )
    if service.affinity_timeout is not None or one_key:
        # Persistence, or a hash of what one client keeps (its address, the VIP): one
        # real server takes every connection.
        assert sorted(counts.values())[-1] == TRIES, counts
    elif service.scheduler in ("sh", "mh"):
        # -port flags hash the client's source port too: connections spread.
        assert sum(1 for n in counts.values() if n > 0) >= 2, counts
    elif service.scheduler in ("rr", "lc"):
        assert max(counts[s] for s in live) - min(counts[s] for s in live) <= 1, counts
    else:  # wrr, wlc: shares follow the weights
        total = sum(live.values())
        for server, weight in live.items():
            assert abs(counts[server] - TRIES * weight / total) <= 1, counts


def test_udp_queries_reached_the_udp_virtual_services(guests):
    counts = _connections(guests["traffic"])
    assert counts["udp 10.96.0.53:53"] == {"127.0.0.1:5353": 1}
    # mh with mh-fallback passes over the draining (weight 0) real server
    assert counts["udp [fd00:96::2]:53"] == {"[fd00:244::5]:53": 0, "[fd00:244::6]:53": 1}


# ---------------------------------------------------------------- the node setup


def _addresses(text: str) -> list[str]:
    return sorted(re.findall(r"^\d+: lbcore-ipvs0\s+inet6? (\S+) ", text, re.M))


def _vips(services_: list[Service]) -> list[str]:
    return sorted({f"{s.vip}/{32 if s.family == 4 else 128}" for s in services_})


def test_node_setup_is_idempotent_and_binds_every_vip(guests):
    section = _section(guests["traffic"], "node-setup")
    assert re.findall(r"^node-setup-rc=(\d+)$", guests["traffic"], re.M) == ["0", "0"]
    assert _addresses(section) == _vips(OLD)


def test_node_setup_of_the_new_state_removes_stale_vips(guests):
    text = guests["diff"]
    assert _addresses(_section(text, "lbcore:node-old")) == _vips(OLD)
    new = _section(text, "lbcore:node-new")
    assert new.count("rc=0") == 2
    assert _addresses(new) == _vips(NEW)
    assert set(_vips(OLD)) - set(_vips(NEW)), "the scenario should drop a VIP"
    none = _section(text, "lbcore:node-none")
    assert none.startswith("rc=0") and _addresses(none) == []


def test_node_setup_fails_loudly_when_it_cannot_bind(guests):
    # Without awk (PATH holds only ip and dash) nothing reaches `ip -batch`: the script
    # must exit non-zero, not succeed on an empty batch.
    section = _section(guests["diff"], "lbcore:node-no-awk")
    assert re.match(r"rc=[1-9]", section) and _addresses(section) == []


# ---------------------------------------------------------------- the diff


@pytest.mark.parametrize("step", ["diff-stderr", "full-new-stderr", "back-stderr", "wide-stderr"])
def test_ipvsadm_takes_every_line(guests, step):
    # ipvsadm -R exits with the status of its last line only: stderr is the signal.
    assert _section(guests["diff"], f"lbcore:{step}") == ""


def test_diff_reaches_the_full_rendering_of_the_new_state(guests):
    text = guests["diff"]
    assert _section(text, "lbcore:after-diff") == _section(text, "lbcore:full-new") == render(NEW)


def test_reverse_diff_returns_to_the_old_state(guests):
    assert _section(guests["diff"], "lbcore:after-back") == render(OLD)


# ---------------------------------------------------------------- ipvsadm's listing order

_PROTOCOL_NUMBER = {"-t": 6, "-u": 17, "--sctp-service": 132}


def _address_key(text: str) -> tuple[int, bytes, int]:
    host, _, port = text.rpartition(":")
    if host.startswith("["):
        return 6, socket.inet_pton(socket.AF_INET6, host[1:-1]), int(port)
    return 4, socket.inet_pton(socket.AF_INET, host), int(port)


def _numeric_order(save: str) -> str:
    """``ipvsadm -S`` lines put in numeric order: services, then each one's real servers."""

    def key(line: str) -> tuple:
        fields = line.split()
        family, packed, port = _address_key(fields[2])
        service = (family, _PROTOCOL_NUMBER[fields[1]], packed, port)
        return (service, ()) if fields[0] == "-A" else (service, _address_key(fields[4]))

    return "".join(line + "\n" for line in sorted(save.splitlines(), key=key))


def test_ipvsadm_orders_addresses_2_31_apart_by_wrapped_difference(guests):
    # Why the read-back of WIDE needs normalising: ipvsadm lists 192.168.0.1 before
    # 10.0.0.1 (0x0a000001 - 0xc0a80001 wraps to a positive int).  lbcore renders the
    # numeric order, and the two agree once the listing is put in numeric order.
    readback = _section(guests["diff"], "lbcore:wide")
    assert readback == WIDE_AS_IPVSADM_PRINTS_IT
    assert readback != render(WIDE)
    assert _numeric_order(readback) == render(WIDE)


def test_the_fallback_for_p2c_and_ring_loads_into_ipvs(guests):
    assert _section(guests["diff"], "lbcore:fallback-stderr") == ""
    readback = _section(guests["diff"], "lbcore:fallback")
    assert readback == render(FALLBACK, fallback=True)
    assert "-s wlc -p 300" in readback and "-s mh -b mh-fallback" in readback
