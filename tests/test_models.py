"""Endpoint and Service: Kubernetes semantics, and every bad field named with its value."""

from __future__ import annotations

import dataclasses

import pytest

from lbcore import ConfigError, Endpoint, Service, usable_endpoints


def ep(ip: str = "10.0.0.1", port: int = 80, **kw) -> Endpoint:
    return Endpoint(ip, port, **kw)


def test_endpoint_defaults_and_normalisation():
    e = Endpoint("2001:DB8:0:0::1", 443)
    assert (e.ip, e.port, e.weight, e.ready, e.serving, e.terminating) == (
        "2001:db8::1", 443, 1, True, True, False)
    assert e.address == "[2001:db8::1]:443"
    assert e.family == 6
    assert Endpoint("10.0.0.1", 80, ready=False).serving is False  # serving defaults to ready


def test_endpoint_is_frozen_hashable_and_slotted():
    e = ep()
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.port = 81  # type: ignore[misc]
    assert {e, ep()} == {e}
    assert not hasattr(e, "__dict__")
    # address is stored, not computed per read: a copy with another port gets its own.
    moved = dataclasses.replace(e, port=81)
    assert moved.address == f"{e.ip}:81" and e.address == f"{e.ip}:{e.port}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.address = "10.0.0.9:80"  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs,field,fragment",
    [
        ({"ip": "10.0.0.300"}, "ip", "'10.0.0.300' is not an IPv4 or IPv6 address"),
        ({"ip": "0.0.0.0"}, "ip", "unspecified"),
        ({"ip": "fe80::1%eth0"}, "ip", "zone"),
        ({"ip": 167772161}, "ip", "must be an IPv4 or IPv6 address string"),
        ({"port": 0}, "port", "0 is out of range; valid: 1..65535"),
        ({"port": 65536}, "port", "65536 is out of range"),
        ({"port": "80"}, "port", "'80' must be an integer"),
        ({"port": True}, "port", "True must be an integer"),
        ({"weight": -1}, "weight", "-1 is out of range; valid: 0..2147483647"),
        ({"weight": 2**31}, "weight", "2147483648 is out of range"),
        ({"weight": 1.5}, "weight", "1.5 must be an integer"),
        ({"ready": "yes"}, "ready", "'yes' must be true or false"),
        ({"serving": 1}, "serving", "1 must be true or false"),
        ({"terminating": None}, "terminating", "None must be true or false"),
    ],
)
def test_endpoint_bad_fields(kwargs, field, fragment):
    args = {"ip": "10.0.0.1", "port": 80, **kwargs}
    with pytest.raises(ConfigError) as info:
        Endpoint(**args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert fragment in str(info.value)


def test_usable_endpoints_prefers_ready_then_serving_terminating():
    ready = ep("10.0.0.1")
    draining = ep("10.0.0.2", ready=False, serving=True, terminating=True)
    dead = ep("10.0.0.3", ready=False, serving=False, terminating=True)
    starting = ep("10.0.0.4", ready=False)
    assert usable_endpoints([ready, draining, dead, starting]) == (ready,)
    assert usable_endpoints([draining, dead, starting]) == (draining,)
    assert usable_endpoints([dead, starting]) == ()


def svc(**kw) -> Service:
    args = {"name": "default/web:http", "vip": "10.96.0.10", "port": 80, **kw}
    return Service(**args)


def test_service_defaults():
    s = svc(endpoints=[ep()], protocol="TCP")
    assert (s.protocol, s.scheduler, s.affinity_timeout, s.listen, s.sched_flags) == (
        "tcp", "rr", None, None, ())
    assert s.listen_address == ("10.96.0.10", 80)
    assert s.endpoints == (ep(),) and isinstance(s.endpoints, tuple)
    assert s.address == "10.96.0.10:80"
    # Hashable, and equal to the same Service spelled with the normalised protocol.
    same = svc(endpoints=[ep()], protocol="tcp")
    assert s == same and hash(s) == hash(same)
    assert s != svc(endpoints=[ep()], port=81)


def test_service_listen_forms():
    assert svc(listen="127.0.0.1:0").listen == ("127.0.0.1", 0)
    assert svc(listen="[::1]:8080").listen == ("::1", 8080)
    assert svc(listen=("0.0.0.0", 8080)).listen_address == ("0.0.0.0", 8080)


def test_service_sched_flags_sorted_and_checked():
    assert svc(scheduler="mh", sched_flags=["mh-port", "mh-fallback"]).sched_flags == (
        "mh-fallback", "mh-port")


@pytest.mark.parametrize(
    "kwargs,field,fragment",
    [
        ({"name": ""}, "name", "is not a valid service name"),
        ({"name": 'web"; -j ACCEPT'}, "name", "is not a valid service name"),
        ({"name": "web\nCOMMIT"}, "name", "'web\\nCOMMIT'"),
        ({"name": "x" * 254}, "name", "is not a valid service name"),
        ({"vip": "10.96.0.999"}, "vip", "is not an IPv4 or IPv6 address"),
        ({"port": 0}, "port", "out of range"),
        ({"protocol": "icmp"}, "protocol", "'icmp' is not one of tcp, udp, sctp"),
        ({"scheduler": "lblc"}, "scheduler", "'lblc' is not one of rr, wrr, lc, wlc, dh, sh, mh, p2c, ring"),
        ({"affinity_timeout": 0}, "affinity_timeout", "0 is out of range; valid: 1..86400"),
        ({"affinity_timeout": 86401}, "affinity_timeout", "86401 is out of range"),
        ({"affinity_timeout": 10.5}, "affinity_timeout", "must be an integer"),
        ({"listen": "localhost:80"}, "listen", "is not an IPv4 or IPv6 address"),
        ({"listen": "::1:80"}, "listen", "brackets"),
        ({"listen": "127.0.0.1:99999"}, "listen", "bad port"),
        ({"listen": 8080}, "listen", "must be 'ip:port'"),
        ({"sched_flags": ["sh-port"]}, "sched_flags", "does not apply to scheduler 'rr'"),
        ({"sched_flags": ["flag-1"]}, "sched_flags", "'flag-1' is not one of"),
        ({"max_connections": 0}, "max_connections", "out of range"),
        ({"endpoints": "10.0.0.1:80"}, "endpoints", "must be a list of Endpoint objects"),
        ({"endpoints": [("10.0.0.1", 80)]}, "endpoints[0]", "is not an Endpoint"),
        ({"endpoints": [ep(), ep("10.0.0.2"), ep(weight=5)]}, "endpoints[2]",
         "'10.0.0.1:80' is listed twice"),
        ({"endpoints": [ep("2001:db8::1")]}, "endpoints[0].ip", "is IPv6 but vip 10.96.0.10 is IPv4"),
    ],
)
def test_service_bad_fields(kwargs, field, fragment):
    with pytest.raises(ConfigError) as info:
        svc(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_config_error_paths_and_locations():
    error = ConfigError("port", 0, "is out of range").within("endpoints[3]").at("svc.yaml")
    assert (error.field, error.value, error.where) == ("endpoints[3].port", 0, "svc.yaml")
    assert str(error) == "svc.yaml: endpoints[3].port: 0 is out of range"
    assert isinstance(error, ValueError)
    long = ConfigError("name", "x" * 500, "is too long")
    assert len(str(long)) < 120
