"""The health_check block: the model's rules, lbcore's YAML, the Kubernetes annotation,
and what `lbcore check` says, with every bad value named by its field."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lbcore import ConfigError, HealthCheck, Service
from lbcore.sources import SourceError, kubernetes, load_text

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


# -- the model -----------------------------------------------------------------------------


def test_defaults_are_haproxys():
    check = HealthCheck()
    assert (check.type, check.interval, check.timeout, check.rise, check.fall, check.jitter) == (
        "tcp", 2.0, 1.0, 2, 3, 0.0)
    assert check.initial == "healthy" and check.port is None
    http = HealthCheck("http")
    assert (http.path, http.host, http.statuses) == ("/", None, (200, 399))


@pytest.mark.parametrize("statuses, expected", [
    ("200-399", (200, 399)), ("204", (204, 204)), (204, (204, 204)), ([200, 299], (200, 299)),
    ((500, 599), (500, 599)), (" 200 - 204 ", (200, 204)),
])
def test_statuses_forms(statuses, expected):
    assert HealthCheck("http", statuses=statuses).statuses == expected


@pytest.mark.parametrize("kwargs, field, fragment", [
    (dict(type="udp"), "type", "is not one of tcp, http"),
    (dict(interval=0), "interval", "must be a number of seconds > 0"),
    (dict(interval="2s"), "interval", "must be a number of seconds"),
    (dict(interval=float("nan")), "interval", "must be a number of seconds"),
    (dict(interval=True), "interval", "must be a number of seconds"),
    (dict(timeout=-1), "timeout", "must be a number of seconds > 0"),
    (dict(interval=1, timeout=1.5), "timeout", "is longer than the interval (1s)"),
    (dict(rise=0), "rise", "out of range"),
    (dict(fall=2.5), "fall", "must be an integer"),
    (dict(jitter=0.6), "jitter", "0..0.5"),
    (dict(jitter=-0.1), "jitter", "0..0.5"),
    (dict(port=0), "port", "out of range"),
    (dict(port=70000), "port", "out of range"),
    (dict(path="/x"), "path", "applies to type http, not tcp"),
    (dict(host="a"), "host", "applies to type http, not tcp"),
    (dict(statuses="200"), "statuses", "applies to type http, not tcp"),
    (dict(type="http", send="x"), "send", "applies to type tcp, not http"),
    (dict(type="http", expect="x"), "expect", "applies to type tcp, not http"),
    (dict(type="http", path="healthz"), "path", "must start with '/'"),
    (dict(type="http", path="/a b"), "path", "visible ASCII"),
    (dict(type="http", path="/a\r\nX-Injected: 1"), "path", "visible ASCII"),
    (dict(type="http", host="a b"), "host", "host name or address"),
    (dict(type="http", host="a\r\nX: y"), "host", "host name or address"),
    (dict(type="http", statuses="600"), "statuses", "100..599"),
    (dict(type="http", statuses="300-200"), "statuses", "a range"),
    (dict(type="http", statuses="ok"), "statuses", "a range"),
    (dict(type="http", statuses=[200, 300, 400]), "statuses", "a range"),
    (dict(send=""), "send", "1..4096 bytes"),
    (dict(expect="x" * 4097), "expect", "1..4096 bytes"),
    (dict(send=5), "send", "a string or bytes"),
    (dict(expect="\ud800"), "expect", "lone surrogate"),
    (dict(initial="up"), "initial", "is not one of healthy, unhealthy"),
])
def test_every_bad_value_names_its_field(kwargs, field, fragment):
    with pytest.raises(ConfigError) as caught:
        HealthCheck(**kwargs)
    assert caught.value.field == field
    assert fragment in str(caught.value)


def test_service_carries_a_health_check_and_nothing_else():
    check = HealthCheck("http", path="/healthz")
    service = Service("web", "10.96.0.10", 80, health_check=check)
    assert service.health_check is check
    assert Service("web", "10.96.0.10", 80).health_check is None
    with pytest.raises(ConfigError, match="health_check: {'type': 'http'} must be a HealthCheck"):
        Service("web", "10.96.0.10", 80, health_check={"type": "http"})
    # Services that differ only in their check are different (an update must see it).
    assert service != Service("web", "10.96.0.10", 80, health_check=HealthCheck())


# -- lbcore's YAML --------------------------------------------------------------------------

YAML = """
services:
  - name: web
    vip: 10.96.0.10
    port: 80
    health_check:
      type: http
      path: /healthz
      host: web.example
      statuses: 200-299
      interval: 5
      timeout: 0.5
      rise: 1
      fall: 2
      jitter: 0.1
      port: 8081
      initial: unhealthy
    endpoints:
      - {ip: 10.1.0.5, port: 8080}
  - name: redis
    vip: 10.96.0.11
    port: 6379
    health_check: {send: "PING\\r\\n", expect: "+PONG"}
"""


def test_yaml_block_becomes_a_health_check():
    web, redis = load_text(YAML, "services.yaml")
    assert web.health_check == HealthCheck(
        "http", path="/healthz", host="web.example", statuses=(200, 299), interval=5, timeout=0.5,
        rise=1, fall=2, jitter=0.1, port=8081, initial="unhealthy")
    assert redis.health_check == HealthCheck(send=b"PING\r\n", expect=b"+PONG")


def yaml_problems(block: str) -> list[str]:
    text = f"services:\n  - name: web\n    vip: 10.96.0.10\n    port: 80\n    health_check: {block}\n"
    with pytest.raises(SourceError) as caught:
        load_text(text, "s.yaml")
    return [str(p) for p in caught.value.problems]


def test_yaml_reports_every_bad_field_of_the_block_at_once():
    assert yaml_problems("{type: http, intervall: 3, timeout: -1, statuses: 700, send: x}") == [
        "s.yaml: services[0] (web): health_check.intervall: 3 is not a field of a health check; did you mean "
        "'interval'? valid: type, interval, timeout, rise, fall, jitter, port, path, host, statuses, send, expect, initial",
        "s.yaml: services[0] (web): health_check.timeout: -1 must be a number of seconds > 0 and <= 86400",
        "s.yaml: services[0] (web): health_check.send: 'x' applies to type tcp, not http",
        "s.yaml: services[0] (web): health_check.statuses: 700 must be an HTTP status or a range of them: "
        "'200-399', 204, [200, 399] (100..599)",
    ]


@pytest.mark.parametrize("block, line", [
    ("yes", "health_check: True must be a mapping of health check fields"),
    ("[tcp]", "health_check: ['tcp'] must be a mapping of health check fields"),
    ("{type: icmp}", "health_check.type: 'icmp' is not one of tcp, http"),
    ("{rise: 0}", "health_check.rise: 0 is out of range; valid: 1..2147483647"),
])
def test_yaml_bad_blocks(block, line):
    assert yaml_problems(block) == [f"s.yaml: services[0] (web): {line}"]


def test_a_bad_block_does_not_hide_the_services_other_problems():
    text = "services:\n  - {name: web, vip: 10.96.0.300, port: 80, health_check: {fall: 0}}\n"
    with pytest.raises(SourceError) as caught:
        load_text(text, "s.yaml")
    lines = [str(p) for p in caught.value.problems]
    assert any("health_check.fall: 0" in line for line in lines)
    assert any("vip: '10.96.0.300'" in line for line in lines)


# -- the Kubernetes annotation -------------------------------------------------------------------


def k8s_service(annotations: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
            "spec": {"clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}}


def test_annotation_gives_every_port_the_same_check():
    block = {"type": "http", "path": "/healthz", "statuses": "200-204", "port": 8081, "interval": 1}
    http, https = kubernetes.load([k8s_service({"lbcore.io/health-check": json.dumps(block)})])
    expected = HealthCheck("http", path="/healthz", statuses=(200, 204), port=8081, interval=1)
    assert http.health_check == https.health_check == expected
    [plain, _] = kubernetes.load([k8s_service({})])
    assert plain.health_check is None


def k8s_problems(value: object) -> list[str]:
    with pytest.raises(SourceError) as caught:
        kubernetes.load([k8s_service({"lbcore.io/health-check": value})], "dump.yaml")
    return [str(p) for p in caught.value.problems]


WHERE = "dump.yaml: Service shop/web: metadata.annotations[lbcore.io/health-check]"


@pytest.mark.parametrize("value, tail", [
    ('{"type": "http", "pth": "/x"}',
     ".pth: '/x' is not a field of a health check; did you mean 'path'? valid: type, interval, timeout, rise, "
     "fall, jitter, port, path, host, statuses, send, expect, initial"),
    ('{"timeout": 0}', ".timeout: 0 must be a number of seconds > 0 and <= 86400"),
    ('{"type": "http", "statuses": "200-700"}',
     ".statuses: '200-700' must be an HTTP status or a range of them: '200-399', 204, [200, 399] (100..599)"),
    ("type: http", ": 'type: http' is not JSON (Expecting value: line 1 column 1 (char 0)); "
     "give the health_check block as a JSON object"),
    ('["tcp"]', ": '[\"tcp\"]' must be a JSON object of health check fields, e.g. {\"type\": \"http\", \"path\": \"/healthz\"}"),
    ({"type": "tcp"}, ": {'type': 'tcp'} must be a string holding a JSON object (annotations are strings)"),
])
def test_annotation_problems_name_the_annotation_and_the_field(value, tail):
    assert k8s_problems(value) == [WHERE + tail]  # once, though the Service has two ports


# -- lbcore check -----------------------------------------------------------------------------


def lbcore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lbcore", *args], capture_output=True, text=True, cwd=ROOT)


def test_check_prints_each_services_health_check(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(YAML)
    result = lbcore("check", str(path))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("health check of ")] == [
        "health check of web: http GET /healthz Host web.example, statuses 200-299, port 8081, every 5s ±10%, "
        "timeout 0.5s, rise 1, fall 2, new endpoints start unhealthy",
        "health check of redis: tcp send b'PING\\r\\n' expect b'+PONG', every 2s, timeout 1s, rise 2, fall 3",
    ]


def test_check_exits_2_naming_the_field(tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text(YAML.replace("rise: 1", "rise: -1"))
    result = lbcore("check", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"lbcore: error: {path}: services[0] (web): health_check.rise: -1 is out of range; valid: 1..2147483647\n"
    )


def test_health_check_is_a_service_key_not_an_endpoint_key():
    with pytest.raises(SourceError, match=r"endpoints\[0\]\.health_check: .* is not a field of an endpoint"):
        load_text("services:\n  - {name: web, vip: 10.96.0.10, port: 80, endpoints: "
                  "[{ip: 10.1.0.5, port: 80, health_check: {}}]}\n", "s.yaml")
