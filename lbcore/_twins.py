"""The one place that chooses between the twins: compiled (lbcore._fast) or pure (lbcore._pure).

Every compiled module lbcore/_fast/NAME.pyx has a pure-Python twin lbcore/_pure/NAME.py
with the same public names.  `twin` returns the compiled one unless
``LBCORE_NO_EXTENSIONS=1`` is set or the compiled twins are not built (a pure install,
or a checkout without build_ext).  The choice is made once, for every module, so a
process never mixes twins; nothing else in lbcore imports lbcore._fast or lbcore._pure.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType, SimpleNamespace

__all__ = ["NO_EXTENSIONS", "IMPLEMENTATION", "TWINNED", "twin", "pure_twin", "twin_namespace"]

NO_EXTENSIONS = bool(os.environ.get("LBCORE_NO_EXTENSIONS"))


def _compiled_twins_load() -> bool:
    if NO_EXTENSIONS:
        return False
    try:
        # Every compiled module cimports this one, and the build makes all or none.
        importlib.import_module("lbcore._fast.hashing")
    except ImportError:  # not built
        return False
    return True


#: ``"compiled"`` or ``"pure"``: the twins this process uses.
IMPLEMENTATION = "compiled" if _compiled_twins_load() else "pure"
_PACKAGE = "lbcore._fast" if IMPLEMENTATION == "compiled" else "lbcore._pure"


def twin(name: str) -> ModuleType:
    """The twin of module ``name`` this process uses (``twin("maglev").Maglev``)."""
    return importlib.import_module(f"{_PACKAGE}.{name}")


def pure_twin(name: str) -> ModuleType:
    """The pure-Python twin of ``name`` whichever twins are in use: for a compiled twin
    that hands a rare case to its reference rather than compiling it twice."""
    return importlib.import_module(f"lbcore._pure.{name}")


#: The twinned modules, by name: lbcore/_pure/NAME.py, each with lbcore/_fast/NAME.pyx.
TWINNED = tuple(sorted(
    module.name for module in pkgutil.iter_modules([os.path.join(os.path.dirname(__file__), "_pure")])
))


def twin_namespace(kind: str) -> SimpleNamespace:
    """Every public name of one kind of twin, ``"pure"`` or ``"compiled"``, in one
    namespace, so tests and benchmarks hold both side by side (``ImportError`` if that
    kind is not built).  The library itself only asks for `twin`."""
    package = {"pure": "lbcore._pure", "compiled": "lbcore._fast"}[kind]
    names = {}
    for name in TWINNED:
        module = importlib.import_module(f"{package}.{name}")
        names.update((attr, getattr(module, attr)) for attr in module.__all__)
    return SimpleNamespace(__name__=package, **names)
