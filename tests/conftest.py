"""Fixtures shared by the suite: both twins of every balancer, side by side."""

from __future__ import annotations

import importlib
import types

import pytest


def _compiled() -> types.ModuleType | None:
    try:
        return importlib.import_module("lbcore._fast")
    except ImportError:
        return None


TWINS = ["pure", "compiled"]


@pytest.fixture(params=TWINS)
def impl(request: pytest.FixtureRequest) -> types.ModuleType:
    """The namespace of one twin: lbcore._pure or lbcore._fast (same names in both)."""
    if request.param == "pure":
        return importlib.import_module("lbcore._pure")
    compiled = _compiled()
    if compiled is None:
        pytest.skip("compiled twins not built (test_build.py fails if they should be)")
    return compiled


@pytest.fixture
def both() -> tuple[types.ModuleType, types.ModuleType]:
    """(pure, compiled) for differential tests."""
    compiled = _compiled()
    if compiled is None:
        pytest.skip("compiled twins not built (test_build.py fails if they should be)")
    return importlib.import_module("lbcore._pure"), compiled
