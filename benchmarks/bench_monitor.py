"""Cost of the curvature monitor (``callbacks=curvature``) relative to one MNIST training epoch.

One real training epoch through the entry point (``accelopt.train.train``: the report's CNN,
heavy-ball SGD, batch 128, 469 steps, validation off) with the monitor at its default knobs;
its ``time/epoch_s`` is training only (the monitor's time is excluded). Then ``--repeats``
measurements with the same knobs on the same probe batch time one measurement. The overhead
per epoch is

    cost per measurement × measurements per epoch (steps per epoch / every_n_steps) / epoch time

and must stay ≤ 5 %. Single process, ``--threads`` torch threads (default 1).

    python benchmarks/bench_monitor.py [--threads 1] [--repeats 3] [--every 500] [--probe 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.nn import functional as F

from accelopt.models import ReportCNN
from accelopt.monitor import measure_curvature
from accelopt.train import compose_config, train


def machine() -> str:
    return (
        f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} visible cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), load average "
        f"{os.getloadavg()[0]:.1f} (other processes share the cores)"
    )


def time_measurements(
    dataset_cfg: DictConfig, knobs: dict, repeats: int, seed: int
) -> tuple[list[float], dict]:
    """Time ``repeats`` measurements with ``knobs`` on the run's fixed probe batch."""
    dm = instantiate(dataset_cfg, seed=seed)
    dm.setup("fit")
    x = dm.val_set.tensors[0][: knobs["probe_size"]]
    y = dm.val_set.tensors[1][: knobs["probe_size"]]
    torch.manual_seed(seed)
    net = ReportCNN(1, 10, 28)
    kw = {k: knobs[k] for k in ("lanczos_steps", "density_starts", "density_steps")}
    kw |= {k: knobs[k] for k in ("noise_batches", "grid_points", "hvp_method")}
    times, rec = [], {}
    for i in range(repeats):
        t0 = time.perf_counter()
        rec = measure_curvature(
            lambda a, b: F.cross_entropy(net(a), b),
            net.parameters(),
            x,
            y,
            generator=torch.Generator().manual_seed(i),
            **kw,
        )
        times.append(time.perf_counter() - t0)
    return times, rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--every", type=int, default=None, help="every_n_steps (default: config's)")
    ap.add_argument("--probe", type=int, default=None, help="probe_size (default: config's)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [
        "callbacks=curvature",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"hardware.num_threads={args.threads}",
        f"seed={args.seed}",
    ]
    if args.every is not None:
        overrides.append(f"callbacks.curvature.every_n_steps={args.every}")
    if args.probe is not None:
        overrides.append(f"callbacks.curvature.probe_size={args.probe}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(overrides, Path(tmp) / "run")
        knobs = {k: v for k, v in cfg.callbacks.curvature.items() if k != "_target_"}
        record = train(cfg)
    epoch = record["epochs"][0]
    steps, epoch_s = epoch["step"], epoch["time/epoch_s"]
    in_run = [r["time_s"] for r in record.get("curvature") or []]
    times, rec = time_measurements(cfg.dataset, knobs, args.repeats, args.seed)
    cost = statistics.median(times)
    per_epoch = steps / knobs["every_n_steps"]
    ratio = cost * per_epoch / epoch_s
    print(f"machine: {machine()}")
    print(f"monitor knobs: {knobs}")
    print(f"training epoch: {steps} steps, {epoch_s:.2f} s (time/epoch_s, monitor excluded)")
    print(f"in-run measurements: {' '.join(f'{t:.2f}' for t in in_run)} s")
    print(
        f"measurement: {' '.join(f'{t:.2f}' for t in times)} s, median {cost:.2f} s, {rec['hvps']} HVPs"
    )
    print(f"measurements per epoch: {per_epoch:.2f}  ->  overhead {100 * ratio:.1f} % of an epoch")


if __name__ == "__main__":
    main()
