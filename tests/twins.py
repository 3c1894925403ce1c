"""Helpers for tests that hold the two twins of a balancer side by side."""

from __future__ import annotations

import random
import types
from array import array
from typing import Any, Callable, Iterator

from lbcore import Endpoint, NoEndpointsError
from lbcore._twins import twin_namespace


def twin_modules() -> Iterator[types.SimpleNamespace]:
    """The pure twin, then the compiled one if it is built (for tests outside the fixtures)."""
    yield twin_namespace("pure")
    try:
        yield twin_namespace("compiled")
    except ImportError:
        return


def outcome(call: Callable[[], Any], *errors: type[Exception]) -> Any:
    """What ``call()`` gave, to compare across twins: its result (an array as a list),
    or the type and message of a NoEndpointsError or one of ``errors``."""
    try:
        result = call()
    except (NoEndpointsError, *errors) as error:
        return type(error).__name__, str(error)
    return list(result) if isinstance(result, array) else result


def assert_twins_agree(
    a: Any,
    b: Any,
    rng: random.Random,
    random_endpoints: Callable[[random.Random], list[Endpoint]],
    steps: int,
) -> None:
    """Drive both twins through the same seeded random updates, marks and picks.

    Every pick (or its NoEndpointsError) and every pick_many must be identical, and both
    twins pass their _check() after every step.
    """
    endpoints = list(a.endpoints)
    for _ in range(steps):
        op = rng.random()
        if op < 0.06:
            endpoints = random_endpoints(rng)
            a.update(endpoints)
            b.update(endpoints)
        elif op < 0.12 and endpoints:
            target = rng.choice(endpoints)
            mark = rng.choice(["mark_failed", "mark_healthy"])
            getattr(a, mark)(target)
            getattr(b, mark)(target)
        elif op < 0.2:
            keys = list(range(rng.randrange(5)))
            assert outcome(lambda: a.pick_many(keys)) == outcome(lambda: b.pick_many(keys))
        else:
            assert outcome(a.pick) == outcome(b.pick)
        a._check()
        b._check()
