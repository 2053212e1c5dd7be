"""channels_last vs contiguous: the module converts net and inputs; results agree to tolerance."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from accelopt.curvature import HessianOperator
from accelopt.models import ReportCNN
from accelopt.models.module import ClassifierModule

CL = torch.channels_last


def _data(c: int, size: int, n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _pair(c: int = 1, size: int = 28) -> tuple[ClassifierModule, ClassifierModule]:
    torch.manual_seed(0)
    net = ReportCNN(c, 10, size)
    sgd = functools.partial(torch.optim.SGD, lr=0.02, momentum=0.9)
    plain = ClassifierModule(copy.deepcopy(net), sgd)
    last = ClassifierModule(copy.deepcopy(net), sgd, memory_format="channels_last")
    return plain, last


def test_bad_memory_format_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"memory_format='nhwc' is invalid; accepted: contiguous"):
        ClassifierModule(ReportCNN(), torch.optim.SGD, memory_format="nhwc")


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_net_and_inputs_are_converted() -> None:
    plain, last = _pair(c=3, size=32)
    conv = last.net.features[0]
    assert conv.weight.is_contiguous(memory_format=CL)
    assert not plain.net.features[0].weight.is_contiguous(memory_format=CL)
    seen: list[bool] = []
    conv.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=CL)))
    x, y = _data(3, 32, 4, 0)
    assert not x.is_contiguous(memory_format=CL)
    last._closure(x, y, check=False)()  # training / probe closures
    last._evaluate((x, y), "test", 1)  # evaluation (self.log outside a trainer is a no-op)
    last(x)  # forward
    assert seen == [True, True, True]


@pytest.mark.parametrize(("c", "size"), [(1, 28), (3, 32)])
def test_loss_grad_hvp_agree(c: int, size: int) -> None:
    plain, last = _pair(c, size)
    x, y = _data(c, size, 32, 1)
    ops = [
        HessianOperator(m._closure(x, y, check=False), list(m.parameters())) for m in (plain, last)
    ]
    torch.testing.assert_close(ops[1].loss, ops[0].loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ops[1].grad, ops[0].grad, rtol=1e-4, atol=1e-6)
    v = torch.randn(ops[0].dim, generator=torch.Generator().manual_seed(2))
    hv0, hv1 = ops[0].matvec(v), ops[1].matvec(v)
    torch.testing.assert_close(hv1, hv0, rtol=1e-3, atol=1e-5 * float(hv0.abs().max()))
    assert float(hv0.norm()) > 0


def _nc_losses(module: ClassifierModule, steps: int) -> tuple[list[float], int]:
    from accelopt.optim import GOSE

    torch.manual_seed(3)
    opt = GOSE(module.parameters(), lr=0.02, variant="improved", check="always", every=1)
    xs, ys = _data(1, 28, 64 * steps, 4)
    px, py = _data(1, 28, 512, 5)
    drawn = {"pos": 0}

    def probe(n: int):  # fresh samples in a fixed order, same for both formats
        i = drawn["pos"]
        drawn["pos"] = (i + n) % (len(px) - n)
        return module._closure(px[i : i + n], py[i : i + n], check=False)

    losses = []
    for k in range(steps):
        xb, yb = xs[64 * k : 64 * (k + 1)], ys[64 * k : 64 * (k + 1)]
        losses.append(float(opt.step(module._closure(xb, yb, check=False), probe=probe)))
    return losses, int(opt.counters.get("steps", 0))


def _nc_steps_keep_layout() -> bool:
    """Whether accelopt.curvature's NC step / Neon2 handle channels_last parameters.

    ``torch.nn.utils.parameters_to_vector`` (``view(-1)``) raises on them and
    ``vector_to_parameters`` rebinds them to contiguous views; ``assign_flat`` is the fix.
    """
    import accelopt.curvature.hvp as hvp

    return hasattr(hvp, "assign_flat")


@pytest.mark.slow
def test_nc_preset_matches_under_channels_last() -> None:
    assert _nc_steps_keep_layout()
    plain, last = _pair()
    l0, taken0 = _nc_losses(plain, 4)
    l1, taken1 = _nc_losses(last, 4)
    assert taken0 >= 1, "the NC path was not exercised"
    assert taken1 == taken0
    torch.testing.assert_close(torch.tensor(l1), torch.tensor(l0), rtol=1e-4, atol=1e-5)
    for p0, p1 in zip(plain.parameters(), last.parameters(), strict=True):
        # float32 drift through 4 NC steps of different summation orders: 4e-5 seen
        torch.testing.assert_close(p1, p0, rtol=1e-3, atol=2e-4)
        if p1.dim() == 4:  # NC steps keep the parameters in the module's format
            assert p1.is_contiguous(memory_format=CL)


def test_heavyball_steps_match_under_channels_last() -> None:
    plain, last = _pair(c=3, size=32)
    for m in (plain, last):
        m.opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    for k in range(3):
        x, y = _data(3, 32, 16, 10 + k)
        for m in (plain, last):
            m.opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            m.opt.step()
    for p0, p1 in zip(plain.parameters(), last.parameters(), strict=True):
        torch.testing.assert_close(p1, p0, rtol=1e-4, atol=1e-6)


def _fit_losses(memory_format: str, on_device: bool) -> list[float]:
    """Per-step training losses of 4 heavy-ball steps through a real Lightning Trainer (CPU)."""
    import lightning as L

    from accelopt.data import ClassificationDataModule

    class Losses(L.Callback):
        def __init__(self) -> None:
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, *a) -> None:  # noqa: ANN001
            self.values.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    L.seed_everything(0, verbose=False)
    dm = ClassificationDataModule(
        name="synthetic", source="synthetic", mean=[0.5], std=[0.25], image_size=12,
        num_classes=4, val_size=32, batch_size=16, eval_batch_size=64, synthetic_train=128,
        synthetic_test=64, on_device=on_device,
    )  # fmt: skip
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
    module = ClassifierModule(ReportCNN(1, 4, 12), sgd, num_classes=4, memory_format=memory_format)
    losses = Losses()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=4, limit_val_batches=1, logger=False,
        callbacks=[losses], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert dm.device.type == "cpu"
    return losses.values


def test_lightning_fit_matches_across_formats_and_data_placement() -> None:
    ref = _fit_losses("contiguous", on_device=False)
    assert len(ref) == 4 and ref[0] > ref[-1] * 0.5
    assert _fit_losses("contiguous", on_device=True) == ref  # same batches, same order: exact
    torch.testing.assert_close(
        torch.tensor(_fit_losses("channels_last", on_device=True)),
        torch.tensor(ref),
        rtol=1e-4,
        atol=1e-6,
    )
