"""pytest-benchmark files: each session's figures become one committed record
(bench/_results.py), named after the file(s) that ran, with every benchmark's rounds."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import record  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    bench_session = getattr(session.config, "_benchmarksession", None)
    benchmarks = [b for b in getattr(bench_session, "benchmarks", []) if b.stats is not None] if bench_session else []
    extra = [b for b in getattr(bench_session, "benchmarks", []) if b.extra_info] if bench_session else []
    if not benchmarks and not extra:
        return
    files = sorted({os.path.basename(b.fullname.split("::")[0])[:-3] for b in benchmarks or extra})
    rounds = []
    summary = {}
    for b in benchmarks or extra:
        stats = b.stats
        entry = {"name": b.name, "extra_info": dict(b.extra_info)}
        if stats is not None and getattr(stats, "data", None):
            entry["seconds_per_round"] = list(stats.data)
            summary[b.name] = {"median_s": stats.median, "min_s": stats.min, "rounds": stats.rounds,
                               **dict(b.extra_info)}
        else:
            summary[b.name] = dict(b.extra_info)
        rounds.append(entry)
    record("-".join(files), rounds=rounds, summary=summary,
           command=" ".join(["python -m pytest", *session.config.invocation_params.args]))
