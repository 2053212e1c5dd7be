"""src/accelopt's import graph, parsed with ``ast``: no cycles, torch-only layers on a stdlib-only base.

Every ``import`` / ``from ... import`` counts, at any depth (module level, inside functions and
classes, and under ``if TYPE_CHECKING:``): a function-level import is still a dependency (it only
moves the failure from import time to call time), and a ``TYPE_CHECKING`` one still couples the
modules for a reader. ``from pkg import name`` counts as an edge to ``pkg.name`` when that is a
module, else to ``pkg``. An import of a package counts as an edge to its ``__init__``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "accelopt"
TORCH_ONLY = ("accelopt.curvature", "accelopt.optim")
# the shared base: the error type and the value checks, standard library only, so every layer
# (the torch-only ones included) may raise ConfigError and use the same checks
STDLIB_ONLY = ("accelopt.errors", "accelopt.checks")
# layers, lowest first: a module may import its own layer or a lower one
LAYERS = (*STDLIB_ONLY, "accelopt.curvature", "accelopt.optim")
# the whole package in the bands of docs/architecture.md ("Layers"), lowest first: a module
# imports its own band or a lower one, and every module is in one
BANDS = (
    ("accelopt.errors", "accelopt.checks", "accelopt.confdir", "accelopt.fileio"),
    ("accelopt.curvature",),
    ("accelopt.optim",),
    (
        "accelopt.models",
        "accelopt.data",
        "accelopt.monitor",
        "accelopt.optim_protocol",
        "accelopt.schedules",
        "accelopt.targets",
        "accelopt.variant",
    ),
    ("accelopt.run", "accelopt.config", "accelopt.analysis"),
    ("accelopt.train", "accelopt.eval", "accelopt.cli", "accelopt.schema", "accelopt.report"),
)


def modules(src: Path = SRC) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package under ``src``."""
    out = {}
    for path in (src / PACKAGE).rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module name ``name`` (at ``path``) imports, absolute, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return out


def graph(src: Path = SRC) -> dict[str, set[str]]:
    """The package's internal import graph, plus the external top-level names under ``"ext:"``."""
    mods = modules(src)
    known = set(mods)
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for dep in imported(name, path, known):
            if dep in known:
                deps.add(dep)
            elif dep.split(".")[0] != PACKAGE:
                deps.add("ext:" + dep.split(".")[0])
        out[name] = deps - {name}
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def _layer(name: str) -> int | None:
    return next(
        (i for i, top in enumerate(LAYERS) if name == top or name.startswith(top + ".")), None
    )


def test_the_package_has_no_import_cycle() -> None:
    g = graph()
    assert len(g) > 30 and "accelopt.optim.nc" in g["accelopt.optim.methods"]
    assert cycles(g) == []


def layer_violations(g: dict[str, set[str]]) -> dict[str, list[str]]:
    """``{module: [bad imports]}``: in the torch-only layers, anything but torch, the stdlib and
    a module of the same or a lower layer; in the stdlib-only base, torch too."""
    stdlib = {"ext:__future__", *(f"ext:{m}" for m in sys.stdlib_module_names)}
    bad = {}
    for name, deps in g.items():
        layer = _layer(name)
        if layer is None:
            continue
        allowed = stdlib if layer < len(STDLIB_ONLY) else stdlib | {"ext:torch"}
        wrong = {d for d in deps if d.startswith("ext:") and d not in allowed}
        internal = {d for d in deps if not d.startswith("ext:")}
        wrong |= {d for d in internal if _layer(d) is None or _layer(d) > layer}  # type: ignore[operator]
        if wrong:
            bad[name] = sorted(wrong)
    return bad


def test_curvature_and_optim_import_only_torch_the_stdlib_and_lower_layers() -> None:
    assert layer_violations(graph()) == {}


def test_the_layer_check_refuses_an_upward_or_foreign_import() -> None:
    g = {
        "accelopt.curvature.a": {"ext:torch", "accelopt.optim.b"},  # upward
        "accelopt.optim.b": {"accelopt.curvature.a", "ext:math", "ext:numpy"},  # numpy: foreign
        "accelopt.optim.c": {"accelopt.train"},  # a module above the layers
        "accelopt.optim.d": {"accelopt.checks", "accelopt.errors"},  # the base: allowed
        "accelopt.checks": {"ext:torch", "accelopt.errors"},  # torch: not in the base
        "accelopt.errors": {"accelopt.checks"},  # upward inside the base
        "accelopt.train": {"ext:hydra"},
    }
    assert layer_violations(g) == {
        "accelopt.curvature.a": ["accelopt.optim.b"],
        "accelopt.optim.b": ["ext:numpy"],
        "accelopt.optim.c": ["accelopt.train"],
        "accelopt.checks": ["ext:torch"],
        "accelopt.errors": ["accelopt.checks"],
    }


def _band(name: str) -> int | None:
    if name == PACKAGE:
        return 0  # the package's own __init__ (it imports nothing)
    return next(
        (
            i
            for i, tops in enumerate(BANDS)
            for top in tops
            if name == top or name.startswith(top + ".")
        ),
        None,
    )


def band_violations(g: dict[str, set[str]]) -> dict[str, list[str]]:
    """``{module: [problems]}``: a module in no band, or an import of a higher band's module."""
    bad = {}
    for name, deps in g.items():
        own = _band(name)
        if own is None:
            bad[name] = ["in no band"]
            continue
        internal = (d for d in deps if not d.startswith("ext:"))
        wrong = sorted(d for d in internal if _band(d) is None or _band(d) > own)  # type: ignore[operator]
        if wrong:
            bad[name] = wrong
    return bad


def test_every_module_imports_only_its_own_band_or_a_lower_one() -> None:
    assert band_violations(graph()) == {}


def test_the_band_check_sees_an_upward_import_and_a_module_in_no_band() -> None:
    g = {
        "accelopt.run.x": {"accelopt.train", "accelopt.optim.nc", "ext:torch"},  # train: upward
        "accelopt.optim.nc": {"accelopt.checks"},
        "accelopt.new": {"accelopt.checks"},  # placed nowhere
        "accelopt.optim_protocol": {"accelopt.optim"},  # not a submodule of accelopt.optim
    }
    assert band_violations(g) == {
        "accelopt.run.x": ["accelopt.train"],
        "accelopt.new": ["in no band"],
    }


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    "files",
    [
        # a function-level import closing the circle
        {
            "__init__.py": "",
            "a.py": "import accelopt.b\n",
            "b.py": "def f():\n    import accelopt.a\n",
        },
        # a TYPE_CHECKING import, relative, through a package __init__
        {
            "__init__.py": "",
            "p/__init__.py": "from .x import X\n",
            "p/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..q import y\n",
            "q.py": "from accelopt.p import X\n",
        },
    ],
)
def test_the_cycle_finder_sees_function_level_and_type_checking_imports(
    tmp_path: Path, files: dict[str, str]
) -> None:
    g = graph(_write(tmp_path, files))
    assert len(cycles(g)) == 1


def test_the_layer_check_sees_a_foreign_import(tmp_path: Path) -> None:
    g = graph(_write(tmp_path, {"__init__.py": "", "m.py": "def f():\n    import numpy\n"}))
    assert g["accelopt.m"] == {"ext:numpy"} and cycles(g) == []
