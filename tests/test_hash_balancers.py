"""What dh, sh and mh share: keys required, errors, batches, twins and fleets agreeing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lbcore
from lbcore import ConfigError, Endpoint, NoEndpointsError
from twins import outcome, twin_modules

CLASSES = ["DestinationHash", "SourceHash", "Maglev"]
SIZES = {"DestinationHash": 64, "SourceHash": 64, "Maglev": 251}


def eps(n: int, **kw) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, **kw) for i in range(n)]


def make(impl, name: str, endpoints=(), **kw):
    return getattr(impl, name)(endpoints, table_size=SIZES[name], **kw)


@pytest.mark.parametrize("name", CLASSES)
def test_a_key_is_required(impl, name):
    b = make(impl, name, eps(3))
    assert b.needs_key is True
    with pytest.raises(TypeError, match=f"{b.scheduler} needs a key"):
        b.pick()
    with pytest.raises(TypeError, match=f"{b.scheduler} needs a key"):
        b.pick_many(["a", None])
    with pytest.raises(TypeError, match="key must be str, bytes or int, not float"):
        b.pick(1.5)
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        b.pick(2**64)


@pytest.mark.parametrize("name", CLASSES)
def test_same_key_same_endpoint_and_key_types(impl, name):
    b = make(impl, name, eps(5))
    assert b.pick("10.1.2.3") == b.pick("10.1.2.3") == b.pick(b"10.1.2.3")
    assert b.pick(-1) == b.pick(2**64 - 1)
    assert len({b.pick(f"client-{i}") for i in range(200)}) == 5


@pytest.mark.parametrize("name", CLASSES)
def test_no_endpoint_can_take_it(impl, name):
    with pytest.raises(NoEndpointsError, match=": no endpoints$"):
        make(impl, name).pick("k")
    endpoints = [Endpoint("10.0.0.1", 80, weight=0), Endpoint("10.0.0.2", 80),
                 Endpoint("10.0.0.3", 80, ready=False)]
    b = make(impl, name, endpoints)
    b.mark_failed(endpoints[1])
    with pytest.raises(NoEndpointsError, match=r"3 endpoints \(1 not ready, 1 quiesced \(weight 0\), 1 failed\)"):
        b.pick("k")
    with pytest.raises(NoEndpointsError):
        b.pick_many(array("Q", [1]))
    with pytest.raises(NoEndpointsError):
        b.pick_many(["k"])
    assert len(b.pick_many([])) == len(b.pick_many(array("Q"))) == 0
    b.mark_healthy(endpoints[1])
    assert b.pick("k") == endpoints[1]
    b._check()


@pytest.mark.parametrize("name", CLASSES)
def test_terminating_fallback(impl, name):
    draining = Endpoint("10.0.0.2", 80, ready=False, serving=True, terminating=True)
    b = make(impl, name, [Endpoint("10.0.0.1", 80, ready=False), draining])
    assert {b.pick(f"k{i}") for i in range(50)} == {draining}


@pytest.mark.parametrize("name", CLASSES)
def test_pick_many_matches_pick(impl, name):
    endpoints = eps(7)
    b = make(impl, name, endpoints)
    keys = list(range(-50, 50)) + [f"s{i}" for i in range(50)] + [b"raw", 2**64 - 1]
    expected = [endpoints.index(b.pick(k)) for k in keys]
    result = b.pick_many(keys)
    assert isinstance(result, array) and result.typecode == "i" and list(result) == expected
    ints = array("q", range(-50, 50))
    assert list(b.pick_many(ints)) == expected[:100]
    with pytest.raises(TypeError, match="64-bit integers"):
        b.pick_many(array("i", [1]))
    with pytest.raises(TypeError, match="not a single str/bytes key"):
        b.pick_many("abc")


def test_compiled_pick_index_agrees(both):
    # Affinity calls the C-level _pick_index; the base pick_many goes through it.
    from lbcore._fast.balancer import Balancer

    _, fast = both
    for name in CLASSES:
        b = make(fast, name, eps(9))
        b.mark_failed(eps(9)[4])
        keys = array("Q", range(5000))
        assert Balancer.pick_many(b, keys) == b.pick_many(keys)


@pytest.mark.parametrize("name", CLASSES)
def test_lease_release_and_repr(impl, name):
    b = make(impl, name, eps(2))
    with b.lease("k") as endpoint:
        assert endpoint == b.pick("k")
    b.release(endpoint)
    assert repr(b).startswith(f"{name}([Endpoint(ip='10.0.0.1'")


@pytest.mark.parametrize("scheduler,name", [("dh", "DestinationHash"), ("sh", "SourceHash"),
                                            ("mh", "Maglev")])
def test_make_balancer(scheduler, name):
    b = lbcore.make_balancer(scheduler, eps(3), table_size=SIZES[name])
    assert type(b) is getattr(lbcore, name)
    assert b.scheduler == scheduler and b.table_size == SIZES[name]
    with pytest.raises(ConfigError, match=f"rng: 1 is not an option of {scheduler}; it takes: table_size"):
        lbcore.make_balancer(scheduler, eps(1), rng=1)
    service = lbcore.Service("ns/web:http", "10.96.0.1", 80, scheduler=scheduler, endpoints=eps(2))
    assert lbcore.make_balancer_for(service).scheduler == scheduler


# ---- differential: both twins, seeded random operations, identical picks -----------------

def _random_endpoints(rng: random.Random, name: str, overflow: bool = True) -> list[Endpoint]:
    most = 40 if name == "Maglev" else 14  # sh: 14 endpoints of weight <= 4 fit 64 buckets
    out = [Endpoint(f"10.0.{i // 200}.{i % 200 + 1}", rng.choice([80, 443]),
                    weight=rng.choice([0, 1, 1, 1, 2, 4]), ready=rng.random() > 0.2,
                    terminating=rng.random() < 0.2)
           for i in rng.sample(range(400), rng.randrange(0, most))]
    if overflow and rng.random() < 0.05:  # now and then, more than the table holds
        out += [Endpoint(f"10.9.{i // 200}.{i % 200 + 1}", 80, weight=4) for i in range(260)]
    return out


def _random_key(rng: random.Random):
    kind = rng.randrange(3)
    if kind == 0:
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
    if kind == 1:
        return rng.randbytes(rng.randrange(40))
    return rng.randrange(-(2**63), 2**64)


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("seed", range(12))
def test_twins_agree_on_random_sequences(both, name, seed):
    pure, fast = both
    rng = random.Random(seed)
    endpoints = _random_endpoints(rng, name, overflow=False)
    a, b = make(pure, name, endpoints), make(fast, name, endpoints)
    for _ in range(150):
        op = rng.random()
        if op < 0.1:
            endpoints = _random_endpoints(rng, name)
            if rng.random() < 0.3:
                rng.shuffle(endpoints)
            outcomes = [outcome(lambda t=t: t.update(endpoints), ConfigError) for t in (a, b)]
        elif op < 0.25 and a.endpoints:
            target = rng.choice(a.endpoints)
            mark = rng.choice(["mark_failed", "mark_healthy"])
            outcomes = [getattr(t, mark)(target) for t in (a, b)]
        elif op < 0.4:
            keys = [_random_key(rng) for _ in range(rng.randrange(20))]
            if rng.random() < 0.5:
                keys = array("Q", [rng.getrandbits(64) for _ in range(rng.randrange(50))])
            outcomes = [outcome(lambda t=t: t.pick_many(keys), ConfigError) for t in (a, b)]
        else:
            key = _random_key(rng)
            outcomes = [outcome(lambda t=t: t.pick(key), ConfigError) for t in (a, b)]
        assert outcomes[0] == outcomes[1]
        assert a.endpoints == b.endpoints
        assert a._picker.table == b._picker.table and a._picker.resolved == b._picker.resolved
        a._check()
        b._check()


# ---- properties ------------------------------------------------------------------------

# Both families: Maglev hashes and sorts "ip:port" and "[ipv6]:port" alike.
addresses = st.one_of(st.integers(1, 250).map(lambda i: f"10.1.0.{i}"),
                      st.integers(1, 2**16 - 1).map(lambda i: f"2001:db8::{i:x}"))
endpoint_lists = st.lists(
    st.builds(Endpoint, ip=addresses, port=st.sampled_from([80, 443, 8080]),
              weight=st.sampled_from([0, 1, 1, 2, 5]), ready=st.booleans(),
              terminating=st.booleans()),
    max_size=12,
    unique_by=lambda e: (e.ip, e.port),
)
keys = st.one_of(st.text(max_size=20), st.binary(max_size=20), st.integers(-(2**63), 2**64 - 1))


@settings(max_examples=60, deadline=None)
@given(endpoints=endpoint_lists, failed=st.sets(st.integers(0, 11)), key_list=st.lists(keys, max_size=8))
def test_property_picks_are_usable_and_stable(endpoints, failed, key_list):
    for impl in twin_modules():
        for name in CLASSES:
            b = make(impl, name, endpoints)
            for i in failed:
                if i < len(endpoints):
                    b.mark_failed(endpoints[i])
            usable = {e for i, e in enumerate(endpoints)
                      if e in lbcore.usable_endpoints(endpoints) and e.weight > 0 and i not in failed}
            for key in key_list:
                if not usable:
                    with pytest.raises(NoEndpointsError):
                        b.pick(key)
                    continue
                first = b.pick(key)
                assert first in usable
                assert b.pick(key) == first
                b.update(list(endpoints))  # the same set again: nothing moves
                assert b.pick(key) == first
            b._check()


# ---- fleet consistency: separate processes agree --------------------------------------

_FLEET_SCRIPT = """
import json, sys
import lbcore
from lbcore import Endpoint
order = json.loads(sys.argv[1])
endpoints = [Endpoint(f"10.0.{i // 200}.{i % 200 + 1}", 8080) for i in order]
keys = [f"198.51.100.{i}" for i in range(200)] + list(range(200)) + [b"cookie-%d" % i for i in range(50)]
out = {"implementation": lbcore.IMPLEMENTATION}
for scheduler in ("dh", "sh", "mh"):
    listed = endpoints if scheduler == "mh" else sorted(endpoints, key=lambda e: e.address)
    b = lbcore.make_balancer(scheduler, listed)
    out[scheduler] = [b.pick(k).address for k in keys]
print(json.dumps(out))
"""


def _fleet_member(order: list[int], hash_seed: str, pure: bool) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    env.pop("LBCORE_NO_EXTENSIONS", None)
    if pure:
        env["LBCORE_NO_EXTENSIONS"] = "1"
    out = subprocess.run([sys.executable, "-c", _FLEET_SCRIPT, json.dumps(order)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_fleet_processes_pick_the_same_endpoints():
    order = list(range(120))
    shuffled = order[:]
    random.Random(7).shuffle(shuffled)
    one = _fleet_member(order, "1", pure=False)
    other = _fleet_member(shuffled, "2", pure=True)
    assert other["implementation"] == "pure"
    for scheduler in ("dh", "sh", "mh"):
        assert one[scheduler] == other[scheduler], scheduler
        assert len(set(one[scheduler])) > 60  # and the keys do spread
