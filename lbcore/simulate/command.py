"""``lbcore simulate``: what the command does once lbcore/cli.py has read its arguments.

It makes the traffic and the endpoints, runs `simulate` with a progress bar on stderr,
writes ``report.json`` and the pictures into the output directory, and prints the
summary table on stdout.  Without matplotlib the JSON and the table are still written,
and a line on stderr says how to get the pictures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Sequence, TextIO

from ..errors import ConfigError
from ..models import DEFAULT_AFFINITY_TIMEOUT, Endpoint, Service
from .simulation import simulate, summary_table
from .traffic import read_trace, synthetic

__all__ = ["run", "numbered_endpoints", "choose_service", "ProgressBar"]

#: What the CLI prints when matplotlib is missing.
PLOT_HINT = 'pictures need matplotlib: pip install "lbcore[plot]"'


def numbered_endpoints(count: int, weights: Sequence[int] = (1,)) -> list[Endpoint]:
    """``count`` endpoints 10.0.0.1:8080, 10.0.0.2:8080, ... (250 per /24: 10.0.1.1 is
    the 251st), with ``weights`` repeated over them in turn.

    >>> [(e.address, e.weight) for e in numbered_endpoints(3, [1, 4])]
    [('10.0.0.1:8080', 1), ('10.0.0.2:8080', 4), ('10.0.0.3:8080', 1)]
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 250 * 256:
        raise ConfigError("endpoints", count, f"must be an integer in 1..{250 * 256}")
    if not weights:
        raise ConfigError("weights", list(weights), "is empty; give at least one weight")
    endpoints = []
    for i in range(count):
        try:
            endpoints.append(Endpoint(f"10.0.{i // 250}.{i % 250 + 1}", 8080, weight=weights[i % len(weights)]))
        except ConfigError as error:
            raise error.within(f"weights[{i % len(weights)}]") from None
    return endpoints


def choose_service(services: Sequence[Service], name: str | None) -> Service:
    """The service named ``name``, or the only one; ConfigError listing the names otherwise."""
    names = [service.name for service in services]
    if name is None:
        if len(services) == 1:
            return services[0]
        raise ConfigError("service", None, f"must name one of the {len(names)} services: {', '.join(names)}")
    for service in services:
        if service.name == name:
            return service
    raise ConfigError("service", name, f"is not among the services; valid: {', '.join(names) or '(none)'}")


class ProgressBar:
    """A progress bar on a terminal (redrawn in place); elsewhere a line per scheduler done."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.label = ""
        self.started = time.perf_counter()

    def __call__(self, fraction: float, label: str) -> None:
        elapsed = time.perf_counter() - self.started
        if self.tty:
            filled = int(30 * fraction)
            end = "\n" if label == "done" else ""
            self.stream.write(f"\rsimulate [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:3.0f}% "
                              f"{elapsed:5.1f}s {label:<24.24}{end}")
        elif label != self.label:
            if self.label:
                self.stream.write(f"simulate: {self.label} done at {elapsed:.1f}s\n")
            self.label = label
        self.stream.flush()


def run(
    *,
    trace: str | None,
    traffic_options: dict[str, Any],
    endpoints: list[Endpoint],
    events: Sequence[str],
    schedulers: str,
    affinity_timeout: int | None,
    seed: int,
    out: str,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one simulation as the CLI does; the exit status (0).  Output goes to
    ``stdout``/``stderr``, default: sys's at the time of the call."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if trace is not None and traffic_options:
        flag = "--" + next(iter(traffic_options)).replace("_", "-")
        raise ConfigError(flag, traffic_options[next(iter(traffic_options))],
                          "makes synthetic traffic; it does not go with --trace")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError("--out", out, "is a file; give a directory (it is made if missing)")
    traffic = read_trace(trace) if trace is not None else synthetic(seed=seed, **traffic_options)
    report = simulate(traffic, endpoints, schedulers, events, seed=seed,
                      affinity_timeout=affinity_timeout or DEFAULT_AFFINITY_TIMEOUT, progress=ProgressBar(stderr))
    written = [os.path.join(out, "report.json")]
    try:
        os.makedirs(out, exist_ok=True)
        with open(written[0], "w", encoding="utf-8") as file:
            json.dump(report, file)
    except OSError as error:
        raise ConfigError("--out", out, f"cannot be written: {error.strerror}") from None
    try:
        import matplotlib  # noqa: F401  (the lbcore[plot] extra)
    except ImportError:
        drawn = False
    else:
        from . import plots

        written += plots.draw(report, out)
        drawn = True
    stdout.write(summary_table(report))
    stderr.write(f"lbcore: wrote {', '.join(written)}\n")
    if not drawn:
        stderr.write(f"lbcore: note: {PLOT_HINT}\n")
    return 0
