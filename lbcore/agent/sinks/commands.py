"""Running the kernel tools: one command line, its input on stdin, a timeout.

A `Runner` is any callable ``(argv, input, timeout) -> (returncode, stdout, stderr)``;
`local_runner` runs the command here.  `run` turns a failure into `ApplyError`.
"""

from __future__ import annotations

import subprocess
from typing import Callable, NamedTuple, Sequence

from ...errors import LbcoreError

__all__ = ["ApplyError", "Result", "Runner", "local_runner", "run"]

#: Seconds a kernel tool may take before the apply counts as failed.  A full
#: iptables-restore of 10,000 Services x 10 endpoints took 171 s here (render/iptables.py).
DEFAULT_TIMEOUT = 300.0


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], "str | None", float], Result]


class ApplyError(LbcoreError):
    """A kernel tool failed or timed out; the message names the command and says why."""


def local_runner(argv: Sequence[str], input: str | None, timeout: float) -> Result:
    """Run ``argv`` on this machine; a timeout kills it and raises `ApplyError`."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ApplyError(f"{' '.join(argv)}: no answer after {timeout:g} s; killed") from None
    except OSError as exc:
        raise ApplyError(f"{' '.join(argv)}: cannot run: {exc.strerror or exc}") from None
    return Result(done.returncode, done.stdout, done.stderr)


def run(runner: Runner, argv: Sequence[str], input: str | None = None, *,
        timeout: float = DEFAULT_TIMEOUT, stderr_fails: bool = False) -> str:
    """Run ``argv`` through ``runner``; its stdout, or `ApplyError` naming the command,
    its exit status and its first stderr lines.  ``stderr_fails``: any stderr output is
    a failure too (``ipvsadm -R`` exits with the status of its last line only)."""
    result = runner(argv, input, timeout)
    if result.returncode != 0 or (stderr_fails and result.stderr.strip()):
        lines = result.stderr.strip().splitlines()
        said = "; ".join(lines[:3]) + (f" (and {len(lines) - 3} more lines)" if len(lines) > 3 else "")
        raise ApplyError(f"{' '.join(argv)} exited with {result.returncode}: {said or 'no message'}")
    return result.stdout
