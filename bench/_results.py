"""Every benchmark run leaves a committed record: bench/results/NAME-YYYYmmdd-HHMMSS.json.

A record holds what a reader needs to trust or rerun a figure: the date, the machine
(host, CPU model, core count, kernel), the load average before and after, the git commit
and whether the tree was dirty, the exact command, every round, and the summary the
README quotes.  README.md and bench/README.md quote only figures found in such a file.

Scripts call `record`; the pytest-benchmark files get a record per session from
bench/conftest.py.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_STARTED_LOAD = os.getloadavg()


def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(RESULTS))
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def record(name: str, *, rounds: list[Any], summary: dict[str, Any], command: str | None = None,
           notes: str = "") -> str:
    """Write one run's record and return its path.

    ``rounds``: every round as measured (nothing dropped here; a script that drops a
    round by a rule written before measuring keeps it in ``rounds`` and says so in
    ``summary``).  ``summary``: the medians, ratios and targets the docs quote.
    """
    os.makedirs(RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS, f"{name}-{stamp}.json")
    document = {
        "name": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": machine(),
        "load_average": {"before": list(_STARTED_LOAD), "after": list(os.getloadavg())},
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "summary": summary,
        "rounds": rounds,
        "notes": notes,
    }
    with open(path, "w") as out:
        json.dump(document, out, indent=1, default=str)
        out.write("\n")
    print(f"bench: results in {os.path.relpath(path)}", file=sys.stderr)
    return path
