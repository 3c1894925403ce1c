"""lbcore.render.ipvs: exact text, every kind of diff, and what IPVS cannot take.

The golden files pin the renderings of tests/golden/ipvs-{old,new}.json; the kernel
tests (tests/kernel/test_ipvs_vm.py) prove the same text is what a real IPVS reads back.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lbcore import ConfigError, Endpoint, Service
from lbcore.render.ipvs import DEFAULT_INTERFACE, render, render_diff, render_node_setup

GOLDEN = Path(__file__).parent / "golden"


def services(name: str) -> list[Service]:
    data = json.loads((GOLDEN / f"ipvs-{name}.json").read_text())
    return [Service(**dict(s, endpoints=[Endpoint(**e) for e in s["endpoints"]])) for s in data]


def svc(vip="10.96.0.10", port=80, *endpoints: Endpoint, name="ns/web", **kw) -> Service:
    return Service(name, vip, port, endpoints=endpoints, **kw)


def ep(ip="10.244.0.5", port=8080, **kw) -> Endpoint:
    return Endpoint(ip, port, **kw)


# ---------------------------------------------------------------- golden files


@pytest.mark.parametrize(
    "golden,make",
    [
        ("ipvs-old.txt", lambda: render(services("old"))),
        ("ipvs-new.txt", lambda: render(services("new"))),
        ("ipvs-diff.txt", lambda: render_diff(services("old"), services("new"))),
        ("ipvs-diff-back.txt", lambda: render_diff(services("new"), services("old"))),
        ("ipvs-node-setup.txt", lambda: render_node_setup(services("new"))),
    ],
)
def test_golden(golden, make):
    assert make() == (GOLDEN / golden).read_text()


def test_output_does_not_depend_on_input_order():
    old, new = services("old"), services("new")
    rng = random.Random(4)
    for _ in range(5):
        rng.shuffle(old)
        rng.shuffle(new)
        shuffled = [replace(s, endpoints=rng.sample(s.endpoints, len(s.endpoints))) for s in new]
        assert render(shuffled) == (GOLDEN / "ipvs-new.txt").read_text()
        assert render_diff(old, shuffled) == (GOLDEN / "ipvs-diff.txt").read_text()
        assert render_node_setup(shuffled) == (GOLDEN / "ipvs-node-setup.txt").read_text()


# ---------------------------------------------------------------- the full rendering


def test_service_line_carries_scheduler_persistence_and_flags_in_ipvsadm_order():
    # ipvsadm -S prints -p before -b, and the flags in bit order (fallback, then port)
    s = svc(
        "10.96.0.10",
        80,
        scheduler="mh",
        affinity_timeout=10800,
        sched_flags=["mh-port", "mh-fallback"],
    )
    assert render([s]) == "-A -t 10.96.0.10:80 -s mh -p 10800 -b mh-fallback,mh-port\n"


@pytest.mark.parametrize(
    "protocol,switch", [("tcp", "-t"), ("udp", "-u"), ("sctp", "--sctp-service")]
)
def test_protocol_switches(protocol, switch):
    s = svc("10.96.0.10", 53, ep("10.244.0.5", 53), protocol=protocol)
    assert render([s]) == (
        f"-A {switch} 10.96.0.10:53 -s rr\n" f"-a {switch} 10.96.0.10:53 -r 10.244.0.5:53 -m -w 1\n"
    )


def test_ipv6_in_brackets_written_as_inet_ntop_writes_them():
    # inet_ntop (ipvsadm, ip) keeps an embedded IPv4 where Python's ipaddress does not
    s = svc(
        "::ffff:10.96.0.10", 443, ep("::ffff:10.244.0.5", 8443), ep("2001:db8:0:0:1:0:0:1", 8443)
    )
    assert render([s]) == (
        "-A -t [::ffff:10.96.0.10]:443 -s rr\n"
        "-a -t [::ffff:10.96.0.10]:443 -r [::ffff:10.244.0.5]:8443 -m -w 1\n"
        "-a -t [::ffff:10.96.0.10]:443 -r [2001:db8::1:0:0:1]:8443 -m -w 1\n"
    )


def test_order_is_family_protocol_address_port_by_number():
    s = [
        svc("fd00::1", 80, name="a"),
        svc("10.96.0.10", 80, name="b", protocol="sctp"),
        svc("10.96.0.9", 80, name="c", protocol="udp"),
        svc("10.96.0.10", 80, name="d", protocol="udp"),
        svc("10.96.0.10", 9, name="e", protocol="udp"),
        svc("10.96.0.100", 1, name="f"),
    ]
    assert [line.split()[2] for line in render(s).splitlines()] == [
        "10.96.0.100:1",
        "10.96.0.9:80",
        "10.96.0.10:9",
        "10.96.0.10:80",
        "10.96.0.10:80",
        "[fd00::1]:80",
    ]
    real = svc("10.96.0.10", 80, ep("10.244.0.10", 80), ep("10.244.0.9", 81), ep("10.244.0.9", 80))
    assert [line.split()[4] for line in render([real]).splitlines()[1:]] == [
        "10.244.0.9:80",
        "10.244.0.9:81",
        "10.244.0.10:80",
    ]


def _weights(service: Service) -> dict[str, int]:
    return {line.split()[4]: int(line.split()[-1]) for line in render([service]).splitlines()[1:]}


def test_ready_endpoints_take_their_weight_terminating_ones_drain_at_zero():
    s = svc(
        "10.96.0.10",
        80,
        ep("10.244.0.1", weight=3),
        ep("10.244.0.2", weight=0),  # quiesced by the model
        ep("10.244.0.3", ready=False, serving=True, terminating=True),  # draining
        ep("10.244.0.4", ready=False, serving=False, terminating=True),  # draining, failing
        ep("10.244.0.5", ready=False),
    )  # not ready: left out
    assert _weights(s) == {
        "10.244.0.1:8080": 3,
        "10.244.0.2:8080": 0,
        "10.244.0.3:8080": 0,
        "10.244.0.4:8080": 0,
    }


def test_without_ready_endpoints_serving_terminating_ones_take_traffic():
    # kube-proxy's fallback: serving-and-terminating endpoints keep the service alive
    s = svc(
        "10.96.0.10",
        80,
        ep("10.244.0.3", weight=2, ready=False, serving=True, terminating=True),
        ep("10.244.0.4", ready=False, serving=False, terminating=True),
        ep("10.244.0.5", ready=False),
    )
    assert _weights(s) == {"10.244.0.3:8080": 2, "10.244.0.4:8080": 0}


def test_service_without_endpoints_is_a_virtual_service_without_real_servers():
    assert render([svc("10.96.0.10", 80, ep(ready=False))]) == "-A -t 10.96.0.10:80 -s rr\n"
    assert render([]) == ""


def test_same_vip_on_other_ports_and_protocols_are_separate_services():
    s = [
        svc("10.96.0.10", 53, name="a", protocol="udp"),
        svc("10.96.0.10", 53, name="b"),
        svc("10.96.0.10", 5353, name="c", protocol="udp"),
    ]
    assert len(render(s).splitlines()) == 3


# ---------------------------------------------------------------- the diff


def diff(old: list[Service], new: list[Service]) -> list[str]:
    return render_diff(old, new).splitlines()


def test_identical_or_equal_model_sets_give_an_empty_diff():
    old = services("old")
    assert render_diff(old, old) == ""
    assert render_diff(old, services("old")) == ""  # equal, not identical objects


def test_a_name_change_alone_changes_nothing_in_ipvs():
    assert diff([svc(name="a/b", port=80)], [svc(name="c/d", port=80)]) == []


def test_added_and_removed_services():
    a = svc("10.96.0.1", 80, ep("10.244.0.5"), name="a")
    b = svc("10.96.0.2", 80, ep("10.244.0.6"), name="b", protocol="udp")
    assert diff([a], [a, b]) == [
        "-A -u 10.96.0.2:80 -s rr",
        "-a -u 10.96.0.2:80 -r 10.244.0.6:8080 -m -w 1",
    ]
    # -D drops the real servers with the service
    assert diff([a, b], [a]) == ["-D -u 10.96.0.2:80"]


@pytest.mark.parametrize(
    "before,after,edit",
    [
        ({}, {"scheduler": "wlc"}, "-E -t 10.96.0.10:80 -s wlc"),
        ({}, {"affinity_timeout": 10800}, "-E -t 10.96.0.10:80 -s rr -p 10800"),
        ({"affinity_timeout": 60}, {}, "-E -t 10.96.0.10:80 -s rr"),  # -E without -p clears it
        ({"affinity_timeout": 60}, {"affinity_timeout": 61}, "-E -t 10.96.0.10:80 -s rr -p 61"),
        (
            {"scheduler": "sh"},
            {"scheduler": "sh", "sched_flags": ["sh-port"]},
            "-E -t 10.96.0.10:80 -s sh -b sh-port",
        ),
        (
            {"scheduler": "mh", "sched_flags": ["mh-port"], "affinity_timeout": 5},
            {"scheduler": "mh", "affinity_timeout": 5},
            "-E -t 10.96.0.10:80 -s mh -p 5",
        ),
    ],
)
def test_service_option_changes_are_edits_with_every_option(before, after, edit):
    endpoint = ep()
    assert diff(
        [svc("10.96.0.10", 80, endpoint, **before)], [svc("10.96.0.10", 80, endpoint, **after)]
    ) == [edit]


def test_endpoint_added_removed_and_reweighted():
    keep, drop, add = ep("10.244.0.1"), ep("10.244.0.2"), ep("10.244.0.3")
    assert diff(
        [svc("10.96.0.10", 80, keep, drop)],
        [svc("10.96.0.10", 80, Endpoint("10.244.0.1", 8080, weight=4), add)],
    ) == [
        "-a -t 10.96.0.10:80 -r 10.244.0.3:8080 -m -w 1",
        "-e -t 10.96.0.10:80 -r 10.244.0.1:8080 -m -w 4",
        "-d -t 10.96.0.10:80 -r 10.244.0.2:8080",
    ]


def test_weight_zero_now_delete_later():
    # The endpoint turns terminating: drained at weight 0.  Once it leaves the list
    # (the pod is gone, or its connections are): deleted.
    running = svc("10.96.0.10", 80, ep("10.244.0.1"), ep("10.244.0.2"))
    draining = svc(
        "10.96.0.10", 80, ep("10.244.0.1"), ep("10.244.0.2", ready=False, terminating=True)
    )
    gone = svc("10.96.0.10", 80, ep("10.244.0.1"))
    assert diff([running], [draining]) == ["-e -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 0"]
    assert diff([draining], [gone]) == ["-d -t 10.96.0.10:80 -r 10.244.0.2:8080"]
    # and a drained endpoint that comes back ready gets its weight again
    assert diff([draining], [running]) == ["-e -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 1"]


def test_not_ready_endpoint_is_deleted_and_readded():
    ready = svc("10.96.0.10", 80, ep("10.244.0.1"), ep("10.244.0.2"))
    unready = svc("10.96.0.10", 80, ep("10.244.0.1"), ep("10.244.0.2", ready=False))
    assert diff([ready], [unready]) == ["-d -t 10.96.0.10:80 -r 10.244.0.2:8080"]
    assert diff([unready], [ready]) == ["-a -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 1"]


def test_fallback_ends_when_a_ready_endpoint_appears():
    fallback = ep("10.244.0.1", ready=False, serving=True, terminating=True)
    before = svc("10.96.0.10", 80, fallback)
    after = svc("10.96.0.10", 80, fallback, ep("10.244.0.2"))
    # the new endpoint is added before the fallback one is drained
    assert diff([before], [after]) == [
        "-a -t 10.96.0.10:80 -r 10.244.0.2:8080 -m -w 1",
        "-e -t 10.96.0.10:80 -r 10.244.0.1:8080 -m -w 0",
    ]


def test_moving_a_service_is_a_delete_and_an_add_in_service_order():
    assert diff([svc("10.96.0.10", 80, ep())], [svc("10.96.0.10", 81, ep())]) == [
        "-D -t 10.96.0.10:80",
        "-A -t 10.96.0.10:81 -s rr",
        "-a -t 10.96.0.10:81 -r 10.244.0.5:8080 -m -w 1",
    ]


def test_ipv6_diff_lines_use_brackets():
    old = svc("fd00::10", 80, ep("fd00:244::1"))
    new = svc(
        "fd00::10", 80, ep("fd00:244::2", weight=2), scheduler="sh", sched_flags=["sh-fallback"]
    )
    assert diff([old], [new]) == [
        "-E -t [fd00::10]:80 -s sh -b sh-fallback",
        "-a -t [fd00::10]:80 -r [fd00:244::2]:8080 -m -w 2",
        "-d -t [fd00::10]:80 -r [fd00:244::1]:8080",
    ]


# What ipvsadm does with each line, as the guest showed it: -A/-a of something present
# and -E/-e/-d/-D of something absent are errors.  Applying a diff to the parsed table of
# render(old) must give the parsed table of render(new).


def _table(text: str) -> dict[str, tuple[str, dict[str, str]]]:
    table: dict[str, tuple[str, dict[str, str]]] = {}
    for line in text.splitlines():
        _apply(table, line)
    return table


def _apply(table: dict[str, tuple[str, dict[str, str]]], line: str) -> None:
    command, switch, address, *rest = line.split()
    service = f"{switch} {address}"
    if command in ("-A", "-E"):
        assert (service in table) == (command == "-E"), line
        table[service] = (" ".join(rest), table[service][1] if command == "-E" else {})
    elif command == "-D":
        del table[service]
    else:
        servers = table[service][1]
        assert rest[0] == "-r", line
        assert (rest[1] in servers) == (command != "-a"), line
        if command == "-d":
            del servers[rest[1]]
        else:
            assert rest[2:4] == ["-m", "-w"], line
            servers[rest[1]] = rest[4]


def _random_services(rng: random.Random) -> list[Service]:
    result = []
    for vip in rng.sample(range(1, 12), rng.randint(0, 8)):
        protocol = rng.choice(["tcp", "udp", "sctp"])
        scheduler = rng.choice(["rr", "wrr", "lc", "wlc", "dh", "sh", "mh"])
        flags = [
            f
            for f in (f"{scheduler}-fallback", f"{scheduler}-port")
            if scheduler in ("sh", "mh") and rng.random() < 0.5
        ]
        endpoints = [
            Endpoint(
                f"10.244.0.{host}",
                8080,
                weight=rng.choice([0, 1, 1, 3]),
                ready=rng.random() < 0.7,
                serving=rng.random() < 0.8,
                terminating=rng.random() < 0.3,
            )
            for host in rng.sample(range(1, 9), rng.randint(0, 5))
        ]
        result.append(
            Service(
                f"ns/s{vip}",
                f"10.96.0.{vip}",
                80,
                protocol,
                endpoints,
                scheduler,
                rng.choice([None, 60, 10800]),
                sched_flags=flags,
            )
        )
    return result


def test_random_diffs_turn_one_table_into_the_other():
    rng = random.Random(2024)
    for _ in range(300):
        old, new = _random_services(rng), _random_services(rng)
        table = _table(render(old))
        for line in render_diff(old, new).splitlines():
            _apply(table, line)
        assert table == _table(render(new))


# ---------------------------------------------------------------- the node setup


def test_node_setup_lists_each_vip_once_in_order():
    script = render_node_setup(
        [
            svc("fd00::1", 80, name="a"),
            svc("10.96.0.10", 53, name="b", protocol="udp"),
            svc("10.96.0.10", 53, name="c"),
            svc("10.96.0.9", 80, name="d"),
        ]
    )
    listed = script.split("<<'VIPS'\n")[1].split("VIPS\n")[0]
    assert listed == "10.96.0.9/32\n10.96.0.10/32\nfd00::1/128\n"
    assert f"dev={DEFAULT_INTERFACE}\n" in script


def test_node_setup_on_another_interface():
    assert "dev=kube-ipvs0\n" in render_node_setup([], interface="kube-ipvs0")


@pytest.mark.parametrize(
    "name", ["", "a" * 16, "-x", "eth0;reboot", "a b", "$(id)", "a/b", "ipvs0\n", 7]
)
def test_node_setup_refuses_bad_interface_names(name):
    with pytest.raises(ConfigError, match=r"^interface: .* is not a usable interface name"):
        render_node_setup([], interface=name)


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash is not installed")
def test_node_setup_is_valid_posix_shell():
    # parse only (-n): the kernel tests run it, on a kernel that has dummy interfaces
    script = render_node_setup(services("new"))
    subprocess.run(["dash", "-n"], input=script, text=True, check=True)


# ---------------------------------------------------------------- untrusted input, errors

LINE = re.compile(
    r"-A (-t|-u|--sctp-service) \S+ -s (rr|wrr|lc|wlc|dh|sh|mh)( -p \d+)?( -b [a-z,-]+)?"
    r"|-E (-t|-u|--sctp-service) \S+ -s (rr|wrr|lc|wlc|dh|sh|mh)( -p \d+)?( -b [a-z,-]+)?"
    r"|-D (-t|-u|--sctp-service) \S+"
    r"|-[ae] (-t|-u|--sctp-service) \S+ -r \S+ -m -w \d+"
    r"|-d (-t|-u|--sctp-service) \S+ -r \S+"
)


def test_service_names_never_reach_the_output():
    # The models refuse names with quotes, spaces or newlines; the renderer does not
    # write names at all, so even the oddest valid one leaves no trace.
    name = "x-j.ACCEPT/COMMIT:-A_-t"
    old = [svc("10.96.0.10", 80, ep(), name=name)]
    new = [
        svc("10.96.0.10", 80, ep(weight=2), name=name, scheduler="wlc"),
        svc("10.96.0.11", 80, name=name + "2"),
    ]
    for text in (
        render(old),
        render(new),
        render_diff(old, new),
        render_diff(new, old),
        render_node_setup(new),
    ):
        assert "ACCEPT" not in text and "COMMIT" not in text
    for line in (render(new) + render_diff(old, new) + render_diff(new, old)).splitlines():
        assert LINE.fullmatch(line), line
    for bad in ('a"b', "a\n-A -t 1.2.3.4:80 -s rr", "a b", "#x"):
        with pytest.raises(ConfigError, match=r"^name: "):
            svc(name=bad)


def test_every_golden_line_is_an_ipvsadm_command():
    text = "".join(
        (GOLDEN / f).read_text()
        for f in ("ipvs-old.txt", "ipvs-new.txt", "ipvs-diff.txt", "ipvs-diff-back.txt")
    )
    assert all(LINE.fullmatch(line) for line in text.splitlines())


def test_two_services_on_one_ipvs_key_are_refused():
    first, second = svc("10.96.0.10", 80, name="ns/a"), svc(
        "10.96.0.10", 80, name="ns/b", scheduler="wlc"
    )
    message = (
        r"^services\[2\]: 'tcp 10.96.0.10:80' is also services\[0\] \('ns/a'\); IPVS holds one"
    )
    with pytest.raises(ConfigError, match=message):
        render([first, svc("10.96.0.11", 80, name="ns/c"), second])
    with pytest.raises(
        ConfigError, match=r"^new_services\[1\]: 'tcp 10.96.0.10:80' is also new_services\[0\]"
    ):
        render_diff([], [first, second])
    with pytest.raises(ConfigError, match=r"^old_services\[1\]: "):
        render_diff([first, second], [])
    with pytest.raises(ConfigError, match=r"^services\[1\]: "):
        render_node_setup([first, second])
    # IPv6 spelled two ways is still one address (the models canonicalise it)
    with pytest.raises(ConfigError, match=r"is also services\[0\]"):
        render([svc("fd00::1", 80, name="a"), svc("FD00:0::1", 80, name="b")])


@pytest.mark.parametrize(
    "bad,field",
    [
        ("10.96.0.10", "services"),
        (None, "services"),
        (42, "services"),
        ([object()], r"services\[0\]"),
        ([{"name": "x"}], r"services\[0\]"),
    ],
)
def test_anything_but_a_list_of_services_is_refused(bad, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        render(bad)


def test_what_the_models_refuse_never_reaches_a_renderer():
    # IPVS would also refuse these; the models name the field first.
    with pytest.raises(
        ConfigError, match=r"^sched_flags: 'mh-port' does not apply to scheduler 'sh'"
    ):
        svc(scheduler="sh", sched_flags=["mh-port"])
    with pytest.raises(ConfigError, match=r"^endpoints\[0\]\.ip: 'fd00::1' is IPv6 but vip"):
        svc("10.96.0.10", 80, ep("fd00::1"))
    with pytest.raises(ConfigError, match=r"^endpoints\[1\]: '10.244.0.5:8080' is listed twice"):
        svc("10.96.0.10", 80, ep(), ep())
    with pytest.raises(ConfigError, match=r"^scheduler: 'lblc' is not one of"):
        svc(scheduler="lblc")


def test_importing_lbcore_does_not_import_the_renderer():
    code = (
        "import sys, lbcore; "
        "print('lbcore.render.ipvs' in sys.modules, 'lbcore.render' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("scheduler", ["wrr", "lc", "wlc"])
def test_slow_start_is_refused_or_dropped_with_fallback(scheduler):
    # The kernel cannot ramp an endpoint up (issue 15): an error naming the field and the
    # Service, or with fallback the same table as without slow start.
    ramping = Service("web", "10.96.0.10", 80, scheduler=scheduler, slow_start=30,
                      endpoints=[Endpoint("10.1.0.5", 8080), Endpoint("10.1.0.6", 8080)])
    with pytest.raises(ConfigError) as error:
        render([ramping])
    assert error.value.field == "slow_start"
    assert "'web'" in str(error.value) and "fallback=True" in str(error.value)
    with pytest.raises(ConfigError):
        render_diff([], [ramping])
    assert render([ramping], fallback=True) == render([replace(ramping, slow_start=None)])
    # A panic threshold needs nothing of the kernel: rendered as without it.
    assert render([replace(ramping, slow_start=None, panic_threshold=50)]) == render([replace(ramping, slow_start=None)])
