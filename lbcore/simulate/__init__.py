"""Replay traffic through every scheduler and see what each would do (``lbcore simulate``).

Choosing a scheduler is a question asked before deploying: how many sessions move when
a node leaves, whether least connection beats round robin when requests vary 100x in
length, how hot the hottest backend gets with Maglev on skewed keys.  This package
answers by replay, with the library's own balancers:

>>> from lbcore import Endpoint
>>> from lbcore.simulate import simulate, summary_table, synthetic
>>> traffic = synthetic(20_000, rate=2_000.0, keys=500, zipf=1.1, seed=3)
>>> endpoints = [Endpoint(f"10.0.0.{i}", 8080) for i in range(1, 11)]
>>> report = simulate(traffic, endpoints, "rr,wlc,mh", ["5s:remove:10.0.0.3:8080"])
>>> [s["name"] for s in report["schedulers"]]
['rr', 'wlc', 'mh']

`synthetic` and `read_trace` make the traffic (`Traffic`), `simulate` replays it with
the events (`parse_event`) and returns the report (what ``report.json`` holds),
`summary_table` prints it, and `lbcore.simulate.plots.draw` makes the pictures (with
matplotlib: ``pip install "lbcore[plot]"``).  numpy is needed throughout
(``pip install "lbcore[simulate]"``).  ``import lbcore`` does not import this package.
"""

from .events import Event, Timeline, parse_event
from .schedulers import DEFAULT_SCHEDULERS, SchedulerSpec, parse_schedulers
from .simulation import simulate, summary_table
from .traffic import Traffic, read_trace, synthetic

__all__ = [
    "simulate",
    "summary_table",
    "synthetic",
    "read_trace",
    "Traffic",
    "Event",
    "parse_event",
    "Timeline",
    "SchedulerSpec",
    "parse_schedulers",
    "DEFAULT_SCHEDULERS",
]
