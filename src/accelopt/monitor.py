"""A live curvature dashboard for any optimizer: :class:`CurvatureMonitor` (a Lightning callback).

Every ``every_n_steps`` training steps (before the step of that global index, so step 0 is the
initial point) it measures, on a FIXED probe batch taken once from the data module's held-out
validation set:

- ``lambda_min`` / ``lambda_max``: extreme eigenvalues of the probe loss's Hessian
  (:class:`accelopt.curvature.HessianOperator`): the smallest and largest Ritz values of the
  density's Lanczos runs and, if ``lanczos_steps > 0``, of an extra
  :func:`accelopt.curvature.lanczos` run. Ritz values lie inside the spectrum, so these are
  inner bounds that tighten with more steps (by default the density's runs serve both, to keep
  the cost within 5 % of an epoch);
- ``grad_norm``: ‖G‖ of the full probe batch's gradient;
- ``noise_scale``: the simple gradient-noise scale B_simple = tr(Σ)/|G|² (McCandlish et al.
  2018), Σ the per-sample gradient covariance, see :func:`noise_scale`;
- the spectral density by stochastic Lanczos quadrature
  (:func:`accelopt.curvature.density.slq`), Gaussian-broadened on a short grid.

Scalars go to every logger as ``curvature/<name>`` at the current global step, the density to
TensorBoard as a histogram ``curvature/density`` (bucket counts = estimated number of
eigenvalues per bucket). Every measurement is kept in ``records`` (saved in checkpoints); the
run recorder copies them into ``metrics.json`` under ``record_field``. ``excluded_time_s`` and
``excluded_cpu_s`` are the cumulative wall and CPU seconds spent measuring (excluded from
``time/epoch_s`` and ``time/epoch_cpu_s``).

Side effects: none on training. The model is put in eval mode while measuring (no dropout;
BatchNorm normalises with its running statistics: the Hessian of the model as evaluated) and
its mode restored; every forward runs on copies of the buffers, so no buffer changes
(:func:`accelopt.curvature.buffers.call_keeping_buffers`); derivatives are taken with
``torch.autograd.grad`` (``.grad`` untouched); random starts come from a private generator
seeded from ``(seed, step)``, never from torch's global one. Under DDP every rank measures the
same full probe batch (not a shard) with the same seeded generator on its (synchronised)
parameters, so the ranks agree without exchanging HVPs; the cost is not shared between ranks.
One all-gather of the scalars checks it: ``rank_spread`` in the record (DDP only) is the largest
difference from rank 0 (0.0 on CPU; GPU kernels may differ in the last bits).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.nn import functional as F

from accelopt.checks import is_int
from accelopt.curvature.buffers import call_keeping_buffers
from accelopt.curvature.density import density_on_grid, slq
from accelopt.curvature.hvp import HessianOperator, flat_grad
from accelopt.curvature.search import lanczos

LossFn = Callable[[Tensor, Tensor], Tensor]
SCALARS = ("lambda_min", "lambda_max", "grad_norm", "noise_scale", "loss")


def noise_scale(micro_grads: Tensor, micro_size: int) -> float:
    """B_simple = tr(Σ)/|G|² from the gradients of m equal micro-batches of ``micro_size``.

    Rows of ``micro_grads`` (m × n) are mean gradients over disjoint micro-batches of b samples,
    so Cov(g_i) = Σ/b. With ḡ their mean (the gradient of all B = m·b samples) and
    S = Σ_i ‖g_i − ḡ‖²/(m − 1) (unbiased for tr(Σ)/b):

        tr(Σ) ≈ b·S,    |G|² ≈ ‖ḡ‖² − S/m   (E‖ḡ‖² = |G|² + tr(Σ)/B),

    and B_simple ≈ b·S / (‖ḡ‖² − S/m), a ratio of unbiased estimates. NaN when the corrected
    |G|² is not positive (the noise hides the gradient at this probe size). Float64 arithmetic.
    """
    g = micro_grads.detach().to(torch.float64)
    m = g.shape[0]
    if g.dim() != 2 or m < 2 or micro_size < 1:
        raise ValueError(f"noise_scale needs m >= 2 micro-batch gradients; got {tuple(g.shape)}")
    gbar = g.mean(0)
    s = float(((g - gbar) ** 2).sum()) / (m - 1)
    g2 = float(gbar @ gbar) - s / m
    return micro_size * s / g2 if g2 > 0 else math.nan


def measure_curvature(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    *,
    lanczos_steps: int = 0,
    density_starts: int = 1,
    density_steps: int = 10,
    noise_batches: int = 8,
    grid_points: int = 48,
    generator: torch.Generator | None = None,
    hvp_method: str = "double_backward",
    module: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """One measurement of the loss ``loss_fn(x, y)`` at the current ``params`` (no side effects).

    Returns ``lambda_min``, ``lambda_max``, ``grad_norm``, ``noise_scale``, ``loss``, ``hvps``
    (Hessian-vector products) and ``density`` (``{"grid": [...], "values": [...]}``, empty
    lists when ``density_starts == 0``; λ from the SLQ and ``lanczos_steps`` runs together, NaN
    if both are 0). The first ``B − B mod noise_batches`` samples are split
    into ``noise_batches`` micro-batches for the noise scale.
    """
    params = list(params)
    op = HessianOperator(lambda: loss_fn(x, y), params, method=hvp_method, module=module)
    out: dict[str, Any] = {
        "grad_norm": float(torch.linalg.vector_norm(op.grad.double())),
        "loss": float(op.loss),
    }
    lows, highs, grid, values = [], [], [], []
    if density_starts > 0:
        res = slq(op, starts=density_starts, steps=density_steps, generator=generator)
        lows.append(res.lambda_min)
        highs.append(res.lambda_max)
        g, phi = density_on_grid(res.nodes, res.weights, points=grid_points)
        grid = [float(f"{v:.6g}") for v in g.tolist()]
        values = [float(f"{v:.6g}") for v in phi.tolist()]
    if lanczos_steps > 0:
        ext = lanczos(op, max_hvps=lanczos_steps, generator=generator)
        lows.append(ext.lam)
        highs.append(ext.lam_max)
    out["lambda_min"] = min(lows) if lows else math.nan
    out["lambda_max"] = max(highs) if highs else math.nan
    out["hvps"] = op.n_products
    del op  # frees the retained first-order graph before the micro-batch gradients
    b = x.shape[0] // noise_batches
    grads = torch.stack(
        [
            _micro_grad(loss_fn, params, x[i * b : (i + 1) * b], y[i * b : (i + 1) * b])
            for i in range(noise_batches)
        ]
    )
    out["noise_scale"] = noise_scale(grads, b)
    out["density"] = {"grid": grid, "values": values}
    return out


def _micro_grad(loss_fn: LossFn, params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    return flat_grad(lambda: loss_fn(x, y), params)[1]


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(
            f"CurvatureMonitor: {name}={value!r} is invalid; it must be an integer >= {minimum}"
        )
    return value


class CurvatureMonitor(L.Callback):
    """Measures λ_min, λ_max, ‖G‖, B_simple and the SLQ spectral density every N steps.

    Knobs: ``every_n_steps`` (cadence in global steps), ``probe_size`` (samples of the fixed
    probe batch, fewer if the held-out set is smaller), ``density_starts`` × ``density_steps``
    (SLQ: density and λ_min/λ_max; 0 starts disables the density), ``lanczos_steps`` (an extra
    Lanczos run for λ_min/λ_max, 0 = none), ``noise_batches`` (micro-batches m for the noise
    scale), ``grid_points`` (density grid), ``seed`` (random starts and the fallback probe),
    ``hvp_method`` (see ``HessianOperator``).
    See the module docstring for what is logged and the guarantees.
    """

    record_field = "curvature"

    def __init__(
        self,
        every_n_steps: int = 500,
        probe_size: int = 64,
        lanczos_steps: int = 0,
        density_starts: int = 1,
        density_steps: int = 10,
        noise_batches: int = 8,
        grid_points: int = 48,
        seed: int = 0,
        hvp_method: str = "double_backward",
    ) -> None:
        self.every_n_steps = _positive_int("every_n_steps", every_n_steps)
        self.probe_size = _positive_int("probe_size", probe_size, 2)
        self.lanczos_steps = _positive_int("lanczos_steps", lanczos_steps, 0)
        self.density_starts = _positive_int("density_starts", density_starts, 0)
        self.density_steps = _positive_int("density_steps", density_steps)
        self.noise_batches = _positive_int("noise_batches", noise_batches, 2)
        self.grid_points = _positive_int("grid_points", grid_points, 2)
        self.seed = int(seed)
        if hvp_method not in ("double_backward", "forward_over_reverse"):
            raise ValueError(
                f"CurvatureMonitor: hvp_method={hvp_method!r} is not one of "
                "('double_backward', 'forward_over_reverse')"
            )
        if self.lanczos_steps == 0 and self.density_starts == 0:
            raise ValueError(
                "CurvatureMonitor: lanczos_steps=0 and density_starts=0 leave nothing to measure "
                "λ_min/λ_max with; set one of them >= 1"
            )
        if self.noise_batches > self.probe_size:
            raise ValueError(
                f"CurvatureMonitor: noise_batches={noise_batches} exceeds probe_size={probe_size}"
            )
        self.hvp_method = hvp_method
        self.records: list[dict[str, Any]] = []
        self.excluded_time_s = 0.0
        self.excluded_cpu_s = 0.0
        self._probe: tuple[Tensor, Tensor] | None = None

    # -- the probe batch ---------------------------------------------------------------------
    def _probe_batch(self, trainer: L.Trainer) -> tuple[Tensor, Tensor]:
        """The fixed probe: the first ``probe_size`` held-out samples (or seeded training ones)."""
        dm = trainer.datamodule
        val, train = getattr(dm, "val_set", None), getattr(dm, "train_set", None)
        if val is not None:
            x, y = val.tensors[0][: self.probe_size], val.tensors[1][: self.probe_size]
        elif train is not None:
            warnings.warn(
                "CurvatureMonitor: the data module holds out no validation set (val_size=0); "
                "probing curvature on a fixed batch of training samples instead",
                stacklevel=2,
            )
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(train), generator=g)[: self.probe_size]
            x, y = train.tensors[0][idx], train.tensors[1][idx]
        else:
            raise ValueError(
                "CurvatureMonitor needs trainer.datamodule with TensorDataset val_set/train_set "
                f"(accelopt.data.ClassificationDataModule); got {type(dm).__name__}"
            )
        if len(x) < self.noise_batches:
            raise ValueError(
                f"CurvatureMonitor: the probe batch has {len(x)} samples, fewer than "
                f"noise_batches={self.noise_batches}"
            )
        return x, y

    # -- hooks -------------------------------------------------------------------------------
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % self.every_n_steps != 0 or (self.records and self.records[-1]["step"] >= step):
            return  # not due, or already measured here (a run resumed at this step)
        self.measure(trainer, pl_module)

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Measure now, log, append to ``records`` and return the record."""
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        t0, cpu0 = time.perf_counter(), time.process_time()
        if self._probe is None or self._probe[0].device != pl_module.device:
            batch = self._probe if self._probe is not None else self._probe_batch(trainer)
            self._probe = tuple(t.to(pl_module.device) for t in batch)
        x, y = self._probe
        criterion = getattr(pl_module, "criterion", None) or F.cross_entropy
        step = trainer.global_step
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        modes = [(m, m.training) for m in pl_module.modules()]
        pl_module.eval()
        try:
            with torch.enable_grad():
                rec = measure_curvature(
                    lambda a, b: criterion(call_keeping_buffers(pl_module, a), b),
                    pl_module.parameters(),
                    x,
                    y,
                    lanczos_steps=self.lanczos_steps,
                    density_starts=self.density_starts,
                    density_steps=self.density_steps,
                    noise_batches=self.noise_batches,
                    grid_points=self.grid_points,
                    generator=gen,
                    hvp_method=self.hvp_method,
                    module=pl_module,
                )
        finally:
            for m, training in modes:
                m.training = training
        if getattr(trainer, "world_size", 1) > 1:
            rec["rank_spread"] = _rank_spread(trainer, rec, pl_module.device)
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        elapsed = time.perf_counter() - t0
        self.excluded_time_s += elapsed
        self.excluded_cpu_s += time.process_time() - cpu0
        record = {"step": step, "epoch": trainer.current_epoch, **rec, "time_s": elapsed}
        self.records.append(record)
        self._log(trainer, record, n_params=_n_trainable(pl_module))
        return record

    def _log(self, trainer: L.Trainer, record: dict[str, Any], n_params: int) -> None:
        step = record["step"]
        scalars = {f"curvature/{k}": float(record[k]) for k in SCALARS}
        scalars = {k: v for k, v in scalars.items() if math.isfinite(v)}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
            if _is_tensorboard(logger) and record["density"]["grid"]:
                _add_density_histogram(logger.experiment, record["density"], n_params, step)

    # -- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "records": list(self.records),
            "excluded_time_s": self.excluded_time_s,
            "excluded_cpu_s": self.excluded_cpu_s,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict["records"])
        self.excluded_time_s = float(state_dict["excluded_time_s"])
        self.excluded_cpu_s = float(state_dict.get("excluded_cpu_s", 0.0))  # older checkpoints


def _n_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _rank_spread(trainer: L.Trainer, rec: dict[str, Any], device: torch.device) -> float:
    """Largest difference of the scalars between any rank and rank 0 (0.0: the ranks agree).

    One all-gather of a few numbers; every rank measures at the same global steps.
    """
    vals = torch.tensor([float(rec[k]) for k in SCALARS], dtype=torch.float64, device=device)
    every = trainer.strategy.all_gather(vals).reshape(-1, len(SCALARS))
    diff = (every - every[0]).abs()
    diff[every.isnan() & every[0].isnan()] = 0.0
    return float(diff.max())


def _is_tensorboard(logger: object) -> bool:
    from lightning.pytorch.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


def _add_density_histogram(
    writer: Any, density: dict[str, list[float]], n_params: int, step: int
) -> None:
    """The density as a TensorBoard histogram: buckets ending at the grid points, counts =
    φ·Δ·n (the estimated number of eigenvalues per bucket)."""
    grid = torch.tensor(density["grid"], dtype=torch.float64)
    phi = torch.tensor(density["values"], dtype=torch.float64)
    delta = float(grid[1] - grid[0])
    counts = phi * delta * n_params
    num = float(counts.sum())
    writer.add_histogram_raw(
        "curvature/density",
        min=float(grid[0]),
        max=float(grid[-1]),
        num=num,
        sum=float((counts * grid).sum()),
        sum_squares=float((counts * grid**2).sum()),
        bucket_limits=grid.tolist(),
        bucket_counts=counts.tolist(),
        global_step=step,
    )
