"""The house rules over ``src/``, parsed with ``ast``: file and function sizes, public Lightning API.

- No file of 400 lines or more; no function (or method) over 60 lines, counted from its ``def``
  line to its last line, docstring included (decorators not counted).
- No private Lightning attribute: no ``_name`` attribute read off a trainer (``trainer._x``,
  ``self.trainer._x``, ``pl_module.trainer.fit_loop._x``: any attribute chain through a name or
  attribute called ``trainer``), no attribute named like one of Lightning's private internals
  (``PRIVATE_LIGHTNING``, e.g. a LightningModule's ``self._trainer``) on any object, the same
  through ``getattr``/``hasattr``/``setattr`` with a string, and no ``_name`` imported from a
  ``lightning`` module.

The import graph (no cycle, the torch-only layers) is tested in tests/test_optim_imports.py.
Each checker is also run on a small source that breaks its rule, so the guards can fail.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FILE_LINES = 400  # a file must be shorter than this
MAX_FUNCTION_LINES = 60

# files and functions allowed past the limits for now (none)
LONG_FILES: set[str] = set()
LONG_FUNCTIONS: set[str] = set()

# Lightning internals reached through other objects than a trainer (connectors, loop results)
PRIVATE_LIGHTNING = {
    "_trainer",  # LightningModule/DataModule's backing field of the public ``trainer``
    "_accelerator_connector",
    "_callback_connector",
    "_checkpoint_connector",
    "_data_connector",
    "_logger_connector",
    "_signal_connector",
    "_results",
    "_active_loop",
    "_evaluation_loop",
    "_predict_loop",
    "_current_fx_name",
    "_fabric",
    "_lightning_module",
}
LIGHTNING_MODULES = ("lightning", "pytorch_lightning", "lightning_fabric")


def sources(src: Path = SRC) -> dict[str, Path]:
    """``{path relative to src, as posix: file}`` for every Python file under ``src``."""
    return {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*.py"))}


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def long_files(src: Path = SRC) -> dict[str, int]:
    """``{file: lines}`` of the files of ``MAX_FILE_LINES`` lines or more."""
    counts = {rel: line_count(path) for rel, path in sources(src).items()}
    return {rel: n for rel, n in counts.items() if n >= MAX_FILE_LINES}


def function_lengths(path: Path) -> dict[str, int]:
    """``{qualified name: lines}`` of every function and method in ``path`` (nested ones too)."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), str(path)), "")
    return out


def long_functions(src: Path = SRC) -> dict[str, int]:
    """``{file::function: lines}`` of the functions over ``MAX_FUNCTION_LINES`` lines."""
    return {
        f"{rel}::{name}": n
        for rel, path in sources(src).items()
        for name, n in function_lengths(path).items()
        if n > MAX_FUNCTION_LINES
    }


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _chain(node: ast.expr) -> list[str]:
    """The names along an attribute chain: ``self.trainer.fit_loop`` -> self, trainer, fit_loop."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return names[::-1]


def _private_access(obj: ast.expr, attr: str) -> bool:
    """Whether ``obj.attr`` is a private Lightning attribute."""
    return _is_private(attr) and (attr in PRIVATE_LIGHTNING or "trainer" in _chain(obj))


def private_lightning(path: Path) -> list[str]:
    """``line: code`` of each private Lightning attribute or import in ``path``."""
    text = path.read_text()
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        bad = False
        if isinstance(node, ast.Attribute):
            bad = _private_access(node.value, node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            bad = _private_access(node.args[0], node.args[1].value)
        elif isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            bad = parts[0] in LIGHTNING_MODULES and (
                any(_is_private(p) for p in parts) or any(_is_private(a.name) for a in node.names)
            )
        if bad:
            found.append(f"{node.lineno}: {ast.get_source_segment(text, node)}")
    return found


def test_no_file_reaches_400_lines() -> None:
    assert set(long_files()) <= LONG_FILES, long_files()


def test_the_training_entry_point_is_at_most_150_lines() -> None:
    assert line_count(SRC / "accelopt" / "train.py") <= 150  # compose, build, fit, finalise


def test_no_function_is_over_60_lines() -> None:
    assert set(long_functions()) <= LONG_FUNCTIONS, long_functions()


def stale(allowed: set[str], offenders: dict[str, int]) -> set[str]:
    """The allow-listed names that are not (or no longer) offenders: gone or within the limit."""
    return allowed - set(offenders)


def test_the_allow_lists_name_only_real_offenders() -> None:
    """Fails once an allow-listed file or function is split or gone: then empty its entry."""
    assert stale(LONG_FILES, long_files()) == set()
    assert stale(LONG_FUNCTIONS, long_functions()) == set()


def test_no_private_lightning_attribute_in_src() -> None:
    found = {rel: hits for rel, path in sources().items() if (hits := private_lightning(path))}
    assert found == {}


def _write(tmp_path: Path, rel: str, text: str) -> Path:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_size_checks_see_a_long_file_and_a_long_method(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(59))
    method = f"class A:\n    def f(self):\n        '''doc'''\n{body.replace('    ', '        ')}"
    _write(tmp_path, "pkg/short.py", f"def g():\n{body}")  # 60 lines: at the limit
    _write(tmp_path, "pkg/method.py", method)  # f: 60 lines + the docstring's
    _write(tmp_path, "pkg/long.py", "x = 1\n" * 400)
    _write(tmp_path, "pkg/ok.py", "x = 1\n" * 399)
    assert long_files(tmp_path) == {"pkg/long.py": 400}
    assert long_functions(tmp_path) == {"pkg/method.py::A.f": 61}
    allowed = {"pkg/long.py", "pkg/ok.py", "pkg/gone.py"}
    assert stale(allowed, long_files(tmp_path)) == {"pkg/ok.py", "pkg/gone.py"}
    assert stale({"pkg/short.py::g"}, long_functions(tmp_path)) == {"pkg/short.py::g"}


@pytest.mark.parametrize(
    "code",
    [
        "trainer._signal_connector.register()",
        "self.trainer._logger_connector.should_update_logs",
        "pl_module.trainer.fit_loop.epoch_loop._batches_that_stepped",
        "x = self.lightning_trainer_like._accelerator_connector",  # a known internal, any object
        "from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector",
        "from lightning.pytorch.trainer import _private_helper",
        "connector = getattr(self._module.trainer, '_logger_connector', None)",
        "trainer = self._trainer",  # a LightningModule's field behind the public self.trainer
    ],
)
def test_the_lightning_check_sees_private_access(tmp_path: Path, code: str) -> None:
    assert len(private_lightning(_write(tmp_path, "m.py", code + "\n"))) == 1


def test_the_lightning_check_lets_public_api_and_own_privates_pass(tmp_path: Path) -> None:
    code = (
        "from lightning.pytorch.callbacks import Callback\n"
        "self._stop = trainer.global_step + trainer.fit_loop.epoch_loop.batch_progress.current\n"
        "self.trainer.__class__, pl_module._own_counter, cfg.trainer_name\n"
    )
    assert private_lightning(_write(tmp_path, "m.py", code)) == []


MARKERS = re.compile(r"^(<{7}|>{7}) ", re.M)  # "=======" alone is also a heading underline


def conflict_markers(root: Path) -> list[str]:
    """Tracked text files holding a merge-conflict marker line (``<<<<<<< ours``, ``>>>>>>> theirs``)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    found = []
    texts = {".py", ".md", ".yaml", ".toml", ".txt", ".cfg", ".sh"}
    for name in filter(None, listed):
        path = root / name
        if path.suffix not in texts or not path.is_file():
            continue
        if MARKERS.search(path.read_text(encoding="utf-8", errors="replace")):
            found.append(name)
    return found


def test_no_merge_conflict_marker_is_committed() -> None:
    root = SRC.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    assert conflict_markers(root) == []


def test_the_marker_check_sees_a_marker(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.md").write_text("text\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> b\n")
    (tmp_path / "b.md").write_text("a heading\n=======\n\n>>>>>>>not a marker\n")
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    assert conflict_markers(tmp_path) == ["a.md"]
