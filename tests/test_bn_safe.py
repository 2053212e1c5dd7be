"""BatchNorm-safe curvature: only the base step's minibatch forward moves a network's buffers.

The NC machinery (checks, Lanczos HVPs, verification, sign and acceptance batches, held-out
judgements) and the curvature monitor evaluate the network on extra batches. The reference here
is a *replay*: the parameters and the minibatch of every base forward are recorded during a run,
then a fresh copy of the initial network runs only those forwards, in order, on those
parameters. Its BatchNorm buffers must equal the trained network's bit for bit (same machine).
Each guard has a negative control: with the protection disabled the same comparison fails.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

import accelopt.models.module as module_mod
import accelopt.monitor as monitor_mod
from accelopt.curvature import HessianOperator, call_keeping_buffers
from accelopt.data import ClassificationDataModule
from accelopt.models import ReportCNN
from accelopt.models.module import ClassifierModule
from accelopt.monitor import CurvatureMonitor

from .conftest import compose_cfg

CL = torch.channels_last
STEPS = 14  # one epoch of the synthetic set: 448 training samples, batches of 32


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread (as ``hardware.num_threads=1`` in training runs), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bn_net() -> nn.Module:
    """conv-BN-ReLU-pool twice, then linear: 1×12×12 images, 4 classes."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 4),
    )  # fmt: skip


def gose(tmp: Path, *overrides: str) -> DictConfig:
    """The composed training config (``cfg.optimizer`` instantiates to a partial, as
    ``python -m accelopt.train`` builds it)."""
    # an NC phase at every even batch index, a search at each (check=always), and every
    # direction of negative curvature used (eps_h=0), so that NC steps really happen; the
    # search and verification batches smaller than the preset's 256 to keep the test fast
    return compose_cfg([
        "dataset=synthetic", "optimizer=gose", "optimizer/check=always", "optimizer.every=2",
        "+optimizer.eps_h=0.0", "+optimizer.search_batch=64", "+optimizer.max_hvps=5",
        "optimizer.verify_batch=64", *overrides,
    ], tmp / "cfg")  # fmt: skip


class Recording(ClassifierModule):
    """Records (parameters, input) at every base forward, i.e. every non-probe closure call."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.base_forwards: list[tuple[list[Tensor], Tensor]] = []

    def _closure(self, x: Tensor, y: Tensor, check: bool, keep_buffers: bool = False):
        closure = super()._closure(x, y, check, keep_buffers)
        if keep_buffers:
            return closure

        def recorded() -> Tensor:
            params = [p.detach().clone() for p in self.net.parameters()]
            self.base_forwards.append((params, self._input(x).clone()))
            return closure()

        return recorded


def fit(module: ClassifierModule, callbacks: list[L.Callback] = ()) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    dm = ClassificationDataModule(
        name="synthetic", source="synthetic", mean=[0.5], std=[0.25], image_size=12,
        num_classes=4, val_size=64, batch_size=32, eval_batch_size=64, synthetic_train=512,
        synthetic_test=64,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=STEPS, limit_val_batches=0, logger=False,
        callbacks=list(callbacks), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return trainer


def replay(initial: nn.Module, forwards: list[tuple[list[Tensor], Tensor]]) -> dict[str, Tensor]:
    """The buffers after running only ``forwards`` (parameters, input), in order, in train mode."""
    net = copy.deepcopy(initial).train()
    with torch.no_grad():
        for params, x in forwards:
            for p, q in zip(net.parameters(), params, strict=True):
                p.copy_(q)
            net(x)
    return dict(net.named_buffers())


def differing(net: nn.Module, ref: dict[str, Tensor]) -> list[str]:
    return [k for k, b in net.named_buffers() if not torch.equal(b, ref[k])]


def run_gose(tmp: Path, *overrides: str) -> tuple[Recording, dict[str, float], list[str]]:
    net = bn_net()
    initial = copy.deepcopy(net)
    module = Recording(net, instantiate(gose(tmp, *overrides).optimizer), num_classes=4)
    trainer = fit(module)
    counters = dict(trainer.optimizers[0].counters)
    return module, counters, differing(net, replay(initial, module.base_forwards))


@pytest.mark.parametrize("hvp_method", ["double_backward", "forward_over_reverse"])
def test_nc_work_leaves_batchnorm_buffers_to_the_base_forwards(
    tmp_path: Path, hvp_method: str
) -> None:
    module, c, diff = run_gose(
        tmp_path, f"optimizer.hvp_method={hvp_method}", "optimizer.heldout_batch=64"
    )
    assert c["checks"] == c["searches"] == STEPS // 2  # a search at every even batch index
    assert c["steps"] >= 2 and c["heldout_steps"] == c["steps"], c  # NC steps were taken
    assert len(module.base_forwards) == STEPS
    assert int(module.net[1].num_batches_tracked) == STEPS
    assert diff == []


def test_negative_control_unprotected_probes_change_the_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module_mod, "call_keeping_buffers", lambda net, x: net(x))
    module, c, diff = run_gose(tmp_path)
    assert c["searches"] == STEPS // 2 and c["steps"] >= 1
    assert int(module.net[1].num_batches_tracked) > STEPS
    assert "1.running_mean" in diff and "5.running_var" in diff


def test_probe_closures_match_the_plain_forward_bit_for_bit() -> None:
    net = bn_net()
    module = ClassifierModule(net, torch.optim.SGD, num_classes=4)
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 4, (16,))
    before = {k: b.clone() for k, b in net.named_buffers()}
    kept = HessianOperator(module._closure(x, y, check=False, keep_buffers=True), net.parameters())
    assert differing(net, before) == []
    plain = HessianOperator(module._closure(x, y, check=False), net.parameters())
    assert differing(net, before) != []  # the plain forward moves the statistics
    v = torch.randn(kept.dim, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kept.loss, plain.loss) and torch.equal(kept.grad, plain.grad)
    assert torch.equal(kept.matvec(v), plain.matvec(v))


def test_buffer_free_networks_take_the_plain_call() -> None:
    calls: list[str] = []
    net = nn.Linear(3, 2)
    net.register_forward_pre_hook(lambda m, a: calls.append("plain"))
    call_keeping_buffers(net, torch.randn(4, 3))
    assert calls == ["plain"] and list(net.named_buffers()) == []


def _fit_monitored(monitor: bool) -> nn.Module:
    net = bn_net()
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    mon = CurvatureMonitor(every_n_steps=3, probe_size=32, density_steps=3, noise_batches=4)
    fit(ClassifierModule(net, sgd, num_classes=4), [mon] if monitor else [])
    assert len(mon.records) == (5 if monitor else 0)
    return net


def test_curvature_monitor_leaves_buffers_and_training_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = _fit_monitored(False)
    ref_buffers = dict(ref.named_buffers())
    net = _fit_monitored(True)
    assert int(net[1].num_batches_tracked) == STEPS and differing(net, ref_buffers) == []
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
    # negative control: measuring in train mode on the real buffers moves the statistics
    monkeypatch.setattr(ClassifierModule, "eval", lambda self: self)
    monkeypatch.setattr(monitor_mod, "call_keeping_buffers", lambda m, x: m(x))
    assert differing(_fit_monitored(True), ref_buffers) != []


def test_heldout_judge_keeps_channels_last_weights(tmp_path: Path) -> None:
    cfg = gose(tmp_path, "optimizer.heldout_batch=64", "hardware.memory_format=channels_last")
    torch.manual_seed(0)
    net, opt = ReportCNN(1, 4, 12), instantiate(cfg.optimizer)
    module = ClassifierModule(net, opt, num_classes=4, memory_format=cfg.hardware.memory_format)
    c = fit(module).optimizers[0].counters
    assert c["heldout_steps"] >= 2, c  # the judge ran (and set the parameters back) each time
    weights = [p for p in module.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=CL) for p in weights)
    assert any(not p.is_contiguous() for p in weights)  # the formats differ for these shapes
