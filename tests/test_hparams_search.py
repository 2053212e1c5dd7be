"""hparams_search/*: Hydra's Optuna sweeper tunes the improved presets on validation accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from .conftest import CONF_DIR, FAST, run_cli

SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("name", SEARCHES)
def test_each_search_composes_with_the_optuna_sweeper_on_validation_accuracy(name: str) -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose("train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimizer.variant == "improved"  # only the improved presets are tuned
    assert cfg.dataset.val_size > 0  # the objective is validation accuracy: needs held-out data
    assert "optimizer.lr" in sweeper.params


@pytest.mark.slow
def test_a_small_optuna_sweep_runs_and_reports_the_best_validation_trial(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "hparams_search=gose_mnist",
            *FAST,
            "logger=none",
            "callbacks=none",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "optimizer.every=5",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(records) == 3 and all(r["status"] == "completed" for r in records)
    lrs = {r["lr"] for r in records}
    assert len(lrs) == 3 and all(0.005 <= lr <= 0.1 for lr in lrs)  # sampled, in range
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    val = [r["final"]["val/acc"] for r in records]
    assert math.isclose(best["best_value"], max(val))  # validation, not test accuracy
    assert set(best["best_params"]) >= {"optimizer.lr", "+optimizer.eps_h"}
