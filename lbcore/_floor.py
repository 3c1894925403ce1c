"""The floor a pick is measured against, in one place for ``lbcore demo`` and bench/.

The floor is one call of the builtin ``abs(k)`` on an int: the cheapest call Python can
make with one argument, which every compiled pick pays too.  A subject and the floor run
in the same loop shape, in alternation, round after round, and each round's ratio is
taken: a busy neighbour slows both alike, so the median ratio holds on a shared machine
where absolute nanoseconds do not.  Times are this process's CPU time, so time spent
descheduled is left out.
"""

from __future__ import annotations

import statistics
import time
from itertools import repeat
from typing import Any, Callable, NamedTuple

__all__ = ["FLOOR_KEY", "Cost", "call_loop", "pair_loop", "floor_loop", "per_call"]

#: The int the floor call takes: abs(FLOOR_KEY).
FLOOR_KEY = -12345

Loop = Callable[[int], None]


_NO_ARG = object()


def call_loop(call: Callable[..., Any], arg: Any = _NO_ARG) -> Loop:
    """A loop of ``n`` calls ``call(arg)`` (``call()`` without ``arg``), bound to locals:
    the leanest loop Python runs."""
    if arg is _NO_ARG:
        def run_bare(n: int, call: Callable[[], Any] = call) -> None:
            for _ in repeat(None, n):
                call()
        return run_bare

    def run(n: int, call: Callable[[Any], Any] = call, arg: Any = arg) -> None:
        for _ in repeat(None, n):
            call(arg)
    return run


def pair_loop(pick: Callable[[Any], Any], release: Callable[[Any], Any], arg: Any) -> Loop:
    """A loop of ``n`` ``release(pick(arg))``: what lc/wlc/p2c pay per connection."""
    def run(n: int, pick: Callable[[Any], Any] = pick, release: Callable[[Any], Any] = release,
            arg: Any = arg) -> None:
        for _ in repeat(None, n):
            release(pick(arg))
    return run


def floor_loop() -> Loop:
    """The floor's loop: ``abs(FLOOR_KEY)`` in the same shape as `call_loop`."""
    return call_loop(abs, FLOOR_KEY)


class Cost(NamedTuple):
    """A subject's cost against a reference (the floor unless another is given), from
    rounds timed in alternation."""

    ns: float        # median nanoseconds per iteration of the subject
    floor_ns: float  # median nanoseconds per iteration of the reference
    ratio: float     # median over rounds of subject ns / reference ns
    rounds: list     # every round: (subject seconds, reference seconds)


def per_call(subject: Loop, *, calls: int = 100_000, rounds: int = 15,
             reference: Loop | None = None, reference_calls: int | None = None,
             timer: Callable[[], float] = time.process_time) -> Cost:
    """Time ``subject(calls)`` and the floor's loop (or ``reference(reference_calls)``, a
    peer such as another library) in alternation, ``rounds`` times each."""
    other = floor_loop() if reference is None else reference
    other_calls = calls if reference_calls is None else reference_calls
    subject(max(1, calls // 10))
    other(max(1, other_calls // 10))  # warm both up
    taken = []
    for _ in range(rounds):
        start = timer()
        subject(calls)
        middle = timer()
        other(other_calls)
        taken.append((middle - start, timer() - middle))
    per_subject = [s / calls * 1e9 for s, _ in taken]
    per_other = [o / other_calls * 1e9 for _, o in taken]
    return Cost(
        ns=statistics.median(per_subject),
        floor_ns=statistics.median(per_other),
        ratio=statistics.median(s / o for s, o in zip(per_subject, per_other) if o > 0),
        rounds=taken,
    )
