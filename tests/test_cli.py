"""The lbcore command: check, help, exit statuses, bad input on every subcommand.

`render` and `forward` on good input are in test_cli_render.py and test_cli_forward.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from lbcore import Endpoint, Service
from lbcore.cli import EXIT_BAD_INPUT, check_table, main

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
EXAMPLES = os.path.join(ROOT, "examples")
SERVICES_YAML = os.path.join(EXAMPLES, "services.yaml")
DUMP_YAML = os.path.join(EXAMPLES, "k8s-dump.yaml")


def run(*args: str) -> subprocess.CompletedProcess:
    """``python -m lbcore ARGS`` in a subprocess, from this tree."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "lbcore", *args], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        services:
          - name: web
            vip: 10.96.0.300
            port: 80
            endpoints:
              - {ip: 10.1.0.5, port: 0}
          - {name: dns, vip: 10.96.0.10, port: 53, protocol: dns}
    """))
    return str(path)


BAD_FILE_PROBLEMS = [
    "services[0] (web): endpoints[0].port: 0 is out of range; valid: 1..65535",
    "services[0] (web): vip: '10.96.0.300' is not an IPv4 or IPv6 address",
    "services[1] (dns): protocol: 'dns' is not one of tcp, udp, sctp",
]


# -- check -----------------------------------------------------------------------------


def test_check_prints_the_table(capsys):
    assert main(["check", SERVICES_YAML]) == 0
    out, err = capsys.readouterr()
    assert out == textwrap.dedent("""\
        SERVICE  ADDRESS         PROTO  SCHED        AFFINITY  ENDPOINT        STATE                 WEIGHT  TAKES NEW
        web      127.0.0.1:8080  tcp    wrr          -         127.0.0.1:9001  ready                 3       yes
                                                               127.0.0.1:9002  ready                 1       yes
                                                               127.0.0.1:9003  serving, terminating  1       no
        api      127.0.0.1:8443  tcp    mh +mh-port  600s      127.0.0.1:9004  ready                 1       yes
                                                               127.0.0.1:9005  ready                 1       yes
                                                               127.0.0.1:9006  ready                 0       no (weight 0)
        dns      127.0.0.1:5353  udp    rr           -         127.0.0.1:9053  ready                 1       yes
                                                               127.0.0.1:9054  ready                 1       yes
        3 services, 8 endpoints, 6 taking new connections
        backends: forward runs every scheduler; ipvs runs rr, wrr, lc, wlc, dh, sh, mh; nft runs rr, wrr, dh, sh, mh; iptables runs rr, wrr; the others are refused unless rendered with --fallback
    """)
    assert err == ""


def test_check_on_the_kubernetes_dump_notes_skipped_services_on_stderr(capsys):
    assert main(["check", DUMP_YAML]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^shop/frontend:http +10\.96\.45\.12:80 +tcp +wrr +- +10\.244\.1\.7:8080 +ready +1 +yes$", out, re.M)
    assert re.search(r"^ +10\.244\.2\.9:8080 +serving, terminating +1 +no$", out, re.M)
    assert re.search(r"^ +10\.244\.3\.4:8080 +not ready +1 +no$", out, re.M)
    assert re.search(r"^shop/cart +10\.96\.77\.201:8080 +tcp +rr +600s ", out, re.M)
    assert "\n11 services, 23 endpoints, 21 taking new connections\nbackends: " in out
    assert "shop/catalog" not in out and "shop/payments" not in out
    notes = err.splitlines()
    assert len(notes) == 3 and all(line.startswith(f"lbcore: note: {DUMP_YAML}: Service shop/") for line in notes)
    assert "shop/catalog: skipped: headless" in notes[0] and "shop/payments: skipped: type ExternalName" in notes[2]


def test_check_table_shows_fallback_and_empty_services():
    services = [
        Service("drain", "10.96.0.1", 80, endpoints=[
            Endpoint("10.1.0.1", 80, ready=False, serving=True, terminating=True),
            Endpoint("10.1.0.2", 80, ready=False, serving=False, terminating=True),
        ]),
        Service("empty", "10.96.0.2", 80),
    ]
    assert check_table(services) == textwrap.dedent("""\
        SERVICE  ADDRESS       PROTO  SCHED  AFFINITY  ENDPOINT     STATE                 WEIGHT  TAKES NEW
        drain    10.96.0.1:80  tcp    rr     -         10.1.0.1:80  serving, terminating  1       yes (fallback)
                                                       10.1.0.2:80  terminating           1       no
        empty    10.96.0.2:80  tcp    rr     -         (none)       -                     -       connections refused
        2 services, 2 endpoints, 1 taking new connections
    """)


def test_check_table_ready_and_terminating():
    [line] = [row for row in check_table([Service("s", "10.96.0.1", 80, endpoints=[
        Endpoint("10.1.0.3", 80, ready=True, terminating=True)])]).splitlines() if "10.1.0.3" in row]
    assert line.split()[-4:] == ["ready,", "terminating", "1", "yes"]


def heavy_modules_after(*commands: list[str]) -> list:
    """[exit statuses, asyncio/renderer/forwarder modules loaded] after the commands, in a fresh Python."""
    code = (
        "import json, sys\nfrom lbcore.cli import main\n"
        f"codes = [main(command) for command in {list(commands)!r}]\n"
        "heavy = [m for m in sys.modules if m == 'asyncio' or m.startswith(('lbcore.render.', 'lbcore.forwarder'))]\n"
        "print(json.dumps([codes, heavy]), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stderr.splitlines()[-1])


def test_check_loads_no_renderer_and_no_asyncio():
    assert heavy_modules_after(["check", SERVICES_YAML]) == [[0], []]


def test_importing_the_cli_loads_no_yaml():
    code = (
        "import sys, lbcore.cli; print('yaml' in sys.modules, 'asyncio' in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('lbcore.sources', 'lbcore.render', 'lbcore.forwarder'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False", "[]"]


# -- bad input: exit 2, one line per problem naming file and field, empty stdout -------


@pytest.mark.parametrize(
    "command",
    [
        ["check"],
        ["render", "iptables"],
        ["render", "iptables", "--fallback"],
        ["render", "ipset"],
        ["render", "ipvs"],
        ["render", "ipvs-node", "--interface", "lb0"],
        ["forward", "--connect-timeout", "1"],
    ],
    ids=lambda command: " ".join(command),
)
def test_bad_input_exits_2_with_one_line_per_problem_and_nothing_on_stdout(command, bad_file):
    result = run(*command, bad_file)
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"lbcore: error: {bad_file}: {problem}" for problem in BAD_FILE_PROBLEMS]


@pytest.mark.parametrize("target", ["iptables", "ipvs"])
def test_render_diff_reports_problems_of_old_and_new_files(target, bad_file, tmp_path):
    missing = str(tmp_path / "old.yaml")
    result = run("render", target, bad_file, "--diff", missing)
    assert result.returncode == EXIT_BAD_INPUT and result.stdout == ""
    assert result.stderr.splitlines() == [f"lbcore: error: {bad_file}: {p}" for p in BAD_FILE_PROBLEMS] + [
        f"lbcore: error: {missing}: file: {missing!r} cannot be read: No such file or directory",
    ]


def test_bad_input_imports_neither_renderer_nor_forwarder(bad_file):
    commands = [["render", "iptables", bad_file], ["render", "ipvs", bad_file], ["forward", bad_file]]
    assert heavy_modules_after(*commands) == [[2, 2, 2], []]


def test_kubernetes_problems_name_file_object_and_field(tmp_path):
    path = tmp_path / "dump.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: web, namespace: shop, annotations: {lbcore.io/scheduler: fastest}}
          spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80, protocol: TCP}]}
        - apiVersion: apps/v1
          kind: Deployment
          metadata: {name: web, namespace: shop}
    """))
    result = run("check", str(path))
    assert result.returncode == EXIT_BAD_INPUT and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"lbcore: error: {path}: Service shop/web: metadata.annotations[lbcore.io/scheduler]: 'fastest' is not one of rr, wrr, lc, wlc, dh, sh, mh, p2c, ring",
        f"lbcore: error: {path}: Deployment shop/web: kind: 'Deployment' is not a kind lbcore reads; valid: Service, EndpointSlice, List",
    ]


def test_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"services": [\n  {"name": "web"\n]}')
    result = run("check", str(path))
    assert result.returncode == EXIT_BAD_INPUT and result.stdout == ""
    assert result.stderr == f"lbcore: error: {path}: line 3: ']}}' is not valid JSON: Expecting ',' delimiter (column 1)\n"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: COMMAND"),
        (["check"], "the following arguments are required: FILE"),
        (["balance", "x.yaml"], "invalid choice: 'balance'"),
        (["render", "nftables", "x.yaml"], "invalid choice: 'nftables'"),
        (["forward", "--tries", "0", "x.yaml"], "argument --tries: must be a number above 0, not '0'"),
        (["forward", "--connect-timeout", "soon", "x.yaml"], "argument --connect-timeout: must be a number above 0, not 'soon'"),
    ],
)
def test_bad_command_line_exits_2(args, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == "" and message in err


# -- help, python -m lbcore and the console script -------------------------------------


@pytest.mark.parametrize(
    "command, expected",
    [
        ([], ["check", "render", "forward"]),
        (["check"], ["FILE", "state"]),
        (["render"], ["iptables", "ipset", "ipvs", "ipvs-node"]),
        (["render", "iptables"], ["--diff OLD", "--fallback", "iptables-restore --noflush"]),
        (["render", "ipset"], ["ipset restore"]),
        (["render", "ipvs"], ["--diff OLD", "ipvsadm"]),
        (["render", "ipvs-node"], ["--interface NAME", "dummy interface"]),
        (["forward"], ["--connect-timeout SECONDS", "--idle-timeout SECONDS", "--tries N", "--drain-timeout SECONDS", "SIGHUP"]),
    ],
)
def test_help_on_each_subcommand(command, expected, capsys):
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lbcore {' '.join(command)}".rstrip())
    for text in expected:
        assert text in " ".join(out.split())


def test_python_dash_m_lbcore_help():
    result = run("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: lbcore ")
    assert "check" in result.stdout and "render" in result.stdout and "forward" in result.stdout


def test_python_dash_m_lbcore_check():
    result = run("check", SERVICES_YAML)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-2] == "3 services, 8 endpoints, 6 taking new connections"


def _console_script_target() -> str:
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        return tomllib.load(file)["project"]["scripts"]["lbcore"]


def test_console_script_entry_point_runs_the_command():
    module, function = _console_script_target().split(":")
    # What pip's generated `lbcore` script does: import the entry point, exit with its result.
    wrapper = f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", wrapper, "check", SERVICES_YAML], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "3 services, 8 endpoints" in result.stdout
    result = subprocess.run([sys.executable, "-c", wrapper, "check", "/nonexistent.yaml"], capture_output=True, text=True, env=env)
    assert result.returncode == EXIT_BAD_INPUT and result.stdout == ""


def test_installed_console_script_when_present():
    script = os.path.join(os.path.dirname(sys.executable), "lbcore")
    if not os.path.exists(script):
        pytest.skip("lbcore is not installed next to this Python (the README's pip install -e puts it there)")
    result = subprocess.run([script, "check", SERVICES_YAML], capture_output=True, text=True)
    assert result.returncode == 0 and "3 services, 8 endpoints" in result.stdout


def test_closed_stdout_is_not_a_traceback():
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-m", "lbcore", "check", DUMP_YAML],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.close()  # the reader leaves before lbcore writes, as `| head -0` would
    stderr = process.stderr.read().decode()
    assert process.wait() == 1
    assert "Traceback" not in stderr
    # Quiet: the notes on the dump's skipped Services, and no word about the pipe.
    assert len(stderr.splitlines()) == 3
    assert all(line.startswith("lbcore: note: ") for line in stderr.splitlines())


def test_check_reports_slow_start_and_panic_threshold_and_names_a_bad_one(tmp_path):
    path = tmp_path / "svc.yaml"
    path.write_text("services: [{name: web, vip: 10.96.0.10, port: 80, scheduler: wrr, "
                    "slow_start: 30, panic_threshold: 50, endpoints: [{ip: 10.1.0.5, port: 8080}]}]\n")
    result = run("check", str(path))
    assert result.returncode == 0
    assert "wrr +slow_start=30s +panic_threshold=50%" in result.stdout
    path.write_text("services: [{name: web, vip: 10.96.0.10, port: 80, scheduler: rr, slow_start: 30}]\n")
    result = run("check", str(path))
    assert result.returncode == EXIT_BAD_INPUT and result.stdout == ""
    assert result.stderr == (f"lbcore: error: {path}: services[0] (web): slow_start: 30 does not apply to "
                             "scheduler 'rr'; slow start ramps wrr, lc, wlc, p2c\n")
    path.write_text("services: [{name: web, vip: 10.96.0.10, port: 80, panic_threshold: -1}]\n")
    result = run("check", str(path))
    assert result.returncode == EXIT_BAD_INPUT
    assert "panic_threshold: -1 is out of range" in result.stderr
