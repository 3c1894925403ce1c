"""lbcore's own format: the Service and Endpoint fields, strictly."""

from __future__ import annotations

import os

import pytest

from lbcore import Endpoint, Service
from lbcore.sources import SourceError, load_files, load_text, native

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")

FULL = """\
services:
  - name: web
    vip: 10.96.0.10
    port: 80
    protocol: tcp
    scheduler: mh
    affinity_timeout: 600
    listen: 127.0.0.1:8080
    sched_flags: [mh-port]
    max_connections: 1000
    endpoints:
      - ip: 10.1.0.5
        port: 8080
        weight: 3
        ready: true
        serving: true
        terminating: false
      - {ip: 10.1.0.6, port: 8080, ready: false, serving: true, terminating: true}
  - name: dns
    vip: fd00:10:96::a
    port: 53
    protocol: UDP
"""


def problems(text, source="svc.yaml"):
    with pytest.raises(SourceError) as caught:
        load_text(text, source)
    return [str(problem) for problem in caught.value.problems]


def test_every_field():
    web, dns = load_text(FULL)
    assert web == Service(
        "web", "10.96.0.10", 80, "tcp", scheduler="mh", affinity_timeout=600, listen=("127.0.0.1", 8080),
        sched_flags=("mh-port",), max_connections=1000,
        endpoints=[Endpoint("10.1.0.5", 8080, weight=3),
                   Endpoint("10.1.0.6", 8080, ready=False, serving=True, terminating=True)],
    )
    assert dns == Service("dns", "fd00:10:96::a", 53, "udp")


def test_keys_are_the_model_keywords():
    assert native.SERVICE_KEYS == ("name", "vip", "port", "protocol", "endpoints", "scheduler",
                                   "affinity_timeout", "listen", "sched_flags", "max_connections",
                                   "health_check", "balance_factor", "slow_start", "panic_threshold")
    assert native.ENDPOINT_KEYS == ("ip", "port", "weight", "ready", "serving", "terminating")


def test_defaults():
    [web] = load_text("services: [{name: web, vip: 10.96.0.10, port: 80}]")
    assert web == Service("web", "10.96.0.10", 80)
    assert (web.protocol, web.scheduler, web.endpoints, web.affinity_timeout) == ("tcp", "rr", (), None)


def test_json_form():
    [web] = load_text('{"services": [{"name": "web", "vip": "10.96.0.10", "port": 80, '
                      '"endpoints": [{"ip": "10.1.0.5", "port": 8080}]}]}')
    assert web.endpoints == (Endpoint("10.1.0.5", 8080),)


def test_empty_services_list_is_allowed():
    assert load_text("services: []") == []


def test_example_services_yaml_loads():
    web, api, dns = load_files([os.path.join(EXAMPLES, "services.yaml")])
    assert (web.name, web.scheduler, [e.weight for e in web.endpoints]) == ("web", "wrr", [3, 1, 1])
    assert [e.address for e in web.usable_endpoints] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    assert (api.scheduler, api.sched_flags, api.affinity_timeout) == ("mh", ("mh-port",), 600)
    assert (dns.protocol, dns.port) == ("udp", 5353)
    # Usable as a forwarder config on this machine: everything listens on loopback.
    assert {s.listen_address[0] for s in (web, api, dns)} == {"127.0.0.1"}


def test_per_format_load_takes_a_parsed_document():
    [web] = native.load({"services": [{"name": "web", "vip": "10.96.0.10", "port": 80}]}, "mine")
    assert web.name == "web"
    with pytest.raises(SourceError) as caught:
        native.load(["not", "a", "mapping"], "mine")
    assert str(caught.value) == "mine: document: ['not', 'a', 'mapping'] must be a mapping with a 'services' list"


# -- bad input: one line per problem naming file, service and field --------------------


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("{name: web, vip: 10.96.0.10, port: 80, schedular: wlc}",
         "svc.yaml: services[0] (web): schedular: 'wlc' is not a field of a service; did you mean 'scheduler'? "
         "valid: name, vip, port, protocol, endpoints, scheduler, affinity_timeout, listen, sched_flags, max_connections, health_check, balance_factor, slow_start, panic_threshold"),
        ("{name: web, vip: 10.96.0.10, port: 80, colour: red}",
         "svc.yaml: services[0] (web): colour: 'red' is not a field of a service; "
         "valid: name, vip, port, protocol, endpoints, scheduler, affinity_timeout, listen, sched_flags, max_connections, health_check, balance_factor, slow_start, panic_threshold"),
        ("{name: web, port: 80}", "svc.yaml: services[0] (web): vip: (missing) is required in a service"),
        ("{vip: 10.96.0.10, port: 80}", "svc.yaml: services[0]: name: (missing) is required in a service"),
        ("{name: web, vip: 10.96.0.300, port: 80}", "svc.yaml: services[0] (web): vip: '10.96.0.300' is not an IPv4 or IPv6 address"),
        ("{name: web, vip: 10.96.0.10, port: 70000}", "svc.yaml: services[0] (web): port: 70000 is out of range; valid: 1..65535"),
        ("{name: web, vip: 10.96.0.10, port: '80'}", "svc.yaml: services[0] (web): port: '80' must be an integer in 1..65535"),
        ("{name: web, vip: 10.96.0.10, port: 80, protocol: icmp}", "svc.yaml: services[0] (web): protocol: 'icmp' is not one of tcp, udp, sctp"),
        ("{name: web, vip: 10.96.0.10, port: 80, scheduler: fastest}",
         "svc.yaml: services[0] (web): scheduler: 'fastest' is not one of rr, wrr, lc, wlc, dh, sh, mh, p2c, ring"),
        ("{name: web, vip: 10.96.0.10, port: 80, affinity_timeout: 0}",
         "svc.yaml: services[0] (web): affinity_timeout: 0 is out of range; valid: 1..86400"),
        ("{name: web, vip: 10.96.0.10, port: 80, listen: 'localhost:80'}",
         "svc.yaml: services[0] (web): listen: 'localhost' is not an IPv4 or IPv6 address"),
        ("{name: web, vip: 10.96.0.10, port: 80, sched_flags: [sh-port]}",
         "svc.yaml: services[0] (web): sched_flags: 'sh-port' does not apply to scheduler 'rr'"),
        ("{name: web, vip: 10.96.0.10, port: 80, max_connections: 0}",
         "svc.yaml: services[0] (web): max_connections: 0 is out of range; valid: 1..2147483647"),
        ("{name: 'web server', vip: 10.96.0.10, port: 80}",
         "svc.yaml: services[0] (web server): name: 'web server' is not a valid service name; "
         "use 1..253 of A-Z a-z 0-9 . _ : / - starting with a letter or digit"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: {ip: 10.1.0.5}}",
         "svc.yaml: services[0] (web): endpoints: {'ip': '10.1.0.5'} must be a list of endpoints"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [10.1.0.5]}",
         "svc.yaml: services[0] (web): endpoints[0]: '10.1.0.5' must be a mapping with ip and port"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 10.1.0.5}]}",
         "svc.yaml: services[0] (web): endpoints[0].port: (missing) is required in an endpoint"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 10.1.0.5, port: 0}]}",
         "svc.yaml: services[0] (web): endpoints[0].port: 0 is out of range; valid: 1..65535"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 10.1.0.5, port: 80, weight: -1}]}",
         "svc.yaml: services[0] (web): endpoints[0].weight: -1 is out of range; valid: 0..2147483647"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 10.1.0.5, port: 80, ready: maybe}]}",
         "svc.yaml: services[0] (web): endpoints[0].ready: 'maybe' must be true or false"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 10.1.0.5, port: 80, wieght: 2}]}",
         "svc.yaml: services[0] (web): endpoints[0].wieght: 2 is not a field of an endpoint; did you mean 'weight'? "
         "valid: ip, port, weight, ready, serving, terminating"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 'fd00::5', port: 80}]}",
         "svc.yaml: services[0] (web): endpoints[0].ip: 'fd00::5' is IPv6 but vip 10.96.0.10 is IPv4; one family per Service"),
        ("{name: web, vip: 10.96.0.10, port: 80, endpoints: [{ip: 10.1.0.5, port: 80}, {ip: 10.1.0.5, port: 80}]}",
         "svc.yaml: services[0] (web): endpoints[1]: '10.1.0.5:80' is listed twice; each ip:port once"),
        ("web", "svc.yaml: services[0]: service: 'web' must be a mapping with name, vip and port"),
    ],
)
def test_bad_service(entry, expected):
    assert problems(f"services:\n  - {entry}\n") == [expected]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("services: {web: 1}", "svc.yaml: services: {'web': 1} must be a list of services"),
        ("services:", "svc.yaml: services: None must be a list of services"),
        ("services: []\nendpoints: []", "svc.yaml: endpoints: [] is not a top-level key of lbcore's format; valid: services"),
    ],
)
def test_bad_document(text, expected):
    assert problems(text) == [expected]


def test_every_problem_of_a_file_in_one_run():
    text = """\
services:
  - name: web
    vip: 10.96.0.300
    port: 70000
    schedular: wlc
    endpoints:
      - {ip: 10.1.0.5, port: 0}
      - {ip: 10.1.0.6, port: 8080, weight: -1}
  - {name: dns, vip: 10.96.0.10, port: 53, protocol: dns}
"""
    assert problems(text) == [
        "svc.yaml: services[0] (web): schedular: 'wlc' is not a field of a service; did you mean 'scheduler'? "
        "valid: name, vip, port, protocol, endpoints, scheduler, affinity_timeout, listen, sched_flags, max_connections, health_check, balance_factor, slow_start, panic_threshold",
        "svc.yaml: services[0] (web): endpoints[0].port: 0 is out of range; valid: 1..65535",
        "svc.yaml: services[0] (web): endpoints[1].weight: -1 is out of range; valid: 0..2147483647",
        "svc.yaml: services[0] (web): vip: '10.96.0.300' is not an IPv4 or IPv6 address",
        "svc.yaml: services[0] (web): port: 70000 is out of range; valid: 1..65535",
        "svc.yaml: services[1] (dns): protocol: 'dns' is not one of tcp, udp, sctp",
    ]


def test_duplicate_name():
    text = "services:\n- {name: web, vip: 10.96.0.10, port: 80}\n- {name: web, vip: 10.96.0.11, port: 80}\n"
    assert problems(text) == ["svc.yaml: services[1] (web): name: 'web' is already the name of a service (svc.yaml: services[0] (web))"]


def test_duplicate_vip_port_protocol():
    text = "services:\n- {name: a, vip: 10.96.0.10, port: 80}\n- {name: b, vip: 10.96.0.10, port: 80}\n"
    assert problems(text) == ["svc.yaml: services[1] (b): port: '10.96.0.10:80/tcp' is already taken by service 'a' (svc.yaml: services[0] (a))"]


def test_same_vip_port_on_another_protocol_is_fine():
    text = "services:\n- {name: a, vip: 10.96.0.10, port: 53}\n- {name: b, vip: 10.96.0.10, port: 53, protocol: udp}\n"
    assert [s.protocol for s in load_text(text)] == ["tcp", "udp"]


def test_duplicate_address_in_ipv6_spelt_two_ways():
    text = "services:\n- {name: a, vip: 'fd00::a', port: 80}\n- {name: b, vip: 'FD00:0::A', port: 80}\n"
    assert problems(text) == ["svc.yaml: services[1] (b): port: '[fd00::a]:80/tcp' is already taken by service 'a' (svc.yaml: services[0] (a))"]


def test_a_bad_service_does_not_half_apply_the_good_ones():
    text = "services:\n- {name: good, vip: 10.96.0.10, port: 80}\n- {name: bad, vip: 10.96.0.11, port: 0}\n"
    with pytest.raises(SourceError) as caught:
        load_text(text)
    assert len(caught.value.problems) == 1
    assert str(caught.value.problems[0]) == "<input>: services[1] (bad): port: 0 is out of range; valid: 1..65535"


# -- slow start and panic threshold (issue 15) -----------------------------------------


def test_slow_start_and_panic_threshold_are_read():
    [web] = load_text("services: [{name: web, vip: 10.96.0.10, port: 80, scheduler: wlc, "
                      "slow_start: 30, panic_threshold: 50}]", "svc.yaml")
    assert (web.slow_start, web.panic_threshold) == (30, 50)
    [plain] = load_text("services: [{name: web, vip: 10.96.0.10, port: 80}]", "svc.yaml")
    assert (plain.slow_start, plain.panic_threshold) == (None, None)


@pytest.mark.parametrize(
    "fields, expected",
    [
        ("scheduler: wrr, slow_start: -1",
         "slow_start: -1 is out of range; valid: 0..86400 seconds (0: off)"),
        ("scheduler: wrr, slow_start: 30s",
         "slow_start: '30s' must be a number: seconds, 0..86400 (0: off)"),
        ("scheduler: mh, slow_start: 30",
         "slow_start: 30 does not apply to scheduler 'mh'; slow start ramps wrr, lc, wlc, p2c"),
        ("panic_threshold: 0",
         "panic_threshold: 0 is out of range; valid: above 0, at most 100 (percent; Envoy uses 50)"),
        ("panic_threshold: 150",
         "panic_threshold: 150 is out of range; valid: above 0, at most 100 (percent; Envoy uses 50)"),
    ],
)
def test_bad_slow_start_or_panic_threshold_names_the_field(fields, expected):
    assert problems(f"services: [{{name: web, vip: 10.96.0.10, port: 80, {fields}}}]") == [
        f"svc.yaml: services[0] (web): {expected}"
    ]
