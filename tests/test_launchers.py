"""Hydra launchers (issue 6): the SLURM config composes into a valid submitit job; joblib sweeps run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from .conftest import CONF_DIR, FAST, run_cli

SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, its ``hydra`` node kept (launcher configs)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose("train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_slurm_launcher_config_composes() -> None:
    cfg = compose_with_hydra(
        ["hydra/launcher=slurm", "hardware=gpu", "hydra.launcher.partition=gpu"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SLURM_TARGET
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    assert cfg.hardware.accelerator == "gpu" and cfg.hardware.devices == 1
    assert launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1
    assert launcher.timeout_min > 0 and launcher.cpus_per_task >= 1 and launcher.mem_gb >= 1
    assert launcher.array_parallelism >= 1
    # submitit's files live under the sweep folder, one subfolder per SLURM job id
    folder = OmegaConf.to_container(launcher, resolve=False)["submitit_folder"]
    assert folder == "${hydra.sweep.dir}/.submitit/%j"


def test_slurm_launcher_keys_make_an_sbatch_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the launcher hands to submitit is accepted and becomes the expected #SBATCH lines."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import _make_sbatch_string

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that srun exists
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")

    cfg = compose_with_hydra(
        ["hydra/launcher=slurm", "hardware=gpu", "hydra.launcher.partition=gpu"]
    )
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    params.pop("_target_")
    # the mapping of SlurmLauncher.launch: base keys as they are, the others prefixed slurm_
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(cluster="slurm", folder=str(tmp_path / "%j"))
    executor.update_parameters(
        **{
            k if k in base else f"slurm_{k}": v
            for k, v in params.items()
            if k not in ("submitit_folder", "max_num_timeout")
        }
    )
    script = _make_sbatch_string(
        command="python -m accelopt.train", folder=str(tmp_path), **executor._executor.parameters
    )
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={params['cpus_per_task']}",
        f"#SBATCH --mem={params['mem_gb']}GB",
        f"#SBATCH --time={params['timeout_min']}",
    ):
        assert line in script, script


def test_joblib_multirun_runs_two_jobs_in_parallel(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *FAST,  # includes hardware.num_threads=1: 2 jobs x 1 thread on 2 cores
            "logger=none",
            "callbacks=none",
            "trainer.limit_train_batches=3",
            "seed=1,2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel" in proc.stdout + proc.stderr  # the joblib launcher ran the jobs
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert [(r["seed"], r["status"]) for r in records] == [(1, "completed"), (2, "completed")]
    assert all(r["stopped_at_step"] == 3 for r in records)
    assert records[0]["train_loss"]["value"] != records[1]["train_loss"]["value"]


def test_self_launching_ddp_is_refused_inside_a_multirun(tmp_path: Path) -> None:
    """Lightning would relaunch ``-m ...`` once per rank: a clear error instead."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from accelopt.config import ConfigError
    from accelopt.train import train

    cfg = compose_with_hydra([*FAST, "hardware=ddp_cpu", "logger=none"])
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.output_dir = cfg.output_dir
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        with pytest.raises(ConfigError, match="multirun"):
            train(cfg)
    finally:
        HydraConfig.instance().cfg = None  # the next test composes its own
