"""The requests a simulation replays: a trace file, or synthetic traffic.

A request has an arrival time, a key (what the hash schedulers and sticky sessions
key on: a client address, a cookie value), a duration (how long its connection stays
open) and, optionally, the bytes it carried.  `Traffic` holds them as numpy arrays in
order of arrival, with each distinct key stored once.

Synthetic traffic (`synthetic`) draws, from one ``numpy.random.Generator(PCG64(seed))``,
in this order: Poisson arrivals at ``rate`` (exponential gaps), keys from a Zipf law of
exponent ``zipf`` over ``keys`` clients (client ``r`` is asked with weight ``r**-zipf``;
0 is uniform), and lognormal durations with the given median and 99th percentile.  The
same seed gives the same traffic with the same numpy (numpy keeps a Generator's stream
stable within a version, not across every version).

Trace files (`read_trace`) are CSV with a header row naming the columns, or JSON lines
(one object per line): ``time`` (seconds, any origin), ``key`` (a string), ``duration``
(seconds), and optionally ``bytes``.  Keys are strings in both formats, hashed as
`lbcore.key_hash` hashes a str.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ConfigError
from ..sources import SourceError

__all__ = ["Traffic", "synthetic", "read_trace", "TRACE_COLUMNS"]

#: The columns of a trace; ``bytes`` may be left out.
TRACE_COLUMNS = ("time", "key", "duration", "bytes")
# The standard normal's 99th percentile: p99 = median * exp(Z99 * sigma) for a lognormal.
_Z99 = 2.3263478740408408
# A trace's problems are listed up to this many; then the count of the rest.
_MAX_PROBLEMS = 20


@dataclass(frozen=True, eq=False)
class Traffic:
    """Requests in order of arrival, as arrays of equal length.

    ``keys`` holds each distinct key once (a uint64 array of client numbers for
    synthetic traffic, a list of str for a trace); ``key_ids[i]`` is the index of
    request ``i``'s key in it.  ``sizes`` is the bytes per request, or None.
    ``source`` says where the requests came from (a file, or the synthetic parameters).
    """

    arrivals: np.ndarray
    key_ids: np.ndarray
    keys: Sequence[Any]
    durations: np.ndarray
    sizes: np.ndarray | None
    source: dict

    def __len__(self) -> int:
        return len(self.arrivals)

    @cached_property
    def ends(self) -> np.ndarray:
        """When each request's connection closes."""
        return self.arrivals + self.durations

    @property
    def span(self) -> float:
        """Seconds from the first arrival to the last."""
        return float(self.arrivals[-1] - self.arrivals[0]) if len(self) else 0.0


def _positive(name: str, value: Any, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError(name, value, f"must be {'a number' if kind is float else 'an integer'} above 0")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(name, value, "must be above 0")
    return value


def synthetic(
    requests: int,
    *,
    rate: float = 10_000.0,
    keys: int = 10_000,
    zipf: float = 1.0,
    duration_median: float = 0.1,
    duration_p99: float = 2.0,
    seed: int = 1,
) -> Traffic:
    """``requests`` requests: Poisson arrivals, Zipf keys, lognormal durations; O(n log keys).

    >>> traffic = synthetic(1000, rate=100.0, keys=50, seed=7)
    >>> len(traffic), len(traffic.keys), bool((np.diff(traffic.arrivals) >= 0).all())
    (1000, 50, True)
    >>> bool((synthetic(1000, rate=100.0, keys=50, seed=7).key_ids == traffic.key_ids).all())
    True
    """
    _positive("requests", requests, int)
    _positive("rate", rate)
    _positive("keys", keys, int)
    if keys >= 2**31:
        raise ConfigError("keys", keys, "is too many; valid: 1..2147483647")
    if isinstance(zipf, bool) or not isinstance(zipf, (int, float)) or not 0 <= zipf < math.inf:
        raise ConfigError("zipf", zipf, "must be a number >= 0 (0: every key equally often)")
    _positive("duration_median", duration_median)
    _positive("duration_p99", duration_p99)
    if duration_p99 < duration_median:
        raise ConfigError("duration_p99", duration_p99, f"is below the median {duration_median}; it must be >= it")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", seed, "must be an integer >= 0")
    rng = np.random.Generator(np.random.PCG64(seed))
    arrivals = np.cumsum(rng.exponential(1.0 / rate, requests))
    # Zipf over a finite population by inverting its cumulative distribution.
    cumulative = np.cumsum(np.arange(1, keys + 1, dtype=np.float64) ** -float(zipf))
    key_ids = np.searchsorted(cumulative, rng.random(requests) * cumulative[-1], side="right")
    key_ids = np.minimum(key_ids, keys - 1).astype(np.int32)
    sigma = math.log(duration_p99 / duration_median) / _Z99
    durations = rng.lognormal(math.log(duration_median), sigma, requests)
    source = {
        "synthetic": True, "requests": requests, "rate": float(rate), "keys": keys, "zipf": float(zipf),
        "duration_median": float(duration_median), "duration_p99": float(duration_p99), "seed": seed,
    }
    return Traffic(arrivals, key_ids, np.arange(keys, dtype=np.uint64), durations, None, source)


def _number(row: dict, column: str, integer: bool = False) -> Any:
    value = row.get(column)
    kind = "an integer" if integer else "a number"
    if value is None or value == "":
        raise ConfigError(column, value, "is missing")
    try:
        number = (int if integer else float)(value) if isinstance(value, str) else value
    except ValueError:
        raise ConfigError(column, value, f"is not {kind}") from None
    if isinstance(number, bool) or not isinstance(number, int if integer else (int, float)):
        raise ConfigError(column, value, f"is not {kind}")
    if not math.isfinite(number):
        raise ConfigError(column, value, "must be a finite number")
    if column != "time" and number < 0:  # a time may have any origin
        raise ConfigError(column, value, "must be >= 0")
    return number


def _csv_rows(path: str, file: Any) -> Iterator[tuple[int, Any]]:
    """(line number, row or the ConfigError that the line is)."""
    reader = csv.DictReader(file)
    columns = [name.strip() for name in reader.fieldnames or []]
    for name in columns:
        if name not in TRACE_COLUMNS:
            raise SourceError([ConfigError("header", name, f"is not a trace column; valid: {', '.join(TRACE_COLUMNS)}").at(path)])
    for column in TRACE_COLUMNS[:3]:
        if column not in columns:
            raise SourceError([ConfigError("header", ",".join(columns), f"has no {column!r} column; a trace needs time, key, duration").at(path)])
    reader.fieldnames = columns
    for row in reader:
        if None in row:  # DictReader puts the fields past the header's under None
            yield reader.line_num, ConfigError("fields", row[None], "are more than the header names")
        else:
            yield reader.line_num, row


def _json_rows(path: str, file: Any) -> Iterator[tuple[int, Any]]:
    """(line number, row or the ConfigError that the line is); blank lines are skipped."""
    for number, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, ConfigError("line", line.strip(), f"is not JSON: {error.msg}")
            continue
        if isinstance(row, dict):
            yield number, row
        else:
            yield number, ConfigError("line", row, "is not a JSON object with time, key, duration")


def read_trace(path: str) -> Traffic:
    """The requests of a trace file: CSV (``.csv``) or JSON lines (anything else); O(n).

    Requests are sorted by time (stably: equal times keep the file's order) and time
    is shifted so that the first request arrives at 0.  Raises `lbcore.sources.SourceError`
    listing each bad line (file, line, column, value), or an empty trace.
    """
    times: list[float] = []
    ids: list[int] = []
    durations: list[float] = []
    sizes: list[int] = []
    key_index: dict[str, int] = {}
    problems: list[ConfigError] = []
    skipped = 0
    has_sizes = None
    try:
        with open(path, newline="" if path.endswith(".csv") else None, encoding="utf-8") as file:
            rows = _csv_rows(path, file) if path.endswith(".csv") else _json_rows(path, file)
            for number, row in rows:
                try:
                    if isinstance(row, ConfigError):
                        raise row
                    unknown = sorted(set(row) - set(TRACE_COLUMNS))
                    if unknown:
                        raise ConfigError(unknown[0], row[unknown[0]], f"is not a trace column; valid: {', '.join(TRACE_COLUMNS)}")
                    time = _number(row, "time")
                    key = row.get("key")
                    if not isinstance(key, str) or not key:
                        raise ConfigError("key", key, "must be a non-empty string")
                    duration = _number(row, "duration")
                    size = None if row.get("bytes") in (None, "") else int(_number(row, "bytes", integer=True))
                    if has_sizes is None:
                        has_sizes = size is not None
                    elif has_sizes != (size is not None):
                        raise ConfigError("bytes", row.get("bytes"), "must be given on every line or on none")
                except ConfigError as error:
                    if len(problems) < _MAX_PROBLEMS:
                        problems.append(error.at(f"{path}: line {number}"))
                    else:
                        skipped += 1
                    continue
                times.append(time)
                ids.append(key_index.setdefault(key, len(key_index)))
                durations.append(duration)
                if size is not None:
                    sizes.append(size)
    except OSError as error:
        raise SourceError([ConfigError("file", path, f"cannot be read: {error.strerror}")]) from None
    except UnicodeDecodeError as error:
        raise SourceError([ConfigError("file", path, f"is not UTF-8 text: {error.reason}")]) from None
    if skipped:
        problems.append(ConfigError("lines", skipped, "more lines have problems (not listed)").at(path))
    if problems:
        raise SourceError(problems)
    if not times:
        raise SourceError([ConfigError("file", path, "holds no request; a trace needs a header and lines of time, key, duration")])
    arrivals = np.asarray(times, dtype=np.float64)
    order = np.argsort(arrivals, kind="stable")
    arrivals = arrivals[order] - arrivals[order[0]]
    return Traffic(
        arrivals,
        np.asarray(ids, dtype=np.int32)[order],
        list(key_index),
        np.asarray(durations, dtype=np.float64)[order],
        np.asarray(sizes, dtype=np.int64)[order] if has_sizes else None,
        {"trace": path, "requests": len(times), "keys": len(key_index)},
    )
