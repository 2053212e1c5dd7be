"""Each experiment config composes, and its sweep expands to the expected jobs."""

import itertools
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from .conftest import CONF_DIR, compose_cfg

METHODS = [
    "heavyball",
    "agd",
    "gose_original",
    "ancm_original",
    "combined_original",
    "gose",
    "ancm",
    "combined",
]
EXPECTED = {
    # name: (dataset, lr values, seeds)
    "original_mnist": ("mnist", [0.02], [1, 2]),
    "original_cifar10": ("cifar10", [0.03], [1, 2, 3]),
    "lr_robustness_mnist": ("mnist", [0.2, 0.02, 0.002, 0.0002], [1, 2]),
    "lr_robustness_cifar10": ("cifar10", [0.3, 0.03, 0.003, 0.0003], [1, 2, 3]),
}


ZOO = ["adahessian", "sophiah", "gose", "heavyball", "agd", "adamw", "lion", "sgd_schedulefree"]


def test_every_experiment_file_is_covered():
    found = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
    assert found == sorted([*EXPECTED, "optimizer_zoo_mnist", *TIMED])


def test_optimizer_zoo_runs_each_optimizer_at_its_own_lr(tmp_path: Path):
    """experiment=optimizer_zoo_mnist: 8 optimizers x 2 seeds, each at its own config's lr,
    warm-up + cosine, 6 epochs, a validation split (time-to-target), MNIST."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        full = compose(
            "train", overrides=["experiment=optimizer_zoo_mnist"], return_hydra_config=True
        )
    jobs = expand(dict(full.hydra.sweeper.params))
    assert sorted(j["optimizer"] for j in jobs if j["seed"] == "1") == sorted(ZOO)
    assert sorted({int(j["seed"]) for j in jobs}) == [1, 2]
    for name in ("adahessian", "lion", "gose"):
        cfg = compose_cfg(["experiment=optimizer_zoo_mnist", f"optimizer={name}"], tmp_path)
        own = compose_cfg([f"optimizer={name}"], tmp_path)
        assert cfg.optimizer.lr == own.optimizer.lr  # the optimizer's own default lr
        assert cfg.scheduler.name == "warmup_cosine" and cfg.trainer.max_epochs == 6
        assert cfg.dataset.name == "mnist" and cfg.dataset.val_size == 5000


def expand(params: dict) -> list[dict]:
    """The jobs Hydra's basic sweeper makes from hydra.sweeper.params (cartesian product)."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    axes = [[(o.key_or_group, v) for v in o.sweep_string_iterator()] for o in parsed]
    return [dict(job) for job in itertools.product(*axes)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_experiment_composes_and_expands(name: str, tmp_path: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        full = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
    jobs = expand(dict(full.hydra.sweeper.params))
    dataset, lrs, seeds = EXPECTED[name]
    assert len(jobs) == len(METHODS) * len(lrs) * len(seeds)
    assert sorted({j["optimizer"] for j in jobs}) == sorted(METHODS)
    assert sorted({int(j["seed"]) for j in jobs}) == seeds
    # every job composes to the report's setup
    for job in jobs[:: max(1, len(jobs) // 8)]:
        overrides = [f"experiment={name}", *(f"{k}={v}" for k, v in job.items())]
        cfg = compose_cfg(overrides, tmp_path)
        assert cfg.dataset.name == dataset and cfg.dataset.val_size == 0
        assert cfg.dataset.batch_size == 128 and cfg.trainer.max_epochs == 6
        assert cfg.optimizer.lr in lrs
        if len(lrs) == 1:
            assert cfg.optimizer.lr == lrs[0]


# experiment: (dataset, training images after the validation split, evaluations per epoch)
TIMED = {
    "time_to_target_mnist": ("mnist", 55_000, 10),
    "time_to_target_cifar10": ("cifar10", 45_000, 11),
    "resnet20_cifar10": ("cifar10", 45_000, 4),
}
STUDY = ["heavyball", "agd", "gose", "ancm", "combined"]


@pytest.mark.parametrize("name", sorted(TIMED))
def test_timed_experiments_evaluate_evenly_within_the_epoch(name: str, tmp_path: Path):
    """val_check_interval divides the epoch's batches into the stated number of evaluations,
    validation is held out, and the data set's targets are on (time-to-target)."""
    dataset, n_train, evals = TIMED[name]
    cfg = compose_cfg([f"experiment={name}"], tmp_path)
    batches = -(-n_train // cfg.dataset.batch_size)  # the last partial batch is kept
    assert cfg.dataset.name == dataset and cfg.dataset.val_size == 5000
    assert batches // cfg.trainer.val_check_interval == evals
    assert batches % cfg.trainer.val_check_interval == 0
    assert cfg.targets == cfg.dataset.targets and cfg.targets


@pytest.mark.parametrize("name", ["time_to_target_mnist", "time_to_target_cifar10"])
def test_time_to_target_sweeps_the_five_study_methods(name: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        full = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
    jobs = expand(dict(full.hydra.sweeper.params))
    assert sorted(j["optimizer"] for j in jobs if j["seed"] == "1") == sorted(STUDY)
    seeds = {"time_to_target_mnist": 2, "time_to_target_cifar10": 3}[name]
    assert len(jobs) == seeds * len(STUDY)
    if name == "time_to_target_cifar10":  # seed-major: a sweep cut short has whole seeds
        assert [j["seed"] for j in jobs[: len(STUDY)]] == ["1"] * len(STUDY)


def test_resnet20_study_setup(tmp_path: Path):
    """ResNet-20 (BN), warm-up + cosine over 4 epochs, the curvature monitor twice an epoch."""
    cfg = compose_cfg(["experiment=resnet20_cifar10", "optimizer=gose"], tmp_path)
    assert cfg.model.depth == 20 and cfg.model.in_channels == 3
    assert cfg.scheduler.name == "warmup_cosine" and cfg.trainer.max_epochs == 4
    assert cfg.callbacks.curvature.every_n_steps == 2 * cfg.trainer.val_check_interval
