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


def call_loop(call: Callable[[Any], Any], arg: Any) -> Loop:
    """A loop of ``n`` calls ``call(arg)``, bound to locals: the leanest loop Python runs."""
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
    """A subject's cost against the floor, from rounds timed in alternation."""

    ns: float        # median nanoseconds per iteration of the subject
    floor_ns: float  # median nanoseconds per floor call
    ratio: float     # median over rounds of subject time / floor time
    rounds: list     # every round: (subject seconds, floor seconds) for ``calls`` iterations


def per_call(subject: Loop, *, calls: int = 100_000, rounds: int = 15,
             timer: Callable[[], float] = time.process_time) -> Cost:
    """Time ``subject(calls)`` and the floor's loop in alternation, ``rounds`` times each."""
    floor = floor_loop()
    subject(calls // 10)
    floor(calls // 10)  # warm both up
    taken = []
    for _ in range(rounds):
        start = timer()
        subject(calls)
        middle = timer()
        floor(calls)
        taken.append((middle - start, timer() - middle))
    return Cost(
        ns=statistics.median(s for s, _ in taken) / calls * 1e9,
        floor_ns=statistics.median(f for _, f in taken) / calls * 1e9,
        ratio=statistics.median(s / f for s, f in taken if f > 0),
        rounds=taken,
    )
