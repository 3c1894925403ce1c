"""The report's three pictures, as PNG files (matplotlib, the ``lbcore[plot]`` extra).

- ``share.png``: one panel per scheduler, a row per endpoint, its load over time as a
  share of the fair one (active connections per unit of weight over the mean of the
  endpoints taking connections: white is fair, red is hot, blue is cold, grey is out of
  the set or failed); the events are marked;
- ``imbalance.png``: every scheduler's imbalance (max/mean load) over time on one plot;
- ``moved.png``: the share of live keys each event moved, a bar per scheduler.

matplotlib runs on its Agg backend, which needs no display.  Sizes are fixed in pixels
(`WIDTH`, `PANEL`, `HEIGHT`) so that a picture's size says what it holds.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["draw", "WIDTH", "PANEL", "HEIGHT", "DPI", "share_height"]

#: Every picture's width, the height of one share panel and of the other two, in pixels.
WIDTH, PANEL, HEIGHT = 1200, 220, 600
DPI = 100
# Above the share panels: the title.
_TOP = 60
_FAIR_MAX = 2.0


def share_height(schedulers: int) -> int:
    """The height of share.png for ``schedulers`` panels, in pixels."""
    return _TOP + PANEL * schedulers


def _figure(height: int, layout: str | None = None) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure on an Agg canvas, without pyplot: no global state, no display needed.
    figure = Figure(figsize=(WIDTH / DPI, height / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _mark_events(axes: Any, report: dict[str, Any], label: bool) -> None:
    for number, event in enumerate(report["events"], 1):
        axes.axvline(event["time"], color="black", linestyle="--", linewidth=0.8)
        if label:
            axes.annotate(f"{number}: {event['kind']} {event['endpoint']}", (event["time"], 1.0),
                          xycoords=("data", "axes fraction"), xytext=(3, -3), textcoords="offset points",
                          va="top", fontsize=7)


def _fair_share(report: dict[str, Any], scheduler: dict[str, Any]) -> np.ndarray:
    """Load over the fair load, (endpoints, samples); NaN where an endpoint takes no connections."""
    active = np.asarray(scheduler["active"], dtype=np.float64)
    weights = np.zeros_like(active)
    phases = report["phases"]
    starts = [phase["start"] for phase in phases]
    for j, p in enumerate(np.searchsorted(starts, report["samples"], side="right") - 1):
        weights[:, j] = phases[p]["weights"]
    taking = weights > 0
    total = np.where(taking, active, 0).sum(axis=0)
    fair = total / np.maximum(weights.sum(axis=0), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = active / weights / fair
    # As for the imbalance (lbcore.simulate.measure): no colour where the endpoints hold
    # fewer connections than there are of them.
    measured = (total >= taking.sum(axis=0)) & (total > 0)
    return np.where(taking & measured, share, np.nan)


def _share(report: dict[str, Any], path: str) -> None:
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    schedulers = report["schedulers"]
    figure = _figure(share_height(len(schedulers)))
    figure.suptitle("load per endpoint over time, as a share of the fair load (1 = fair)", fontsize=10,
                    y=1 - 20 / share_height(len(schedulers)))
    samples = report["samples"]
    endpoints = len(report["endpoints"])
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.8")
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=_FAIR_MAX)
    top = 1 - _TOP / share_height(len(schedulers))
    grid = figure.add_gridspec(len(schedulers), 1, left=0.12, right=0.9, top=top, bottom=0.02 + 40 / share_height(len(schedulers)), hspace=0.35)
    image = None
    for row, scheduler in enumerate(schedulers):
        axes = figure.add_subplot(grid[row])
        image = axes.imshow(_fair_share(report, scheduler), aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
                            extent=(samples[0], samples[-1], endpoints - 0.5, -0.5))
        axes.set_ylabel(scheduler["name"], fontsize=9)
        if endpoints <= 24:
            axes.set_yticks(range(endpoints), report["endpoints"], fontsize=6)
        else:
            axes.set_yticks([])
        axes.tick_params(labelsize=7)
        _mark_events(axes, report, label=row == 0)
        if row == len(schedulers) - 1:
            axes.set_xlabel("seconds", fontsize=8)
    if image is not None:
        bar = figure.colorbar(image, ax=figure.axes, fraction=0.02, pad=0.01)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(f"load / fair load (capped at {_FAIR_MAX:g})", fontsize=8)
    figure.savefig(path, dpi=DPI)


def _imbalance(report: dict[str, Any], path: str) -> None:
    figure = _figure(HEIGHT, layout="constrained")
    axes = figure.add_subplot()
    samples = report["samples"]
    for scheduler in report["schedulers"]:
        series = [np.nan if value is None else value for value in scheduler["imbalance"]["series"]]
        axes.plot(samples, series, label=scheduler["name"], linewidth=1.2)
    _mark_events(axes, report, label=True)
    axes.set_title("imbalance: busiest endpoint's load / mean load (1.0 = perfect)", fontsize=10)
    axes.set_xlabel("seconds", fontsize=9)
    axes.set_ylabel("max / mean", fontsize=9)
    figure.legend(fontsize=8, loc="outside lower center", ncols=min(len(report["schedulers"]), 8) or 1)
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=DPI)


def _moved(report: dict[str, Any], path: str) -> None:
    figure = _figure(HEIGHT, layout="constrained")
    axes = figure.add_subplot()
    events = report["events"]
    schedulers = report["schedulers"]
    width = 0.8 / max(len(schedulers), 1)
    for k, scheduler in enumerate(schedulers):
        shares = [100 * (e["moved_share"] or 0.0) for e in scheduler["events"]]
        bars = axes.bar(np.arange(len(events)) + (k - (len(schedulers) - 1) / 2) * width, shares, width,
                        label=scheduler["name"])
        axes.bar_label(bars, fmt="%.1f", fontsize=7)
    axes.set_xticks(range(len(events)), [f"{e['time']:g}s {e['kind']}\n{e['endpoint']}" for e in events], fontsize=8)
    axes.set_title("live keys moved by each event (%)", fontsize=10)
    axes.set_ylabel("% of live keys", fontsize=9)
    if not events:
        axes.text(0.5, 0.5, "no events", ha="center", va="center", transform=axes.transAxes)
    figure.legend(fontsize=8, loc="outside lower center", ncols=min(len(schedulers), 8) or 1)
    axes.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=DPI)


def draw(report: dict[str, Any], directory: str) -> list[str]:
    """Write share.png, imbalance.png and moved.png into ``directory``; their paths.

    Raises ImportError when matplotlib is not installed (``pip install "lbcore[plot]"``).
    """
    paths = []
    for name, draw_one in (("share", _share), ("imbalance", _imbalance), ("moved", _moved)):
        path = os.path.join(directory, f"{name}.png")
        draw_one(report, path)
        paths.append(path)
    return paths
