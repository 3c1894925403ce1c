"""`lbcore render`: the CLI prints exactly what the renderers return, for real inputs.

These need lbcore.render.iptables, .ipset and .ipvs (the renderer branches); bad input
on every render subcommand is tested in test_cli.py and needs no renderer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from lbcore.sources import load_files

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
SERVICES_YAML = os.path.join(ROOT, "examples", "services.yaml")
DUMP_YAML = os.path.join(ROOT, "examples", "k8s-dump.yaml")
DUMP_JSON = os.path.join(ROOT, "examples", "k8s-dump.json")


def lbcore(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "lbcore", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


WEB = """\
services:
  - name: web
    vip: 10.96.0.10
    port: 80
    endpoints:
      - {ip: 10.1.0.5, port: 8080}
      - {ip: 10.1.0.6, port: 8080}
  - name: api
    vip: 10.96.0.11
    port: 443
    scheduler: wrr
    affinity_timeout: 600
    endpoints:
      - {ip: 10.1.0.7, port: 8443, weight: 3}
      - {ip: 10.1.0.8, port: 8443}
"""
WEB_PLUS_ONE = WEB.replace(
    "      - {ip: 10.1.0.6, port: 8080}\n",
    "      - {ip: 10.1.0.6, port: 8080}\n      - {ip: 10.1.0.9, port: 8080}\n",
)


# -- iptables --------------------------------------------------------------------------


def test_render_iptables_prints_the_renderer_output(tmp_path):
    from lbcore.render import iptables

    path = write(tmp_path, "web.yaml", WEB)
    result = lbcore("render", "iptables", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == iptables.render(load_files([path]))
    assert "COMMIT" in result.stdout
    assert "--to-destination 10.1.0.5:8080" in result.stdout
    assert "--probability 0.5000000000" in result.stdout  # two equal endpoints: 1/2, then the rest


def test_render_iptables_from_the_kubernetes_dump(tmp_path):
    from lbcore.render import iptables

    for dump in (DUMP_YAML, DUMP_JSON):
        result = lbcore("render", "iptables", dump)
        assert result.returncode == 0, result.stderr
        assert result.stdout == iptables.render(load_files([dump]))
    for service in load_files([DUMP_YAML]):
        if service.family == 4:
            assert re.search(rf"-d {re.escape(service.vip)}\b.*--dport {service.port}\b", result.stdout), service.name
            for endpoint in service.usable_endpoints:
                assert f"--to-destination {endpoint.address}" in result.stdout


def test_render_iptables_refuses_what_it_cannot_express_unless_fallback(tmp_path):
    from lbcore.render import iptables

    path = write(tmp_path, "sh.yaml", WEB.replace("scheduler: wrr", "scheduler: sh"))
    refused = lbcore("render", "iptables", path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "'sh'" in refused.stderr and refused.stderr.startswith("lbcore: error: ")
    allowed = lbcore("render", "iptables", "--fallback", path)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == iptables.render(load_files([path]), fallback=True)


def test_render_iptables_diff(tmp_path):
    from lbcore.render import iptables

    old, new = write(tmp_path, "old.yaml", WEB), write(tmp_path, "new.yaml", WEB_PLUS_ONE)
    result = lbcore("render", "iptables", new, "--diff", old)
    assert result.returncode == 0, result.stderr
    assert result.stdout == iptables.render_diff(load_files([old]), load_files([new]))
    assert "--to-destination 10.1.0.9:8080" in result.stdout


# -- ipset -----------------------------------------------------------------------------


def test_render_ipset_prints_the_sets_for_client_ip_affinity(tmp_path):
    from lbcore.render import ipset

    path = write(tmp_path, "web.yaml", WEB)
    result = lbcore("render", "ipset", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ipset.render(load_files([path]))
    # The sets hold clients; the timeout rides on the iptables rule that adds them.
    assert "hash:ip" in result.stdout and "-exist" in result.stdout
    rules = lbcore("render", "iptables", path)
    assert "--exist --timeout 600" in rules.stdout


def test_render_ipset_diff_and_cleanup(tmp_path):
    from lbcore.render import ipset

    old = write(tmp_path, "old.yaml", WEB)
    new = write(tmp_path, "new.yaml", WEB.replace("10.1.0.8", "10.1.0.10"))
    created = lbcore("render", "ipset", new, "--diff", old)
    destroyed = lbcore("render", "ipset", new, "--diff", old, "--cleanup")
    assert created.returncode == destroyed.returncode == 0, created.stderr + destroyed.stderr
    before, after = load_files([old]), load_files([new])
    assert created.stdout == ipset.render_diff(before, after) and created.stdout.startswith("create ")
    assert destroyed.stdout == ipset.render_cleanup(before, after)
    assert destroyed.stdout.startswith("destroy ")
    lonely = lbcore("render", "ipset", new, "--cleanup")
    assert lonely.returncode == 2 and lonely.stdout == ""
    assert "--cleanup: True needs --diff OLD" in lonely.stderr


def test_render_iptables_install_and_family(tmp_path):
    from lbcore.render import iptables

    path = write(tmp_path, "web.yaml", WEB)
    installed = lbcore("render", "iptables", "--install", path)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == iptables.render(load_files([path]), install=True)
    v6 = lbcore("render", "iptables", "--family", "6", DUMP_YAML)
    assert v6.returncode == 0, v6.stderr
    assert v6.stdout == iptables.render(load_files([DUMP_YAML]), family=6)
    assert "--to-destination [" in v6.stdout  # IPv6 endpoints only
    both = lbcore("render", "iptables", "--install", path, "--diff", path)
    assert both.returncode == 2 and both.stdout == ""


# -- ipvs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected_lines",
    [
        (SERVICES_YAML, [
            "-A -t 127.0.0.1:8080 -s wrr",
            "-a -t 127.0.0.1:8080 -r 127.0.0.1:9001 -m -w 3",
            "-A -t 127.0.0.1:8443 -s mh -p 600 -b mh-port",
            "-A -u 127.0.0.1:5353 -s rr",
        ]),
        (DUMP_YAML, [  # both families
            "-A -u 10.96.0.10:53 -s rr",
            "-A -t 10.96.45.12:80 -s wrr",
            "-A -t 10.96.77.201:8080 -s rr -p 600",
            "-A -t [fd00:10:96::7a1]:80 -s rr",
            "-a -t [fd00:10:96::7a1]:80 -r [fd00:10:244:1::28]:9200 -m -w 1",
        ]),
    ],
    ids=["services.yaml", "k8s-dump.yaml"],
)
def test_render_ipvs_prints_the_renderer_output(path, expected_lines):
    from lbcore.render import ipvs

    result = lbcore("render", "ipvs", path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ipvs.render(load_files([path]))
    lines = result.stdout.splitlines()
    for line in expected_lines:
        assert line in lines


def test_render_ipvs_diff(tmp_path):
    from lbcore.render import ipvs

    old, new = write(tmp_path, "old.yaml", WEB_PLUS_ONE), write(tmp_path, "new.yaml", WEB)
    result = lbcore("render", "ipvs", new, "--diff", old)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ipvs.render_diff(load_files([old]), load_files([new]))
    assert "-r 10.1.0.9:8080" in result.stdout  # the removed endpoint: drained or deleted
    assert "10.96.0.11:443" not in result.stdout  # an untouched service is left alone


@pytest.mark.parametrize("interface", [None, "lb0"])
def test_render_ipvs_node_setup(interface):
    from lbcore.render import ipvs

    args = ["render", "ipvs-node", DUMP_YAML] + (["--interface", interface] if interface else [])
    result = lbcore(*args)
    assert result.returncode == 0, result.stderr
    services = load_files([DUMP_YAML])
    expected = ipvs.render_node_setup(services, interface=interface) if interface else ipvs.render_node_setup(services)
    assert result.stdout == expected
    for service in services:
        assert service.vip in result.stdout
    if interface:
        assert "lb0" in result.stdout
