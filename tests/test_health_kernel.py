"""Health for the kernel modes: real checks decide, the renderers' output shows it
(IPVS: weight 0, keepalived's inhibit_on_failure; iptables: out of the split)."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from lbcore import Endpoint, HealthCheck, Service
from lbcore.health import HealthMonitor, inhibit_unhealthy
from lbcore.render import iptables, ipvs, nft

from health_support import Clock, closed_port, servers

CHECK = HealthCheck(interval=1, fall=2, rise=2)


def service(endpoints, scheduler="wrr", check=CHECK):
    return Service("default/web:http", "10.96.0.10", 80, scheduler=scheduler, endpoints=endpoints,
                   health_check=check)


async def advance(clock: Clock, monitor: HealthMonitor, seconds: float) -> None:
    end = clock.now + seconds
    while clock.now < end - 1e-9:
        clock.now = min(end, clock.now + 0.1)
        await monitor.run_due()


def test_an_unhealthy_endpoint_gets_weight_0_in_ipvs_and_leaves_the_iptables_split():
    async def main():
        up = await servers("accept", 2)
        down = Endpoint("127.0.0.1", closed_port(), weight=3)
        endpoints = [up[0].endpoint, down, dataclasses.replace(up[1].endpoint, weight=2)]
        clock = Clock()
        changes = []
        monitor = HealthMonitor(clock=clock, rng=random.Random(2),
                                on_change=lambda name, e, s: changes.append((name, e.address, s.healthy)))
        services = [service(endpoints)]
        monitor.update(services)
        healthy = inhibit_unhealthy(services, monitor.checkers)
        await advance(clock, monitor, 2)
        return services, healthy, inhibit_unhealthy(services, monitor.checkers), changes, down

    services, before, after, changes, down = asyncio.run(main())
    assert before[0] is services[0]  # nothing unhealthy yet: the same object, nothing to diff
    assert changes == [("default/web:http", down.address, False)]
    weights = {e.address: e.weight for e in after[0].endpoints}
    assert weights[down.address] == 0 and sorted(weights.values()) == [0, 1, 2]

    diff = ipvs.render_diff(services, after)
    assert diff == f"-e -t 10.96.0.10:80 -r {down.address} -m -w 0\n"
    assert f"-a -t 10.96.0.10:80 -r {down.address} -m -w 0" in ipvs.render(after)

    full = iptables.render(after)
    assert f"--to-destination {down.address}" not in full
    assert f"--to-destination {down.address}" in iptables.render(services)
    # The split is over what is left, weights 1 and 2: the first rule takes 1/3 or 2/3.
    assert "--probability 0.3333333333" in full or "--probability 0.6666666667" in full


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "sh", "dh", "mh"])
def test_nftables_gives_an_unhealthy_endpoints_slots_to_the_others(scheduler):
    async def main():
        up = await servers("accept", 2)
        down = Endpoint("127.0.0.1", closed_port())
        clock = Clock()
        monitor = HealthMonitor(clock=clock)
        services = [service([up[0].endpoint, down, up[1].endpoint], scheduler=scheduler,
                            check=HealthCheck(interval=1, fall=1))]
        monitor.update(services)
        await advance(clock, monitor, 1)
        return services, inhibit_unhealthy(services, monitor.checkers), down, [u.endpoint for u in up]

    services, inhibited, down, up = asyncio.run(main())
    element = f"127.0.0.1 . {down.port}"
    assert element in nft.render(services)
    text = nft.render(inhibited)
    assert element not in text  # no slot leads to it ...
    assert all(f"127.0.0.1 . {e.port}" in text for e in up)  # ... the others have them


def test_recovery_gives_the_weight_back_with_one_edit():
    async def main():
        [web] = await servers("http", status=503)
        other = (await servers("http"))[0].endpoint
        clock = Clock()
        monitor = HealthMonitor(clock=clock)
        services = [service([web.endpoint, other], check=HealthCheck("http", interval=1, fall=1, rise=2))]
        monitor.update(services)
        await advance(clock, monitor, 1)
        out = inhibit_unhealthy(services, monitor.checkers)
        web.status = 200
        await advance(clock, monitor, 2)
        back = inhibit_unhealthy(services, monitor.checkers)
        return services, out, back, web.endpoint

    services, out, back, endpoint = asyncio.run(main())
    assert ipvs.render_diff(out, back) == f"-e -t 10.96.0.10:80 -r {endpoint.address} -m -w 1\n"
    assert back == services
    assert iptables.render(back) == iptables.render(services)


def test_every_endpoint_unhealthy_rejects_in_iptables_and_nftables():
    async def main():
        dead = [Endpoint("127.0.0.1", closed_port()) for _ in range(2)]
        clock = Clock()
        monitor = HealthMonitor(clock=clock)
        services = [service(dead, scheduler="rr", check=HealthCheck(interval=1, fall=1))]
        monitor.update(services)
        await advance(clock, monitor, 1)
        return inhibit_unhealthy(services, monitor.checkers)

    [rendered] = asyncio.run(main())
    assert [e.weight for e in rendered.endpoints] == [0, 0]
    text = iptables.render([rendered])
    assert '"default/web:http has no endpoints"' in text and "-j REJECT" in text
    assert "add element ip lbcore no-endpoint-services {\n    10.96.0.10 . tcp . 80\n}" in nft.render([rendered])


def test_services_without_a_check_and_quiesced_endpoints_are_left_as_they_are():
    quiesced = Endpoint("127.0.0.1", closed_port(), weight=0)
    plain = Service("plain", "10.96.0.11", 80, endpoints=[Endpoint("10.1.0.5", 80)])
    checked = service([quiesced], check=HealthCheck(initial="unhealthy"))
    monitor = HealthMonitor(clock=Clock())
    monitor.update([plain, checked])
    result = inhibit_unhealthy([plain, checked], monitor.checkers)
    assert result[0] is plain
    assert result[1].endpoints[0] is quiesced  # weight 0 already: no new object
    assert list(monitor.checkers) == ["default/web:http"]


@pytest.mark.parametrize("up_count, panic", [(1, True), (2, False)])
def test_panic_threshold_leaves_every_endpoint_in(up_count, panic):
    # 4 endpoints, threshold 50 %: 1 healthy (25 %) is panic, every endpoint keeps its
    # weight; 2 healthy (50 %) is not, the 2 down get weight 0.  Without a threshold the
    # down ones always go.
    async def main():
        up = await servers("accept", up_count)
        down = [Endpoint("127.0.0.1", closed_port()) for _ in range(4 - up_count)]
        endpoints = [s.endpoint for s in up] + down
        clock = Clock()
        monitor = HealthMonitor(clock=clock)
        check = HealthCheck(interval=1, fall=1)
        services = [dataclasses.replace(service(endpoints, scheduler="rr", check=check), panic_threshold=50),
                    dataclasses.replace(service(endpoints, scheduler="rr", check=check), name="plain")]
        monitor.update(services)
        await advance(clock, monitor, 2)
        return services, inhibit_unhealthy(services, monitor.checkers), down

    services, result, down = asyncio.run(main())
    downs = {e.address for e in down}
    if panic:
        assert result[0] is services[0]
    else:
        assert {e.address for e in result[0].endpoints if e.weight == 0} == downs
    assert {e.address for e in result[1].endpoints if e.weight == 0} == downs
