"""The build: compiled twins load where they should, and import lbcore stays cheap."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import lbcore
from lbcore import balancers
from twins import twin_modules


@pytest.mark.skipif(
    bool(os.environ.get("LBCORE_NO_EXTENSIONS")), reason="LBCORE_NO_EXTENSIONS=1: pure mode asked for"
)
def test_compiled_twins_loaded():
    # A normal install compiles lbcore/_fast; if it silently fell back to the pure twins,
    # every speed claim would be false.  This fails instead.
    import lbcore._fast as fast

    assert lbcore.IMPLEMENTATION == "compiled"
    assert fast.RoundRobin.__module__ == "lbcore._fast._rr"
    assert lbcore.RoundRobin is fast.RoundRobin
    assert lbcore.key_hash is fast.key_hash
    # Every balancer lbcore.balancers exports is the compiled one, not only rr.
    for name in balancers.__all__:
        if name in fast.__all__:
            assert getattr(balancers, name) is getattr(fast, name), name
            assert getattr(fast, name).__module__.startswith("lbcore._fast."), name
    # The forwarder's steady-state copier too (its keep-alive figure rests on it).
    from lbcore.forwarder import tcp

    assert tcp.Copier.__module__ == "lbcore._fast._copier"


@pytest.mark.skipif(not os.environ.get("LBCORE_NO_EXTENSIONS"), reason="only in pure mode")
def test_no_extensions_selects_pure_twins():
    import lbcore._pure as pure

    assert lbcore.IMPLEMENTATION == "pure"
    assert lbcore.RoundRobin is pure.RoundRobin
    assert lbcore.key_hash is pure.key_hash
    from lbcore.forwarder import tcp

    assert tcp.Copier.__module__ == "lbcore.forwarder._copier_py"


def test_twin_namespaces_export_the_same_names():
    # lbcore.balancers picks names from one namespace or the other: they must match.
    import lbcore._pure as pure

    assert set(balancers.__all__) - {"IMPLEMENTATION", "make_balancer", "make_balancer_for"} <= set(
        pure.__all__
    )
    for twin in twin_modules():
        assert twin.__all__ == pure.__all__, twin.__name__
        for name in twin.__all__:
            assert callable(getattr(twin, name)), (twin.__name__, name)


def test_environment_variable_forces_pure_twins():
    code = "import lbcore; print(lbcore.IMPLEMENTATION, lbcore.RoundRobin.__module__)"
    env = dict(os.environ, LBCORE_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pure", "lbcore._rr_py"]


def test_import_is_cheap():
    # DESIGN: `import lbcore` loads no asyncio, no YAML and no renderer.
    code = (
        "import sys, lbcore\n"
        "heavy = [m for m in ('asyncio', 'yaml', 'lbcore.render', 'lbcore.forwarder') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_typing_files_ship():
    package = os.path.dirname(lbcore.__file__)
    assert os.path.exists(os.path.join(package, "py.typed"))
    pyx = [f for f in os.listdir(os.path.join(package, "_fast")) if f.endswith(".pyx")]
    assert pyx
    for name in pyx:
        assert os.path.exists(os.path.join(package, "_fast", name[:-4] + ".pyi")), name
