"""The simulator's inputs: synthetic traffic, trace files, events, the scheduler list."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lbcore import ConfigError, Endpoint
from lbcore.simulate import Timeline, parse_event, parse_schedulers, read_trace, synthetic
from lbcore.sources import SourceError

# ---- synthetic traffic ----------------------------------------------------------------


def test_synthetic_traffic_has_the_asked_shape():
    traffic = synthetic(200_000, rate=5_000.0, keys=1_000, zipf=1.0, duration_median=0.2, duration_p99=3.0, seed=9)
    gaps = np.diff(traffic.arrivals)
    assert (gaps >= 0).all()
    assert abs(gaps.mean() * 5_000.0 - 1) < 0.01           # Poisson at the rate
    assert abs(gaps.std() / gaps.mean() - 1) < 0.02          # exponential gaps: CV 1
    assert abs(np.median(traffic.durations) / 0.2 - 1) < 0.02
    assert abs(np.percentile(traffic.durations, 99) / 3.0 - 1) < 0.05
    counts = np.bincount(traffic.key_ids, minlength=1_000)
    # Zipf(1): the r-th key is asked 1/r as often as the first.
    assert abs(counts[0] / counts[1] - 2) < 0.15 and abs(counts[0] / counts[9] - 10) < 1.0
    assert counts[0] / 200_000 == pytest.approx(1 / sum(1 / r for r in range(1, 1001)), rel=0.03)
    assert traffic.keys.dtype == np.uint64 and len(traffic.keys) == 1_000


def test_synthetic_traffic_is_deterministic_under_its_seed():
    a, b, c = (synthetic(5_000, keys=300, seed=s) for s in (3, 3, 4))
    for name in ("arrivals", "key_ids", "durations"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))


def test_uniform_keys_and_constant_durations():
    traffic = synthetic(100_000, keys=10, zipf=0.0, duration_median=0.5, duration_p99=0.5, seed=1)
    counts = np.bincount(traffic.key_ids)
    assert counts.min() > 9_500 and counts.max() < 10_500
    assert np.allclose(traffic.durations, 0.5)


@pytest.mark.parametrize("option, value, words", [
    ("requests", 0, "above 0"),
    ("rate", -1.0, "above 0"),
    ("rate", math.inf, "above 0"),
    ("keys", 2.5, "an integer"),
    ("zipf", -0.5, ">= 0"),
    ("duration_median", 0, "above 0"),
    ("duration_p99", 0.01, "below the median"),
    ("seed", -1, ">= 0"),
])
def test_synthetic_traffic_refuses_bad_values(option, value, words):
    options = {"requests": 10, option: value}
    with pytest.raises(ConfigError, match=f"^{option}: .*{words}"):
        synthetic(**options)


# ---- trace files ----------------------------------------------------------------------


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_trace_is_sorted_shifted_and_keyed(tmp_path):
    path = write(tmp_path, "t.csv", "key,time,duration,bytes\n"
                 "10.1.0.1,100.5,0.25,900\n10.1.0.2,100.0,1,100\n10.1.0.1,100.0,0,50\n")
    traffic = read_trace(path)
    assert traffic.arrivals.tolist() == [0.0, 0.0, 0.5]
    # Equal times keep the file's order: the 10.1.0.2 line came first.
    assert [traffic.keys[k] for k in traffic.key_ids] == ["10.1.0.2", "10.1.0.1", "10.1.0.1"]
    assert traffic.durations.tolist() == [1.0, 0.0, 0.25]
    assert traffic.sizes.tolist() == [100, 50, 900]
    assert traffic.source == {"trace": path, "requests": 3, "keys": 2}


def test_json_lines_trace(tmp_path):
    lines = [{"time": 3, "key": "a", "duration": 0.5}, {"time": 1.5, "key": "b", "duration": 2}]
    path = write(tmp_path, "t.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    traffic = read_trace(path)
    assert traffic.arrivals.tolist() == [0.0, 1.5]
    assert [traffic.keys[k] for k in traffic.key_ids] == ["b", "a"] and traffic.sizes is None


def test_trace_problems_name_the_file_the_line_the_column_and_the_value(tmp_path):
    path = write(tmp_path, "bad.csv", "time,key,duration\n1,a,0.5\nsoon,b,1\n2,,1\n3,c,-1\n4,d,1,extra\n")
    with pytest.raises(SourceError) as caught:
        read_trace(path)
    assert str(caught.value).splitlines() == [
        f"{path}: line 3: time: 'soon' is not a number",
        f"{path}: line 4: key: '' must be a non-empty string",
        f"{path}: line 5: duration: '-1' must be >= 0",
        f"{path}: line 6: fields: ['extra'] are more than the header names",
    ]


def test_json_trace_problems(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"time": 1, "key": 7, "duration": 1}\n[1]\n{"time": 1, "key": "a", '
                 '"duration": 1, "port": 80}\n{oops\n')
    with pytest.raises(SourceError) as caught:
        read_trace(path)
    problems = str(caught.value).splitlines()
    assert problems[0] == f"{path}: line 1: key: 7 must be a non-empty string"
    assert problems[1] == f"{path}: line 2: line: [1] is not a JSON object with time, key, duration"
    assert problems[2].startswith(f"{path}: line 3: port: 80 is not a trace column")
    assert problems[3].startswith(f"{path}: line 4: line: '{{oops' is not JSON")


@pytest.mark.parametrize("text, words", [
    ("time,key\n1,a\n", "has no 'duration' column"),
    ("time,key,duration,port\n", "header: 'port' is not a trace column"),
    ("time,key,duration\n", "holds no request"),
])
def test_trace_header_problems(tmp_path, text, words):
    with pytest.raises(SourceError, match=words):
        read_trace(write(tmp_path, "t.csv", text))


def test_many_bad_lines_are_listed_up_to_a_bound(tmp_path):
    path = write(tmp_path, "t.csv", "time,key,duration\n" + "x,a,1\n" * 25)
    with pytest.raises(SourceError) as caught:
        read_trace(path)
    problems = caught.value.problems
    assert len(problems) == 21 and str(problems[-1]) == f"{path}: lines: 5 more lines have problems (not listed)"


def test_a_missing_trace_file(tmp_path):
    with pytest.raises(SourceError, match="cannot be read: No such file"):
        read_trace(str(tmp_path / "nothing.csv"))


def test_bytes_on_some_lines_only(tmp_path):
    with pytest.raises(SourceError, match="line 3: bytes: '' must be given on every line or on none"):
        read_trace(write(tmp_path, "t.csv", "time,key,duration,bytes\n1,a,1,5\n2,b,1,\n"))


# ---- events ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("30s:remove:10.0.0.3:8080", (30.0, "remove", "10.0.0.3", 8080, None)),
    ("30:remove:10.0.0.3:8080", (30.0, "remove", "10.0.0.3", 8080, None)),
    ("500ms:fail:10.0.0.3:80", (0.5, "fail", "10.0.0.3", 80, None)),
    ("2m:add:10.0.0.9:80:4", (120.0, "add", "10.0.0.9", 80, 4)),
    ("1h:recover:10.0.0.3:80", (3600.0, "recover", "10.0.0.3", 80, None)),
    ("1.5s:weight:[FD00::2]:80:0", (1.5, "weight", "fd00::2", 80, 0)),
])
def test_events_parse(text, expected):
    event = parse_event(text)
    assert (event.time, event.kind, event.ip, event.port, event.weight) == expected


@pytest.mark.parametrize("text, words", [
    ("30s:remove", "is not TIME:KIND:IP:PORT"),
    ("remove:10.0.0.3:8080", "has time 'remove'"),
    ("soon:remove:10.0.0.3:8080", "has time 'soon'"),
    ("30s:delete:10.0.0.3:8080", "has kind 'delete'; valid: remove, add, fail, recover, weight"),
    ("30s:remove:10.0.0.3", "has endpoint '10.0.0.3'"),
    ("30s:weight:10.0.0.3:8080", "gives no weight"),
    ("30s:fail:10.0.0.3:8080:2", "gives a weight, which fail does not take"),
    ("30s:remove:10.0.0.300:8080", r"event '30s:remove:10.0.0.300:8080'.ip: '10.0.0.300' is not an IPv4"),
    ("30s:remove:10.0.0.3:70000", r"\.port: 70000 is out of range"),
    ("30s:remove:fd00::1:80", "IPv6 as \\[IP\\]:PORT"),
])
def test_bad_events_are_refused_with_the_reason(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_event(text)


def eps(n: int) -> list[Endpoint]:
    return [Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)]


def test_timeline_phases_follow_the_events_in_time_order():
    events = [parse_event(t) for t in ("9s:recover:10.0.0.2:80", "3s:fail:10.0.0.2:80", "5s:weight:10.0.0.1:80:7",
                                       "6s:remove:10.0.0.3:80", "7s:add:10.0.0.3:80:2")]
    timeline = Timeline(eps(3), events, end=10)
    assert [str(e) for e in timeline.events] == [
        "3s:fail:10.0.0.2:80", "5s:weight:10.0.0.1:80:7", "6s:remove:10.0.0.3:80", "7s:add:10.0.0.3:80:2",
        "9s:recover:10.0.0.2:80"]
    last = timeline.phases[-1]
    assert [(e.address, e.weight) for e in last.endpoints] == [("10.0.0.1:80", 7), ("10.0.0.2:80", 1), ("10.0.0.3:80", 2)]
    assert [sorted(p.failed) for p in timeline.phases] == [[], ["10.0.0.2:80"]] * 1 + [["10.0.0.2:80"]] * 3 + [[]]
    assert timeline.addresses == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]


@pytest.mark.parametrize("event, words", [
    ("3s:remove:10.0.0.9:80", r"events\[0\]: '3s:remove:10.0.0.9:80' names 10.0.0.9:80, which is not in the set at 3 s"),
    ("3s:add:10.0.0.1:80", "adds 10.0.0.1:80, which is already in the set"),
    ("3s:recover:10.0.0.1:80", "recovers 10.0.0.1:80, which has not failed"),
    ("30s:remove:10.0.0.1:80", r"is at 30 s, outside the traffic \(0..10 s\)"),
])
def test_timeline_refuses_events_that_do_not_apply(event, words):
    with pytest.raises(ConfigError, match=words):
        Timeline(eps(2), [parse_event(event)], end=10)


def test_timeline_refuses_a_second_failure_and_an_empty_set():
    with pytest.raises(ConfigError, match="has failed already"):
        Timeline(eps(2), [parse_event("1s:fail:10.0.0.1:80"), parse_event("2s:fail:10.0.0.1:80")], end=10)
    with pytest.raises(ConfigError, match="^endpoints: .* is empty"):
        Timeline([], [], end=10)


# ---- the scheduler list ---------------------------------------------------------------


def test_scheduler_list_and_how_each_is_replayed():
    specs = parse_schedulers("rr, wrr,lc,wlc,dh,sh,mh,mh+affinity,rr+affinity,sh:table_size=1024,p2c,ring,ring:balance_factor=1.25")
    assert [s.replay for s in specs] == ["sequence", "sequence", "held", "held", "key", "key", "key", "held", "held",
                                         "key", "held", "key", "held"]
    assert specs[9].options == {"table_size": 1024} and specs[12].options == {"balance_factor": 1.25}


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("rr,fastest", "^schedulers: 'fastest' is not a scheduler; valid: rr, wrr"),
    ("mh+sticky", "the only wrapper is \\+affinity"),
    ("mh:table_size", "has option 'table_size'; write NAME=VALUE"),
    ("rr:rng=3", "sets rng, which the simulation seeds from --seed"),
    ("rr,rr", "'rr' is listed twice"),
])
def test_bad_scheduler_lists(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_schedulers(text)
