"""Docs where users look: `help()` on every class a normal install exports shows the real
docstring (what it does, its cost, an example that runs), the same in both twins."""

from __future__ import annotations

import doctest
import inspect
import random
import sys
import typing

import pytest

import lbcore
from lbcore import balancers
from lbcore._twins import twin_namespace

SCHEDULER_CLASSES = [
    name for name in balancers.__all__
    if isinstance(getattr(balancers, name), type) and name != "Balancer"
]


def _text(cls: type) -> str:
    """The docstring as help() shows it, without the signature line the compiled twin's
    build puts first (embedsignature)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    first, _, rest = doc.partition("\n\n")
    return inspect.cleandoc(rest) if first.startswith(f"{cls.__name__}(") else doc


def test_every_scheduler_class_is_exported():
    assert set(SCHEDULER_CLASSES) >= {
        "RoundRobin", "WeightedRoundRobin", "LeastConnection", "WeightedLeastConnection",
        "DestinationHash", "SourceHash", "Maglev", "LeastRequest", "RingHash", "Affinity",
    }


@pytest.mark.parametrize("name", SCHEDULER_CLASSES)
def test_exported_class_documents_itself(name):
    cls = getattr(lbcore, name)
    text = _text(cls)
    assert "see lbcore." not in text, f"{name}: a pointer, not documentation"
    assert ">>>" in text, f"{name}: no example"
    assert "O(" in text, f"{name}: says nothing of its cost"
    # The example runs against the class itself, whichever twin this install selected.
    globs = {name: cls, "random": random, "Endpoint": lbcore.Endpoint}
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(cls, name, globs=globs):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0, f"{name}: {runner.failures} of {runner.tries} failed"


@pytest.mark.parametrize("name", SCHEDULER_CLASSES)
def test_both_twins_carry_the_same_docstring(name, both):
    pure, compiled = both
    assert _text(getattr(compiled, name)) == _text(getattr(pure, name))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is 3.11's")
def test_make_balancer_is_typed_per_scheduler_name():
    returns = {}
    for overload in typing.get_overloads(balancers.make_balancer):
        hints = typing.get_type_hints(overload, vars(balancers))
        scheduler = hints["scheduler"]
        if typing.get_origin(scheduler) is typing.Literal:
            (literal,) = typing.get_args(scheduler)
            returns[literal] = hints["return"].__name__
    assert returns == {
        "rr": "RoundRobin", "wrr": "WeightedRoundRobin", "lc": "LeastConnection",
        "wlc": "WeightedLeastConnection", "dh": "DestinationHash", "sh": "SourceHash",
        "mh": "Maglev", "p2c": "LeastRequest", "ring": "RingHash",
    }
    assert set(returns) == set(lbcore.SCHEDULERS)
