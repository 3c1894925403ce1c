"""dh and sh: IPVS bucket tables, tiled in list order, with fallback."""

from __future__ import annotations

from array import array
from collections import Counter

import pytest

from lbcore import ConfigError, Endpoint

KEYS = array("Q", range(20_000))


def eps(n: int, **kw) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i + 1}", 80, **kw) for i in range(n)]


def test_tile_buckets_as_ip_vs_sh_reassign(impl):
    assert list(impl.tile_buckets((2, 1, 3), 16)) == [0, 0, 1, 2, 2, 2] * 2 + [0, 0, 1, 2]
    assert list(impl.tile_buckets((1, 1, 1), 16)) == [i % 3 for i in range(16)]
    assert list(impl.tile_buckets((16,), 16)) == [0] * 16
    assert len(impl.tile_buckets((), 16)) == 0


def test_sh_takes_weight_buckets_in_list_order(impl):
    endpoints = [Endpoint("10.0.0.1", 80, weight=3), Endpoint("10.0.0.2", 80, weight=0),
                 Endpoint("10.0.0.3", 80, weight=2)]
    b = impl.SourceHash(endpoints, table_size=16)
    # IPVS: a weight-0 destination still takes one bucket per cycle; it is never picked.
    assert list(b._picker.table) == [0, 0, 0, 1, 2, 2] * 2 + [0, 0, 0, 1]
    picks = Counter(b.pick_many(KEYS))
    assert set(picks) == {0, 2}
    b._check()


def test_sh_spreads_keys_by_weight(impl):
    endpoints = [Endpoint("10.0.0.1", 80, weight=1), Endpoint("10.0.0.2", 80, weight=3)]
    b = impl.SourceHash(endpoints, table_size=1024)  # 256 whole cycles of 4 buckets
    picks = Counter(b.pick_many(KEYS))
    assert abs(picks[1] / len(KEYS) - 0.75) < 0.02


def test_dh_takes_one_bucket_each_whatever_the_weight(impl):
    endpoints = [Endpoint("10.0.0.1", 80, weight=5), Endpoint("10.0.0.2", 80, weight=1)]
    b = impl.DestinationHash(endpoints, table_size=16)
    assert list(b._picker.table) == [0, 1] * 8
    picks = Counter(b.pick_many(KEYS))
    assert abs(picks[0] / len(KEYS) - 0.5) < 0.02
    b._check()


@pytest.mark.parametrize("scheduler", ["SourceHash", "DestinationHash"])
@pytest.mark.parametrize("how", ["failed", "weight 0", "not ready"])
def test_fallback_to_the_next_usable_bucket(impl, scheduler, how):
    endpoints = eps(4)
    b = getattr(impl, scheduler)(endpoints, table_size=64)
    table = b._picker.table
    before = list(b.pick_many(KEYS))
    if how == "failed":
        b.mark_failed(endpoints[1])
    else:
        changed = Endpoint("10.0.0.2", 80, **({"weight": 0} if how == "weight 0" else {"ready": False}))
        b.update([endpoints[0], changed, *endpoints[2:]])
    after = list(b.pick_many(KEYS))
    assert list(b._picker.table) == list(table)  # the table stays; the fallback changes
    # Only endpoint 1's keys move, each to the next bucket's owner: endpoint 2.
    assert [(x, y) for x, y in zip(before, after) if x != y] == [(1, 2)] * before.count(1)
    b._check()


def test_fallback_wraps_around_and_skips_several(impl):
    endpoints = eps(3)
    b = impl.SourceHash(endpoints, table_size=16)  # buckets 0 1 2 0 1 2 ... 0
    b.mark_failed(endpoints[0])
    b.mark_failed(endpoints[1])
    assert set(b.pick_many(KEYS)) == {2}
    b.mark_healthy(endpoints[1])
    b.mark_failed(endpoints[2])
    # Bucket 15 (endpoint 0) wraps to bucket 0 (failed) and on to bucket 1.
    assert list(b._picker.resolved) == [1] * 16
    b._check()


@pytest.mark.parametrize(
    "scheduler,endpoints,message",
    [
        ("DestinationHash", eps(17),
         r"table_size: 16 is too small for 17 endpoints needing 17 buckets \(dh gives each "
         r"endpoint one bucket\); use table_size=32 or more"),
        ("SourceHash", eps(9, weight=2),
         r"table_size: 16 is too small for 9 endpoints needing 18 buckets \(sh gives each "
         r"endpoint its weight in buckets \(at least one\)\); use table_size=32 or more"),
        ("SourceHash", eps(16) + [Endpoint("10.0.1.1", 80, weight=0)],
         r"table_size: 16 is too small for 17 endpoints needing 17 buckets"),
    ],
)
def test_a_table_too_small_is_an_error_not_a_cut(impl, scheduler, endpoints, message):
    cls = getattr(impl, scheduler)
    with pytest.raises(ConfigError, match=message):
        cls(endpoints, table_size=16)
    b = cls(eps(2), table_size=16)
    with pytest.raises(ConfigError, match=message):
        b.update(endpoints)
    assert b.endpoints == tuple(eps(2))
    b._check()


def test_a_table_exactly_full_fits(impl):
    b = impl.SourceHash(eps(8, weight=2), table_size=16)
    assert list(b._picker.table) == [i // 2 for i in range(16)]
    assert list(impl.DestinationHash(eps(16), table_size=16)._picker.table) == list(range(16))


@pytest.mark.parametrize("size", [8, 300, 2**21, 256.0, "256", None])
def test_table_size_is_a_power_of_two_from_16(impl, size):
    with pytest.raises(ConfigError, match="^table_size: .* a power of two from 16 to 1048576"):
        impl.SourceHash(eps(1), table_size=size)


def test_default_table_size(impl):
    assert impl.SourceHash().table_size == impl.DestinationHash().table_size == 256
    assert len(impl.SourceHash(eps(3))._picker.table) == 256


def test_list_order_decides_which_endpoint_owns_a_bucket(impl):
    # As in IPVS the tiling follows the list: bucket 0 belongs to whoever is listed first.
    key = next(k for k in range(1000) if (impl.key_hash(k) >> 32) * 16 >> 32 == 0)
    assert impl.SourceHash(eps(3), table_size=16).pick(key) == eps(3)[0]
    assert impl.SourceHash(eps(3)[::-1], table_size=16).pick(key) == eps(3)[2]
