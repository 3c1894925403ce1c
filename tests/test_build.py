"""The build: compiled twins load where they should, and import lbcore stays cheap."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys

import pytest

import lbcore
from lbcore import balancers
from lbcore._twins import TWINNED, twin



def _selected() -> dict[str, object]:
    """Every name of every twinned module, as the selector hands it out."""
    return {
        f"{module}.{name}": getattr(twin(module), name)
        for module in TWINNED
        for name in twin(module).__all__
    }


@pytest.mark.skipif(
    bool(os.environ.get("LBCORE_NO_EXTENSIONS")), reason="LBCORE_NO_EXTENSIONS=1: pure mode asked for"
)
def test_compiled_twins_loaded():
    # A normal install compiles lbcore/_fast; if it silently fell back to the pure twins,
    # every speed claim would be false.  This fails instead, for every twinned name.
    assert lbcore.IMPLEMENTATION == "compiled"
    for where, value in _selected().items():
        if callable(value) and hasattr(value, "__module__") and value.__module__ != "typing":
            defined = value.__module__
            assert defined.startswith("lbcore._fast.") or defined == "lbcore._pure.iptables_chains", where
    # What users and the other layers hold is the compiled code too.
    assert lbcore.RoundRobin.__module__ == "lbcore._fast.rr"
    assert lbcore.key_hash is twin("hashing").key_hash
    for name in balancers.__all__:
        value = getattr(balancers, name)
        if isinstance(value, type):
            assert value.__module__.startswith("lbcore._fast."), name
    from lbcore.forwarder import poller, stream, tcp
    from lbcore.render import iptables

    assert tcp.Copier.__module__ == "lbcore._fast.copier"
    # A connection's set-up and end run compiled: the relay and its sockets' transport.
    assert tcp.Relay.__module__ == "lbcore._fast.relay"
    assert stream.Stream.__module__ == stream.dial.__module__ == "lbcore._fast.stream"
    assert poller.Poller.__module__ == "lbcore._fast.poller"
    loop = asyncio.new_event_loop()
    made = poller.make_poller(loop)  # what the forwarder watches its sockets with
    made.close()
    loop.close()
    assert type(made) is poller.Poller
    assert iptables.join_payload.__module__ == "lbcore._fast.iptables_chains"


@pytest.mark.skipif(not os.environ.get("LBCORE_NO_EXTENSIONS"), reason="only in pure mode")
def test_no_extensions_selects_pure_twins():
    assert lbcore.IMPLEMENTATION == "pure"
    for where, value in _selected().items():
        assert not getattr(value, "__module__", "").startswith("lbcore._fast"), where


def test_every_compiled_module_has_a_pure_twin_with_the_same_names():
    package = os.path.dirname(lbcore.__file__)
    fast = sorted(n[:-4] for n in os.listdir(os.path.join(package, "_fast")) if n.endswith(".pyx"))
    pure = sorted(
        n[:-3] for n in os.listdir(os.path.join(package, "_pure")) if n.endswith(".py") and n != "__init__.py"
    )
    assert fast == pure == list(TWINNED)
    for name in TWINNED:
        reference = importlib.import_module(f"lbcore._pure.{name}")
        # __all__ names every public thing the pure twin defines itself ...
        own = {
            attr for attr, value in vars(reference).items()
            if not attr.startswith("_") and getattr(value, "__module__", None) == reference.__name__
        }
        assert own <= set(reference.__all__), (name, own - set(reference.__all__))
        for attr in reference.__all__:
            assert hasattr(reference, attr), (name, attr)
        # ... and the compiled twin exports exactly those names.
        try:
            compiled = importlib.import_module(f"lbcore._fast.{name}")
        except ImportError:
            continue  # a pure build: test_compiled_twins_loaded says whether that is wrong
        assert sorted(compiled.__all__) == sorted(reference.__all__), name
        for attr in compiled.__all__:
            assert hasattr(compiled, attr), (name, attr)


def test_environment_variable_forces_pure_twins():
    code = "import lbcore; print(lbcore.IMPLEMENTATION, lbcore.RoundRobin.__module__)"
    env = dict(os.environ, LBCORE_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pure", "lbcore._pure.rr"]


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
