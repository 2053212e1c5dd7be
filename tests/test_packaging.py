"""Packaging: the top-level conf/ ships in the wheel as ``accelopt.conf``, so an installed copy
trains from any folder; a checkout reads its own conf/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from accelopt.train import CONFIG_DIR

from .conftest import CONF_DIR, ROOT

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]


def test_a_checkout_reads_its_own_config_tree() -> None:
    # not an installed copy, and not the tree of the checkout an editable install points at
    assert Path(CONFIG_DIR) == CONF_DIR
    assert (CONF_DIR / "train.yaml").is_file()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip wheel .`` builds, from a copy of the checkout (the build writes beside it)."""
    # offline: the build backend must already be installed (venvs of Python >= 3.12 lack it)
    pytest.importorskip("setuptools", minversion="64", reason="building the wheel needs setuptools")
    src = tmp_path_factory.mktemp("checkout")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("src", "conf"):
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    build = [*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out)]
    done = subprocess.run([*build, str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (whl,) = out.glob("accelopt-*.whl")
    return whl


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_every_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    yaml = {f"accelopt/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    expected = ["train.yaml", "eval.yaml", "optimizer/gose.yaml", "hydra/launcher/slurm.yaml"]
    assert {f"accelopt/conf/{name}" for name in expected} <= yaml
    assert {n for n in names if n.endswith(".yaml")} == yaml
    modules = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src").rglob("*.py")}
    assert {n for n in names if n.endswith(".py")} == modules | {"accelopt/conf/__init__.py"}


@pytest.mark.slow
def test_the_installed_wheel_trains_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    install = [*PIP, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    elsewhere.mkdir()
    # -S: no site processing, so no .pth (the editable install's) can put a checkout on sys.path;
    # the dependencies come from this interpreter's site-packages, put on PYTHONPATH by hand
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *deps])}
    python = [sys.executable, "-S"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*python, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
        )

    probe = run("-c", "import accelopt.conf; print(accelopt.conf.__file__)")
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert Path(probe.stdout.strip()).parent == target / "accelopt" / "conf"
    args = ["debug=fast", "dataset=synthetic", "logger=none", "hardware.num_threads=1"]
    trained = run("-m", "accelopt.train", *args)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (record,) = (elsewhere / "outputs" / "runs").glob("*/metrics.json")  # the default run folder
    data = json.loads(record.read_text())
    assert data["status"] == "completed" and data["config_groups"]["debug"] == "fast"
    assert data["dataset"] == "synthetic"
