"""One simulation: the same traffic and events through every scheduler, into a report.

`simulate` returns the report as a dict of plain values (what ``report.json`` holds);
`summary_table` renders its table.  Each scheduler is replayed on its own balancer
(`lbcore.simulate.replay`) and measured (`lbcore.simulate.measure`) before the next.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import lbcore

from ..balancers import IMPLEMENTATION
from ..errors import ConfigError
from ..models import DEFAULT_AFFINITY_TIMEOUT, Endpoint
from .events import Event, Timeline, parse_event
from .measure import Shared, measure
from .replay import Prepared, replay
from .schedulers import SchedulerSpec, parse_schedulers
from .traffic import Traffic

__all__ = ["simulate", "summary_table"]

Progress = Callable[[float, str], None]


def simulate(
    traffic: Traffic,
    endpoints: Iterable[Endpoint],
    schedulers: str | Sequence[SchedulerSpec],
    events: Iterable[Event | str] = (),
    *,
    seed: int = 1,
    affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Replay ``traffic`` through each scheduler with ``events`` applied; the report.

    ``schedulers`` is a ``--schedulers`` list (``"rr,wlc,mh+affinity"``) or parsed
    specs; ``events`` are `Event` objects or their text (``"30s:remove:10.0.0.3:8080"``).
    ``progress(fraction, label)`` is called as the work goes on.  Bad input raises ConfigError naming the field and the value.

    >>> from lbcore.simulate import synthetic
    >>> report = simulate(synthetic(2000, rate=1000.0, keys=100), [Endpoint(f"10.0.0.{i}", 80) for i in (1, 2)],
    ...                   "rr,mh+affinity", ["1s:remove:10.0.0.2:80"])
    >>> rr, sticky = report["schedulers"]
    >>> rr["requests"]                          # even until 10.0.0.2 leaves at 1 s
    [1505, 495]
    >>> moved = sticky["events"][0]             # only the keys of the endpoint that left
    >>> moved["live_keys"], moved["moved_keys"], moved["from"], moved["to"]
    (91, 37, {'10.0.0.2:80': 37}, {'10.0.0.1:80': 37})
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed", seed, "must be an integer >= 0")
    if isinstance(affinity_timeout, bool) or not isinstance(affinity_timeout, int) or affinity_timeout < 1:
        raise ConfigError("affinity_timeout", affinity_timeout, "must be an integer >= 1 (seconds)")
    if len(traffic) == 0:
        raise ConfigError("traffic", traffic.source, "holds no request")
    specs = parse_schedulers(schedulers) if isinstance(schedulers, str) else list(schedulers)
    parsed = []
    for number, event in enumerate(events):
        try:
            parsed.append(parse_event(event) if isinstance(event, str) else event)
        except ConfigError as error:
            raise error.within(f"events[{number}]") from None
    timeline = Timeline(endpoints, parsed, end=float(traffic.arrivals[-1]))
    if progress is not None:
        progress(0.0, "preparing")
    prepared = Prepared(traffic, timeline, held=any(spec.replay == "held" for spec in specs))
    shared = Shared(traffic, timeline, prepared.bounds, affinity=any(spec.affinity for spec in specs))
    report: dict[str, Any] = {
        "lbcore": lbcore.__version__,
        "implementation": IMPLEMENTATION,
        "seed": seed,
        "affinity_timeout": affinity_timeout,
        "traffic": {**traffic.source, "requests": len(traffic), "keys": len(traffic.keys), "span": traffic.span},
        "endpoints": list(timeline.addresses),
        "events": [{"time": e.time, "kind": e.kind, "endpoint": e.address, "weight": e.weight, "text": str(e)}
                   for e in timeline.events],
        "phases": [{"start": phase.start, "weights": weights.astype(int).tolist()}
                   for phase, weights in zip(timeline.phases, shared.phase_weights)],
        "samples": shared.samples.tolist(),
        "schedulers": [],
    }
    n = len(traffic)
    for number, spec in enumerate(specs):
        def step(done: int, number: int = number, spec: SchedulerSpec = spec) -> None:
            if progress is not None:
                progress((number + done / n) / len(specs), spec.name)

        started = time.perf_counter()
        placed = replay(spec, prepared, seed=seed, affinity_timeout=affinity_timeout, progress=step)
        replayed = time.perf_counter()
        figures = measure(placed, traffic, timeline, shared, affinity_timeout if spec.affinity else None)
        report["schedulers"].append({
            "name": spec.name,
            "scheduler": spec.scheduler,
            "affinity": spec.affinity,
            "options": spec.options,
            "replay": spec.replay,
            "seconds": replayed - started,
            "requests_per_second": n / (replayed - started),
            "measure_seconds": time.perf_counter() - replayed,
            **figures,
        })
    if progress is not None:
        progress(1.0, "done")
    return report


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _rate(value: float) -> str:
    return f"{value / 1e6:.1f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"


def summary_table(report: dict[str, Any]) -> str:
    """The report as a table: a row per scheduler, the events listed below it.

    Columns: requests replayed per second of wall time, mean and peak imbalance
    (max/mean load, 1.00 is perfect), keys moved per event, affinity hits, and
    requests refused (no endpoint could take them).
    """
    events = report["events"]
    header = ["SCHEDULER", "SIM REQ/S", "IMBALANCE", "PEAK"]
    header += [f"MOVED@{e['time']:g}s" for e in events]
    header += ["HITS", "REFUSED"]
    rows = [header]
    for s in report["schedulers"]:
        imbalance = s["imbalance"]
        row = [s["name"], _rate(s["requests_per_second"]),
               "-" if imbalance["mean"] is None else f"{imbalance['mean']:.2f}",
               "-" if imbalance["peak"] is None else f"{imbalance['peak']:.2f}"]
        row += [_percent(e["moved_share"]) for e in s["events"]]
        row += [_percent(s["affinity_hit_rate"]), str(s["refused"])]
        rows.append(row)
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    traffic = report["traffic"]
    lines.insert(0, f"{traffic['requests']:,} requests over {traffic['span']:.1f} s, {traffic['keys']:,} keys, "
                    f"{len(report['endpoints'])} endpoints in all, seed {report['seed']}")
    for e in events:
        lines.append(f"event at {e['time']:g}s: {e['kind']} {e['endpoint']}"
                     + ("" if e["weight"] is None else f" weight {e['weight']}"))
    return "\n".join(lines) + "\n"
