"""p2c, ring and balance_factor from the inputs to the outputs: lbcore YAML, Kubernetes
annotations, `lbcore check`, and the renderers that refuse them or map them by the
documented fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from lbcore import SCHEDULERS, ConfigError, Endpoint, Service, make_balancer_for
from lbcore.cli import check_table
from lbcore.render import BACKEND_SCHEDULERS, iptables, ipvs, nft
from lbcore.sources import SourceError, load_files

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)

SERVICES = """\
services:
  - name: cache
    vip: 10.96.0.20
    port: 11211
    scheduler: ring
    balance_factor: 1.25
    endpoints:
      - {ip: 10.1.0.5, port: 11211}
      - {ip: 10.1.0.6, port: 11211, weight: 2}
  - name: api
    vip: 10.96.0.21
    port: 443
    scheduler: p2c
    endpoints:
      - {ip: 10.1.0.7, port: 8443}
"""

K8S = """\
apiVersion: v1
kind: Service
metadata:
  name: cache
  namespace: shop
  annotations:
    lbcore.io/scheduler: mh
    lbcore.io/balance-factor: "{factor}"
spec:
  clusterIP: 10.96.0.30
  ports: [{{name: memcache, port: 11211}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cache-abc
  namespace: shop
  labels: {{kubernetes.io/service-name: cache}}
addressType: IPv4
ports: [{{name: memcache, port: 11211, protocol: TCP}}]
endpoints:
  - addresses: [10.1.0.8]
"""


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def lbcore(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "lbcore", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)


def test_lbcore_yaml_carries_the_scheduler_and_the_factor(tmp_path):
    cache, api = load_files([write(tmp_path, "s.yaml", SERVICES)])
    assert (cache.scheduler, cache.balance_factor, api.scheduler) == ("ring", 1.25, "p2c")
    balancer = make_balancer_for(cache)
    assert (balancer.scheduler, balancer.balance_factor) == ("ring", 1.25)
    assert make_balancer_for(api).scheduler == "p2c"


@pytest.mark.parametrize(
    "entry,problem",
    [
        ("balance_factor: 1.125", "services[0] (cache): balance_factor: 1.125 is not a whole percentage"),
        ("balance_factor: 0.5", "services[0] (cache): balance_factor: 0.5 is out of range; valid: 1..100"),
        ("balance_factor: fast", "services[0] (cache): balance_factor: 'fast' must be a number"),
    ],
)
def test_lbcore_yaml_names_a_bad_factor(tmp_path, entry, problem):
    path = write(tmp_path, "s.yaml", SERVICES.replace("balance_factor: 1.25", entry))
    with pytest.raises(SourceError) as err:
        load_files([path])
    assert f"{path}: {problem}" in str(err.value)


def test_a_factor_on_a_scheduler_without_bounded_loads_is_an_error(tmp_path):
    path = write(tmp_path, "s.yaml", SERVICES.replace("scheduler: ring", "scheduler: wrr"))
    with pytest.raises(SourceError, match=r"balance_factor: 1.25 does not apply to scheduler 'wrr'; "
                                          "bounded loads are for mh and ring"):
        load_files([path])


def test_kubernetes_annotations_set_scheduler_and_factor(tmp_path):
    [service] = load_files([write(tmp_path, "k.yaml", K8S.format(factor="1.5"))])
    assert (service.name, service.scheduler, service.balance_factor) == ("shop/cache:memcache", "mh", 1.5)
    ring = K8S.format(factor="2").replace("lbcore.io/scheduler: mh", "lbcore.io/scheduler: p2c")
    with pytest.raises(SourceError, match=r"balance-factor\]: 2 does not apply to scheduler 'p2c'"):
        load_files([write(tmp_path, "p.yaml", ring)])


@pytest.mark.parametrize(
    "value,problem",
    [
        ('"fast"', "metadata.annotations[lbcore.io/balance-factor]: 'fast' must be a decimal number in a string"),
        ('"1e2"', "metadata.annotations[lbcore.io/balance-factor]: '1e2' must be a decimal number in a string"),
        ("1.25", "metadata.annotations[lbcore.io/balance-factor]: 1.25 must be a decimal number in a string"),
        ('"1.005"', "metadata.annotations[lbcore.io/balance-factor]: 1.005 is not a whole percentage"),
    ],
)
def test_kubernetes_names_a_bad_factor_annotation(tmp_path, value, problem):
    text = K8S.format(factor="X").replace('"X"', value)
    path = write(tmp_path, "k.yaml", text)
    with pytest.raises(SourceError) as err:
        load_files([path])
    assert f"{path}: document 1: Service shop/cache: {problem}" in str(err.value)


def test_the_scheduler_annotation_takes_p2c_and_ring(tmp_path):
    for scheduler in ("p2c", "ring"):
        text = K8S.format(factor="1").replace("lbcore.io/scheduler: mh", f"lbcore.io/scheduler: {scheduler}")
        text = text.replace('    lbcore.io/balance-factor: "1"\n', "")
        [service] = load_files([write(tmp_path, f"{scheduler}.yaml", text)])
        assert service.scheduler == scheduler
    bad = K8S.format(factor="1").replace("lbcore.io/scheduler: mh", "lbcore.io/scheduler: fastest")
    with pytest.raises(SourceError, match="'fastest' is not one of rr, wrr, lc, wlc, dh, sh, mh, p2c, ring"):
        load_files([write(tmp_path, "bad.yaml", bad)])


def test_check_shows_the_factor(tmp_path):
    table = check_table(load_files([write(tmp_path, "s.yaml", SERVICES)]))
    assert "ring +balance_factor=1.25" in table and " p2c " in table
    result = lbcore("check", write(tmp_path, "t.yaml", SERVICES))
    assert result.returncode == 0 and "ring +balance_factor=1.25" in result.stdout


# ---- renderers ---------------------------------------------------------------------------

def svc(scheduler: str, factor=None, **kw) -> Service:
    return Service("ns/cache:mc", "10.96.0.5", 11211, scheduler=scheduler, balance_factor=factor,
                   endpoints=[Endpoint("10.1.0.1", 11211), Endpoint("10.1.0.2", 11211, weight=3)], **kw)


def test_iptables_says_when_the_fallback_drops_the_bound():
    with pytest.raises(ConfigError, match=r"scheduler: 'ring' of service 'ns/cache:mc' with balance_factor "
                                          r"1.25 cannot be expressed in iptables .* fallback=True to render "
                                          "it as wrr without the bound"):
        iptables.render([svc("ring", 1.25)])
    assert iptables.render([svc("ring", 1.25)], fallback=True) == iptables.render([svc("wrr")])


@pytest.mark.parametrize("scheduler,message", [
    ("p2c", "scheduler: 'p2c' of service 'ns/cache:mc' has no IPVS scheduler; use one of IPVS's, "
            "or fallback=True to render it as wlc"),
    ("ring", "scheduler: 'ring' of service 'ns/cache:mc' has no IPVS scheduler; use one of IPVS's, "
             "or fallback=True to render it as mh -b mh-fallback"),
])
def test_ipvs_refuses_what_it_has_no_scheduler_for(scheduler, message):
    with pytest.raises(ConfigError) as err:
        ipvs.render([svc(scheduler)])
    assert str(err.value) == message
    # The diff refuses the new set as render() would, changed or not.
    with pytest.raises(ConfigError, match="has no IPVS scheduler"):
        ipvs.render_diff([svc(scheduler)], [svc(scheduler)])
    with pytest.raises(ConfigError, match="without the bound"):
        ipvs.render([svc("ring", 2)])


def test_ipvs_refuses_a_balance_factor():
    with pytest.raises(ConfigError, match=r"balance_factor: 1.25 of service 'ns/cache:mc' cannot be "
                                          r"expressed in IPVS \(mh has no bounded loads there\)"):
        ipvs.render([svc("mh", 1.25)])


def test_ipvs_fallback_renders_the_documented_schedulers():
    assert ipvs.render([svc("p2c", affinity_timeout=60)], fallback=True) == \
        ipvs.render([svc("wlc", affinity_timeout=60)])
    assert ipvs.render([svc("ring", 1.5)], fallback=True) == ipvs.render([svc("mh", sched_flags=["mh-fallback"])])
    assert ipvs.render([svc("mh", 1.5)], fallback=True) == ipvs.render([svc("mh")])
    assert ipvs.render_diff([svc("wlc")], [svc("p2c")], fallback=True) == ""
    assert ipvs.render_diff([svc("rr")], [svc("ring")], fallback=True) == \
        "-E -t 10.96.0.5:11211 -s mh -b mh-fallback\n"
    assert ipvs.FALLBACK == {"p2c": ("wlc", ()), "ring": ("mh", ("mh-fallback",))}


@pytest.mark.parametrize("scheduler,needs", [("p2c", "connection counts"), ("ring", "a ring lookup")])
def test_nft_refuses_p2c_and_ring_or_renders_them_as_wrr(scheduler, needs):
    with pytest.raises(ConfigError, match=rf"scheduler: '{scheduler}' of service 'ns/cache:mc' cannot run "
                                          rf"in nftables \(it needs {needs}\); .* to render it as wrr"):
        nft.render([svc(scheduler)])
    assert nft.render([svc(scheduler)], fallback=True) == nft.render([svc("wrr")])


def test_nft_refuses_a_balance_factor_or_drops_it():
    with pytest.raises(ConfigError, match=r"balance_factor: 1.25 of service 'ns/cache:mc' cannot be "
                                          r"expressed in nftables"):
        nft.render([svc("mh", 1.25)])
    with pytest.raises(ConfigError, match="cannot be expressed in nftables"):
        nft.render_diff([svc("mh", 1.25)], [svc("mh", 1.25)])
    assert nft.render([svc("mh", 1.25)], fallback=True) == nft.render([svc("mh")])


def test_backends_say_which_schedulers_they_run():
    assert set(BACKEND_SCHEDULERS["ipvs"]) == set(SCHEDULERS) - set(ipvs.FALLBACK)
    assert set(BACKEND_SCHEDULERS["forward"]) == set(SCHEDULERS)
    assert {"p2c", "ring"} <= set(nft.FALLBACK) and {"p2c", "ring"} <= set(iptables.FALLBACK)


def test_agent_sinks_leave_out_what_their_data_plane_cannot_carry():
    from lbcore.agent.sinks.iptables import IptablesSink
    from lbcore.agent.sinks.ipvs import IpvsSink
    from lbcore.agent.sinks.nft import NftSink

    ipvs_sink = IpvsSink()
    assert ipvs_sink.refuse(svc("ring")) == ("scheduler: 'ring' has no IPVS scheduler; use one of IPVS's, "
                                             "or --fallback to run it as mh -b mh-fallback")
    assert ipvs_sink.refuse(svc("p2c")).endswith("--fallback to run it as wlc")
    assert ipvs_sink.refuse(svc("mh", 1.25)).startswith("balance_factor: 1.25 cannot be expressed in ipvs mode")
    assert ipvs_sink.refuse(svc("mh")) is None
    assert IpvsSink(fallback=True).refuse(svc("ring", 2)) is None
    assert NftSink().refuse(svc("mh", 1.25)).startswith("balance_factor: 1.25 cannot be expressed in nft mode")
    assert "--fallback to run it as wrr" in NftSink().refuse(svc("ring"))
    assert NftSink(fallback=True).refuse(svc("mh", 1.25)) is None
    assert "--fallback to run it as wrr" in IptablesSink().refuse(svc("p2c"))
    assert IptablesSink(fallback=True).refuse(svc("ring", 1.25)) is None


def test_cli_render_ipvs_fallback(tmp_path):
    path = write(tmp_path, "s.yaml", SERVICES)
    refused = lbcore("render", "ipvs", path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "'ring' of service 'cache' has no IPVS scheduler" in refused.stderr
    rendered = lbcore("render", "ipvs", "--fallback", path)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == ipvs.render(load_files([path]), fallback=True)
    assert "-s mh -b mh-fallback" in rendered.stdout and "-s wlc" in rendered.stdout
    diff = lbcore("render", "ipvs", "--fallback", path, "--diff", path)
    assert (diff.returncode, diff.stdout) == (0, "")
