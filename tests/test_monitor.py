"""The live curvature monitor (accelopt.monitor): exact values, Lightning runs, no side effects."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F

from accelopt.data import ClassificationDataModule
from accelopt.models.cnn import ReportCNN
from accelopt.models.module import ClassifierModule
from accelopt.monitor import CurvatureMonitor, measure_curvature, noise_scale
from accelopt.train import train

from .conftest import FAST, compose_cfg, run_cli

TAGS = (
    "curvature/lambda_min",
    "curvature/lambda_max",
    "curvature/grad_norm",
    "curvature/noise_scale",
)
KEYS = ("step", "epoch", "lambda_min", "lambda_max", "grad_norm", "noise_scale", "hvps", "time_s")


# -- exact values on tiny problems -----------------------------------------------------------
def tiny_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(32, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    return net, x, y


def dense_hessian(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The full float64 Hessian of the mean cross-entropy w.r.t. the flat parameters."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = theta[i : i + s.numel()].view(s)
            i += s.numel()
        return F.cross_entropy(torch.func.functional_call(net, parts, (x,)), y)

    return torch.autograd.functional.hessian(f, flat)


@pytest.mark.parametrize(
    ("lanczos_steps", "method"),
    [(0, "double_backward"), (31, "double_backward"), (0, "forward_over_reverse")],
)
def test_extremes_and_gradient_match_a_dense_float64_hessian(lanczos_steps: int, method: str):
    net, x, y = tiny_problem()
    eigs = torch.linalg.eigvalsh(dense_hessian(net, x, y))
    assert eigs[0] < 0 < eigs[-1]  # an indefinite Hessian: λ_min is a real test
    rec = measure_curvature(
        lambda a, b: F.cross_entropy(net(a), b),
        net.parameters(),
        x,
        y,
        lanczos_steps=lanczos_steps,
        density_starts=1,
        density_steps=31,  # the dimension: Lanczos is exact
        generator=torch.Generator().manual_seed(0),
        hvp_method=method,
        module=net,
    )
    assert rec["lambda_min"] == pytest.approx(float(eigs[0]), abs=1e-8)
    assert rec["lambda_max"] == pytest.approx(float(eigs[-1]), abs=1e-8)
    assert 0 < rec["hvps"] <= 31 + lanczos_steps  # SLQ stops early on an invariant subspace
    loss = F.cross_entropy(net(x), y)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(net.parameters()))])
    assert rec["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-10)
    grid = torch.tensor(rec["density"]["grid"], dtype=torch.float64)
    phi = torch.tensor(rec["density"]["values"], dtype=torch.float64)
    assert torch.trapezoid(phi, grid).item() == pytest.approx(1.0, abs=0.02)


def test_noise_scale_of_a_linear_model_from_closed_form_per_sample_gradients() -> None:
    # least squares f_s(w) = ½(wᵀx_s − y_s)²: per-sample gradients r_s x_s in closed form
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = torch.randn(64, generator=g, dtype=torch.float64)
    w = nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))
    per_sample = (x @ w.detach() - y)[:, None] * x
    micro = per_sample.view(8, 8, 5).mean(1)  # 8 micro-batches of 8
    gbar = micro.mean(0)
    s = ((micro - gbar) ** 2).sum() / 7
    expected = 8 * s / (gbar @ gbar - s / 8)
    rec = measure_curvature(
        lambda a, b: 0.5 * ((a @ w - b) ** 2).mean(), [w], x, y, noise_batches=8, density_steps=5
    )
    assert rec["noise_scale"] == pytest.approx(float(expected), rel=1e-10)


def test_noise_scale_is_unbiased_in_its_parts() -> None:
    # gradients g_s = G + ξ_s, Cov ξ = Σ: the estimate concentrates on tr(Σ)/|G|²
    gen = torch.Generator().manual_seed(2)
    G = torch.tensor([3.0, -4.0, 0.0, 0.0], dtype=torch.float64)  # |G|² = 25
    sd = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)  # tr Σ = 14.25
    b, m = 16, 8
    est = [
        noise_scale((G + sd * torch.randn(m, b, 4, generator=gen, dtype=torch.float64)).mean(1), b)
        for _ in range(4000)
    ]
    assert sum(est) / len(est) == pytest.approx(14.25 / 25, rel=0.05)
    assert noise_scale(G.repeat(4, 1), 8) == 0.0  # identical gradients: no noise
    assert math.isnan(noise_scale(torch.tensor([[1.0], [-1.0]]), 1))  # noise hides G


# -- the callback ------------------------------------------------------------------------------
def synthetic_dm(val_size: int = 64) -> ClassificationDataModule:
    dm = ClassificationDataModule(
        name="synthetic", source="synthetic", mean=(0.5,), std=(0.25,), image_size=12,
        num_classes=4, val_size=val_size, batch_size=32, eval_batch_size=128,
        synthetic_train=512, synthetic_test=128, seed=1,
    )  # fmt: skip
    dm.setup("fit")
    return dm


def module() -> ClassifierModule:
    torch.manual_seed(0)
    net = ReportCNN(in_channels=1, num_classes=4, image_size=12)
    return ClassifierModule(net, functools.partial(torch.optim.SGD, lr=0.05), num_classes=4)


def fake_trainer(dm: ClassificationDataModule, step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(datamodule=dm, global_step=step, current_epoch=0, loggers=[])


def test_measuring_has_no_side_effects() -> None:
    mod, dm = module(), synthetic_dm()
    mod.train()
    mod.net.classifier.eval()  # a mixed mode must come back as it was
    for p in mod.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = [p.detach().clone() for p in mod.parameters()]
    rng = torch.get_rng_state()
    mon = CurvatureMonitor(every_n_steps=1, density_steps=6)
    rec = mon.measure(fake_trainer(dm), mod)
    assert set(KEYS) <= set(rec) and rec["hvps"] == 6 and rec["lambda_min"] <= rec["lambda_max"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert mod.training and mod.net.features.training and not mod.net.classifier.training
    for p, q in zip(mod.parameters(), before, strict=True):
        assert torch.equal(p, q) and torch.equal(p.grad, torch.full_like(p, 0.5))
    assert mon.excluded_time_s == pytest.approx(rec["time_s"]) and rec["time_s"] > 0
    again = CurvatureMonitor(every_n_steps=1, density_steps=6).measure(fake_trainer(dm), mod)
    assert again["lambda_min"] == rec["lambda_min"]  # same seed and step: same numbers


def test_batchnorm_statistics_are_not_updated() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 10 * 10, 4))  # fmt: skip
    mod = ClassifierModule(net, functools.partial(torch.optim.SGD, lr=0.1), num_classes=4)
    stats = {k: v.clone() for k, v in net[1].state_dict().items()}
    CurvatureMonitor(density_steps=3).measure(fake_trainer(synthetic_dm()), mod)
    for k, v in net[1].state_dict().items():
        assert torch.equal(v, stats[k]), k
    assert net[1].training


def test_without_validation_set_it_warns_and_probes_training_samples() -> None:
    mon = CurvatureMonitor(density_steps=3, probe_size=16)
    with pytest.warns(UserWarning, match="val_size=0"):
        rec = mon.measure(fake_trainer(synthetic_dm(val_size=0)), module())
    assert math.isfinite(rec["lambda_max"])


def fit(tmp: Path, max_epochs: int, mon: CurvatureMonitor | None, ckpt: str | None = None):
    dm, mod = synthetic_dm(), module()
    L.seed_everything(1, verbose=False)
    callbacks = [L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp / "ck", save_last=True)]
    trainer = L.Trainer(
        max_epochs=max_epochs, accelerator="cpu", logger=TensorBoardLogger(tmp, name="tb"),
        callbacks=callbacks + ([mon] if mon else []), enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(mod, datamodule=dm, ckpt_path=ckpt)
    return trainer, mod


def test_resumed_run_keeps_its_history(tmp_path: Path) -> None:
    mon = CurvatureMonitor(every_n_steps=5, density_steps=3)
    fit(tmp_path, 1, mon)  # 14 steps: measured at 0, 5, 10
    assert [r["step"] for r in mon.records] == [0, 5, 10]
    state = mon.state_dict()
    copy = CurvatureMonitor()
    copy.load_state_dict(state)
    assert copy.records == mon.records and copy.excluded_time_s == mon.excluded_time_s
    resumed = CurvatureMonitor(every_n_steps=5, density_steps=3)
    fit(tmp_path, 2, resumed, ckpt=str(tmp_path / "ck" / "last.ckpt"))
    assert [r["step"] for r in resumed.records] == [0, 5, 10, 15, 20, 25]
    assert resumed.records[:3] == mon.records
    assert resumed.excluded_time_s > mon.excluded_time_s


def event_tags(folder: Path) -> tuple[dict, EventAccumulator]:
    """Tags and contents of every event file in ``folder`` (read in order)."""
    acc = EventAccumulator(str(folder), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    return acc.Tags(), acc


# -- through the Hydra config, as `python -m accelopt.train callbacks=curvature` -------------
def test_config_adds_the_monitor_to_the_default_checkpoint(make_cfg) -> None:
    cfg = make_cfg("callbacks=curvature", "seed=7")
    assert set(cfg.callbacks) == {"checkpoint", "curvature"}
    mon = instantiate(cfg.callbacks.curvature)
    assert isinstance(mon, CurvatureMonitor) and mon.seed == 7
    assert CurvatureMonitor.record_field == "curvature"


@pytest.mark.parametrize("optimizer", ["sgd", "gose"])
def test_training_trajectory_is_unchanged_and_tags_are_written(make_cfg, tmp_path, optimizer):
    common = [f"optimizer={optimizer}", "optimizer.lr=0.05"]
    if optimizer == "gose":
        common += ["optimizer.every=3", "optimizer.check=always"]  # NC searches in the run
    plain = train(compose_cfg([*FAST, *common], tmp_path / "plain"))
    cfg = make_cfg(
        *common,
        "callbacks=curvature",
        "callbacks.curvature.every_n_steps=4",
        "callbacks.curvature.density_steps=4",
    )
    watched = train(cfg)
    assert plain["status"] == watched["status"] == "completed"
    assert watched["train_loss"] == plain["train_loss"]  # bit-identical losses
    assert [r["step"] for r in watched["curvature"]] == [0, 4, 8, 12]
    if optimizer == "gose":
        assert watched["nc"]["searches"] == plain["nc"]["searches"] > 0
    tags, acc = event_tags(Path(cfg.output_dir) / "tb")
    assert set(TAGS) <= set(tags["scalars"]) and "curvature/density" in tags["histograms"]
    assert [e.step for e in acc.Scalars("curvature/lambda_max")] == [0, 4, 8, 12]
    hist = acc.Histograms("curvature/density")[0].histogram_value
    n_params = sum(p.numel() for p in ReportCNN(1, 4, 12).parameters())
    assert hist.num == pytest.approx(n_params, rel=0.02)  # counts = estimated eigenvalues


def test_fast_debug_run_measures_once(make_cfg) -> None:
    record = train(make_cfg("callbacks=curvature", "debug=fast"))
    assert record["status"] == "completed"
    assert [r["step"] for r in record["curvature"]] == [0]


def test_bad_knobs_are_refused_with_one_clear_line() -> None:
    with pytest.raises(ValueError, match="every_n_steps=0 is invalid"):
        CurvatureMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match="noise_batches=9 exceeds probe_size=8"):
        CurvatureMonitor(probe_size=8, noise_batches=9)
    with pytest.raises(ValueError, match="leave nothing to measure"):
        CurvatureMonitor(lanczos_steps=0, density_starts=0)
    with pytest.raises(ValueError, match="hvp_method='exact'"):
        CurvatureMonitor(hvp_method="exact")


@pytest.mark.slow
def test_ddp_ranks_agree_and_match_one_process(tmp_path: Path) -> None:
    # 2 gloo ranks x batch 16 vs one process x batch 32: the same global batches, so the
    # parameters (and the full-probe measurements) agree to float tolerance
    common = [*FAST, "logger=none", "trainer.limit_train_batches=6", "callbacks=curvature",
              "callbacks.curvature.every_n_steps=3", "callbacks.curvature.density_steps=5"]  # fmt: skip
    runs = {"ddp": ["hardware=ddp_cpu", "dataset.batch_size=16"],
            "one": ["hardware=cpu", "dataset.batch_size=32"]}  # fmt: skip
    records = {}
    for name, args in runs.items():
        proc = run_cli([*common, *args, f"hydra.run.dir={tmp_path / name}"], tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        records[name] = json.loads((tmp_path / name / "metrics.json").read_text())["curvature"]
    ddp, one = records["ddp"], records["one"]
    assert [r["step"] for r in ddp] == [r["step"] for r in one] == [0, 3]
    assert all(r["rank_spread"] == 0.0 for r in ddp) and "rank_spread" not in one[0]
    for a, b in zip(ddp, one, strict=True):
        for key in ("lambda_min", "lambda_max", "grad_norm", "loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
