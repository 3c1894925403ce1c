"""No layer reaches up: the import graph of every module (.py, .pyx, .pxd) against the
layers of DESIGN.md ("The shape").

    0  errors, models, hashing (and lbcore._twins, the selector they use), and two
       helpers that import nothing above them: http_server (the forwarder's and the
       agent's HTTP endpoints) and _floor (the pick-cost floor of demo and bench/)
    1  the twins and what they share: lbcore._fast, lbcore._pure, lbcore._shared
    2  the balancers' public face: lbcore.balancers, lbcore/__init__
    3  health, render, forwarder, sources: none imports another, except forwarder -> health
    4  agent, simulate, cli, demo, __main__: what ties them together

A module may import its own layer or lower ones.  Compiled code sits in layer 1, so it
imports nothing above models, errors and hashing but the twins' own helpers.  And no
module imports another package's underscore names (a name private to its module).
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import lbcore

ROOT = Path(lbcore.__file__).parent

# (module prefix, layer), longest prefix first wins.
LAYERS = [
    ("lbcore.errors", 0), ("lbcore.models", 0), ("lbcore.hashing", 0), ("lbcore._twins", 0),
    ("lbcore._fast.hashing", 0), ("lbcore._pure.hashing", 0),
    ("lbcore.http_server", 0), ("lbcore._floor", 0),
    ("lbcore._fast", 1), ("lbcore._pure", 1), ("lbcore._shared", 1),
    ("lbcore.balancers", 2), ("lbcore", 2),
    ("lbcore.health", 3), ("lbcore.render", 3), ("lbcore.forwarder", 3), ("lbcore.sources", 3),
    ("lbcore.agent", 4), ("lbcore.simulate", 4), ("lbcore.cli", 4), ("lbcore.demo", 4),
    ("lbcore.__main__", 4),
]
# Layer 3 packages that may import one another: (importer, imported).
SIDEWAYS = {("lbcore.forwarder", "lbcore.health")}


def layer_of(module: str) -> tuple[int, str]:
    """(layer, the prefix that placed it) of a dotted module name inside lbcore."""
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best], best


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """(dotted name, is a package) of a source file under ``root``'s parent."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_module(dotted: str, root: Path) -> bool:
    base = root.parent.joinpath(*dotted.split("."))
    return base.is_dir() or any(base.with_suffix(s).exists() for s in (".py", ".pyx", ".pxd"))


_FROM = re.compile(r"^[ \t]*from[ \t]+([\w.]+)[ \t]+c?import[ \t]+(\([^)]*\)|[^\n#]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*c?import[ \t]+([\w., \t]+)", re.M)


def imports(path: Path, root: Path) -> list[tuple[str, str | None]]:
    """(module, name or None) for every import in a file; relative imports resolved."""
    found: list[tuple[str, str | None]] = []
    if path.suffix == ".py":
        module, is_package = module_name(path, root)
        package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found += [(base, alias.name) for alias in node.names]
        return found
    text = path.read_text()
    for match in _FROM.finditer(text):
        names = re.findall(r"\w+", match.group(2).split(" as ")[0] if "(" not in match.group(2)
                           else re.sub(r"\bas\s+\w+", "", match.group(2)))
        found += [(match.group(1), name) for name in names]
    for match in _IMPORT.finditer(text):
        found += [(name.split(" as ")[0].strip(), None) for name in match.group(1).split(",")]
    return found


def violations(root: Path) -> list[str]:
    """Every import in the tree under ``root`` that breaks a rule, as readable lines."""
    problems = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".py", ".pyx", ".pxd") or "__pycache__" in path.parts:
            continue
        module, _ = module_name(path, root)
        own_layer, own_prefix = layer_of(module)
        own_package = module if path.stem == "__init__" else module.rpartition(".")[0]
        for target, name in imports(path, root):
            if name is not None and _is_module(f"{target}.{name}", root):
                target, name = f"{target}.{name}", None
            if not (target == "lbcore" or target.startswith("lbcore.")):
                continue
            layer, prefix = layer_of(target)
            where = f"{path.relative_to(root.parent)}: imports {target}" + (f".{name}" if name else "")
            if layer > own_layer:
                problems.append(f"{where}: layer {own_layer} reaches up to layer {layer}")
            elif layer == own_layer == 3 and prefix != own_prefix and (own_prefix, prefix) not in SIDEWAYS:
                problems.append(f"{where}: {own_prefix} and {prefix} must not import each other")
            target_package = target.rpartition(".")[0]
            if name and name.startswith("_") and target_package != own_package:
                problems.append(f"{where}: an underscore name of another package")
    return problems


def test_no_module_imports_upward_sideways_or_anothers_private_names():
    assert violations(ROOT) == []


def test_the_check_sees_every_kind_of_violation(tmp_path):
    # The check itself must fail on wrong code: a small tree that breaks each rule once.
    pkg = tmp_path / "lbcore"
    for sub in ("_fast", "render", "forwarder", "sources", "health"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("def _helper(): pass\n")
    (pkg / "balancers.py").write_text("")
    (pkg / "cli.py").write_text("")
    (pkg / "_fast" / "rr.pyx").write_text("from lbcore.balancers import make_balancer\n")
    (pkg / "_fast" / "wrr.pxd").write_text("from lbcore.render cimport (\n    chains,\n)\n")
    (pkg / "render" / "nft.py").write_text("from ..forwarder import Forwarder\nfrom ..models import _helper\n")
    (pkg / "forwarder" / "tcp.py").write_text("from lbcore.health import Checker\nimport lbcore.cli\n")
    (pkg / "sources" / "etcd.py").write_text("from lbcore.models import Endpoint\n")
    found = violations(pkg)
    assert len(found) == 5, found
    assert any("_fast/rr.pyx" in p and "reaches up" in p for p in found)
    assert any("_fast/wrr.pxd" in p and "lbcore.render" in p for p in found)
    assert any("render/nft.py" in p and "must not import each other" in p for p in found)
    assert any("render/nft.py" in p and "underscore" in p for p in found)
    assert any("forwarder/tcp.py: imports lbcore.cli" in p for p in found)
