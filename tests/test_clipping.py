"""Gradient clipping the Lightning way (trainer.gradient_clip_*), in manual optimization."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from accelopt.config import ConfigError
from accelopt.models.module import ClassifierModule
from accelopt.optim import GOSE
from accelopt.train import train
from tests.conftest import compose_cfg, run_cli
from tests.test_schedulers import QUIET as _QUIET
from tests.test_schedulers import logged, quiet_trainer

QUIET = [*_QUIET, "trainer.max_epochs=1"]


class _FirstBatch(L.Callback):
    def __init__(self) -> None:
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch = tuple(t.clone() for t in batch) if self.batch is None else self.batch


def _first_step(tmp_path: Path, factory, val: float, algorithm: str):
    """(net before, net after one clipped step, the step's batch) through the real module."""
    cfg = compose_cfg(list(QUIET), tmp_path)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    before = copy.deepcopy(net)
    module = ClassifierModule(
        net, factory, num_classes=4, gradient_clip_val=val, gradient_clip_algorithm=algorithm
    )
    spy = _FirstBatch()
    trainer = quiet_trainer([spy], max_steps=1, limit_val_batches=0)
    trainer.fit(module, datamodule=instantiate(cfg.dataset, seed=1))
    assert spy.batch is not None
    return before, net, spy.batch


def _torch_reference(net: torch.nn.Module, batch, val: float, algorithm: str) -> float:
    """torch's SGD(momentum 0.9) on the gradient clipped by torch.nn.utils; the pre-clip norm."""
    x, y = batch
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()])
    if algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(net.parameters(), val)
    else:
        torch.nn.utils.clip_grad_value_(net.parameters(), val)
    torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9).step()
    return float(norm)


@pytest.mark.parametrize(
    ("name", "factory"),
    [
        ("heavyball", lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)),
        ("gose", lambda p: GOSE(p, lr=0.02, check="never")),  # NC machinery off: its base step
    ],
)
@pytest.mark.parametrize(("algorithm", "val"), [("norm", 0.5), ("value", 0.01)])
def test_first_step_is_torch_sgd_on_the_clipped_gradient(name, factory, algorithm, val, tmp_path):
    before, after, batch = _first_step(tmp_path, factory, val, algorithm)
    unclipped = copy.deepcopy(before)
    norm = _torch_reference(before, batch, val, algorithm)
    if algorithm == "norm":
        assert norm > val  # the clip is active on this step
    for ref, got in zip(before.parameters(), after.parameters(), strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    pairs = zip(after.parameters(), unclipped.parameters(), strict=True)
    moved = sum(float((a - b).norm() ** 2) for a, b in pairs) ** 0.5
    if algorithm == "norm":  # first heavy-ball step: θ₁ − θ₀ = −γ·clip(g), of length γ·0.5
        assert moved == pytest.approx(0.02 * val, rel=1e-4)


@pytest.mark.parametrize("name", ["heavyball", "gose", "adahessian"])
def test_pre_clip_norm_is_logged(name: str, tmp_path: Path):
    cfg = compose_cfg(
        [*QUIET, "callbacks=none", f"optimizer={name}", "++trainer.gradient_clip_val=0.5"],
        tmp_path,
    )
    assert train(cfg)["status"] == "completed"
    norms = [float(v) for v in logged(tmp_path, "train/grad_norm").values()]
    assert len(norms) == 14 and max(norms) > 0.5


def test_no_clip_no_grad_norm(tmp_path: Path):
    cfg = compose_cfg([*QUIET, "callbacks=none", "trainer.limit_train_batches=3"], tmp_path)
    train(cfg)
    assert logged(tmp_path, "train/grad_norm") == {}
    assert len(logged(tmp_path, "train/lr")) == 3


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        (["++trainer.gradient_clip_val=0"], "trainer.gradient_clip_val=0 is invalid"),
        (["++trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is invalid"),
        (
            ["++trainer.gradient_clip_val=1", "++trainer.gradient_clip_algorithm=max"],
            "trainer.gradient_clip_algorithm='max' is invalid; accepted: norm, value",
        ),
    ],
)
def test_bad_clip_is_one_line(overrides: list[str], phrase: str, tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        train(compose_cfg([*QUIET, *overrides], tmp_path))
    assert phrase in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow  # a subprocess: imports torch and Lightning afresh (~5-30 s on a shared CPU)
def test_cli_bad_clip_exits_2(tmp_path: Path):
    proc = run_cli([*QUIET, "++trainer.gradient_clip_algorithm=max"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trainer.gradient_clip_algorithm='max' is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr
