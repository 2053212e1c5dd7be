"""The fast path on a device: Lightning vs a bare loop, epochs, HVPs, NC presets, sweep throughput.

Run (repository root, venv active; about 3-5 minutes on one GPU)::

    python benchmarks/bench_gpu.py                 # the first CUDA GPU, real MNIST
    python benchmarks/bench_gpu.py --cpu           # no GPU: the same code on the CPU, tiny sizes

Everything runs on one device with the data sets held there (``dataset.on_device``: batches
and probes sliced on the device, no per-step host-to-device copy). Printed, and written as JSON
to ``--out``:

1. steps/s of heavy-ball SGD (the report's CNN, batch 128) through a bare loop and through
   Lightning (``ClassifierModule`` + ``ClassificationDataModule`` in a Trainer), for
   ``contiguous`` and ``channels_last``; rounds alternate, medians over rounds, warm-up steps
   excluded, CUDA-synchronised.
2. Seconds per MNIST epoch through the real entry point (``accelopt.train.train``,
   ``hardware=gpu`` or ``cpu``, 60,000 images, training time ``time/epoch_s``) and the
   evaluation time of the test set at ``eval_batch_size`` 1,000 and 10,000. With ``--cpu`` the
   epoch is ``--epoch-steps`` steps, extrapolated to the 469 steps of an epoch (printed as such).
3. Gradient vs Hessian-vector product (double backward) on the report's CNN, batch 128, both
   memory formats.
4. The NC presets (GOSE, ANCM, Combined; improved and original variants) against their base
   optimizers over ``--nc-steps`` steps of a bare loop (default schedules; probes on the device).
5. Jobs/hour for a ``original_mnist``-like sweep (16 jobs: 8 methods x 2 seeds, 6 epochs): one job's
   time is estimated from 2-4 (epoch time, eval time, the presets' ratios, the start-up cost of
   the entry point), and the k-jobs-per-GPU factor is *measured*: k worker processes run the
   bare step loop concurrently on the device and their aggregate steps/s is compared with one.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from accelopt.analysis.timing import median_ms, sync
from accelopt.data import ClassificationDataModule, ShuffledBatches
from accelopt.models import ReportCNN

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
EPOCH_STEPS = 469  # 60,000 MNIST images at batch 128, last partial batch kept
NC_PRESETS = ("gose", "ancm", "combined")
SWEEP = ("heavyball", "agd", *(f"{p}_original" for p in NC_PRESETS), *NC_PRESETS)  # original_mnist


def seeded_cnn(device: torch.device, memory_format: torch.memory_format) -> ReportCNN:
    """The report's MNIST CNN from seed 0, on ``device`` in ``memory_format``."""
    torch.manual_seed(0)
    return ReportCNN(1, 10, 28).to(device=device, memory_format=memory_format)


def mnist_on(device: torch.device, seed: int = 0) -> ClassificationDataModule:
    """Real MNIST (all 60,000 training images) with its tensors on ``device``."""
    dm = ClassificationDataModule(val_size=0, seed=seed, on_device=True)
    dm.setup()
    dm.to_device(device)
    return dm


# -- 1. steps/s: bare loop vs Lightning ----------------------------------------------------------
def bare_rate(dm: ClassificationDataModule, fmt: str, warm: int, steps: int) -> float:
    """Steps/s of a bare heavy-ball loop over on-device batches (after ``warm`` steps)."""
    device, mf = dm.device, FORMATS[fmt]
    model = seeded_cnn(device, mf)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    x, y = dm.train_set.tensors
    batches = iter(ShuffledBatches(len(x), 128, shuffle=True, seed=1, device=device))
    t0 = 0.0
    for k in range(warm + steps):
        if k == warm:
            sync(device)
            t0 = time.perf_counter()
        idx = next(batches)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx].contiguous(memory_format=mf)), y[idx]).backward()
        opt.step()
    sync(device)
    return steps / (time.perf_counter() - t0)


def lightning_rate(dm: ClassificationDataModule, fmt: str, warm: int, steps: int) -> float:
    """Steps/s of the same training through ``ClassifierModule`` in a Lightning Trainer."""
    import lightning as L

    from accelopt.models.module import ClassifierModule

    class Rate(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: Any, *a: Any) -> None:
            if trainer.global_step == warm:
                sync(module.device)
                self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, module: Any) -> None:
            sync(module.device)
            self.rate = steps / (time.perf_counter() - self.t0)

    torch.manual_seed(0)
    sgd = functools.partial(torch.optim.SGD, lr=0.02, momentum=0.9)
    module = ClassifierModule(ReportCNN(1, 10, 28), sgd, memory_format=fmt)
    rate = Rate()
    trainer = L.Trainer(
        accelerator="cuda" if dm.device.type == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=warm + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[rate],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=dm)
    return rate.rate


def step_rates(dm: ClassificationDataModule, args: argparse.Namespace) -> dict[str, float]:
    runs: dict[str, Callable[[], float]] = {}
    for fmt in FORMATS:
        runs[f"bare/{fmt}"] = functools.partial(bare_rate, dm, fmt, args.warm, args.steps)
        runs[f"lightning/{fmt}"] = functools.partial(lightning_rate, dm, fmt, args.warm, args.steps)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(runs[name]())
    med = {name: statistics.median(v) for name, v in rates.items()}
    ref = med["bare/contiguous"]
    print(f"\n== 1. steps/s, heavy-ball, batch 128, {args.steps} steps x {args.rounds} rounds ==")
    for name, v in med.items():
        print(f"{name:<26}{v:9.1f} steps/s  {1000 / v:7.2f} ms/step  {ref / v:6.3f}x bare time")
    return med


# -- 2. epoch and evaluation seconds -------------------------------------------------------------
def epoch_seconds(args: argparse.Namespace, out: Path) -> dict[str, float]:
    from accelopt.train import compose_config, train

    overrides = [
        f"hardware={'cpu' if args.cpu else 'gpu'}",
        "dataset.val_size=0",
        "logger=none",
        "callbacks=none",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    if args.cpu:
        overrides += [f"hardware.num_threads={args.threads}", "hardware.data_on_device=true"]
        overrides.append(f"trainer.limit_train_batches={args.epoch_steps}")
    t0 = time.perf_counter()
    record = train(compose_config(overrides, out / "epoch"))
    wall = time.perf_counter() - t0
    steps = int(record.get("stopped_at_step") or EPOCH_STEPS)
    measured = float(record["epochs"][0]["time/epoch_s"])
    epoch_s, startup_s = measured * EPOCH_STEPS / steps, wall - measured
    note = f" (extrapolated from {steps} steps)" if steps < EPOCH_STEPS else ""
    print(f"\n== 2. seconds per MNIST epoch (accelopt.train.train, {overrides[0]}) ==")
    print(f"training epoch {epoch_s:8.2f} s{note}; entry point start-up etc. {startup_s:6.2f} s")
    return {"epoch_s": epoch_s, "startup_s": startup_s, "steps_run": steps}


def eval_seconds(dm: ClassificationDataModule, n: int) -> dict[str, float]:
    """Seconds to evaluate the first ``n`` test images at eval batches of 1,000 and 10,000."""
    device = dm.device
    model = seeded_cnn(device, torch.channels_last).eval()
    x, y = dm.test_set.tensors
    res = {}
    for bs in (1000, 10000):
        for _ in range(2):  # the first pass warms up
            sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                correct = sum(
                    int((model(x[i : min(i + bs, n)]).argmax(1) == y[i : min(i + bs, n)]).sum())
                    for i in range(0, n, bs)
                )
            sync(device)
            res[f"eval_s_bs{bs}"] = (time.perf_counter() - t0) * len(x) / n
        assert 0 <= correct <= n
    print(
        f"test-set evaluation ({len(x)} images{'' if n == len(x) else f', from {n}'}): "
        f"{res['eval_s_bs1000']:.3f} s at batch 1,000, {res['eval_s_bs10000']:.3f} s at 10,000"
    )
    return res


# -- 3. gradient vs HVP --------------------------------------------------------------------------
def hvp_ratio(dm: ClassificationDataModule, reps: int) -> dict[str, float]:
    from accelopt.curvature import HessianOperator, flat_grad

    device, res = dm.device, {}
    x, y = dm.train_set.tensors[0][:128], dm.train_set.tensors[1][:128]
    print(f"\n== 3. gradient vs HVP (double backward), batch 128, median of {reps} ==")
    for fmt, mf in FORMATS.items():
        net = seeded_cnn(device, mf)
        xb, params = x.contiguous(memory_format=mf), list(net.parameters())

        def closure(net: torch.nn.Module = net, xb: torch.Tensor = xb) -> torch.Tensor:
            return F.cross_entropy(net(xb), y)

        op = HessianOperator(closure, params)
        v = torch.randn(op.dim, device=device)
        g = median_ms(lambda: flat_grad(closure, params), reps, device)  # noqa: B023
        h = median_ms(lambda: op.matvec(v), reps, device)  # noqa: B023
        res |= {f"grad_ms/{fmt}": g, f"hvp_ms/{fmt}": h, f"hvp_over_grad/{fmt}": h / g}
        print(f"{fmt:<14} gradient {g:7.2f} ms  HVP {h:7.2f} ms  HVP/gradient {h / g:5.2f}")
    return res


# -- 4. NC presets vs their bases ----------------------------------------------------------------
def _nc_loop(dm: ClassificationDataModule, make: Callable, steps: int, fmt: str) -> float:
    """Seconds for ``steps`` bare-loop steps of the optimizer ``make(params)``."""
    from accelopt.optim_protocol import uses_closure

    device, mf = dm.device, FORMATS[fmt]
    model = seeded_cnn(device, mf)
    opt = make(model.parameters())
    x, y = dm.train_set.tensors

    def closure_of(xb: torch.Tensor, yb: torch.Tensor) -> Callable[[], torch.Tensor]:
        xb = xb.contiguous(memory_format=mf)
        return lambda: F.cross_entropy(model(xb), yb)

    def probe(n: int) -> Callable[[], torch.Tensor]:
        return closure_of(*dm.probe(n))

    batches = iter(ShuffledBatches(len(x), 128, shuffle=True, seed=1, device=device))
    sync(device)
    t0 = time.perf_counter()
    for k in range(steps):
        idx = next(batches)
        closure = closure_of(x[idx], y[idx])
        if uses_closure(opt):
            opt.step(closure, probe=probe, batch_idx=k)
        else:
            opt.zero_grad(set_to_none=True)
            closure().backward()
            opt.step()
    sync(device)
    return time.perf_counter() - t0


def nc_ratios(dm: ClassificationDataModule, args: argparse.Namespace) -> dict[str, Any]:
    from accelopt.optim import ANCM, GOSE, Combined

    bases = {
        "heavyball": functools.partial(torch.optim.SGD, lr=0.02, momentum=0.9),
        "nesterov": functools.partial(torch.optim.SGD, lr=0.02, momentum=0.9, nesterov=True),
    }
    presets = {"gose": (GOSE, "heavyball"), "ancm": (ANCM, "nesterov")}
    presets["combined"] = (Combined, "nesterov")
    print(f"\n== 4. NC presets / their base, {args.nc_steps} steps, {args.nc_format} ==")
    base_s = {b: _nc_loop(dm, make, args.nc_steps, args.nc_format) for b, make in bases.items()}
    res: dict[str, Any] = {f"base_s/{b}": s for b, s in base_s.items()}
    for name, (cls, base) in presets.items():
        for variant in ("improved", "original"):
            key = name if variant == "improved" else f"{name}_original"
            make = functools.partial(cls, lr=0.02, variant=variant)
            try:
                s = _nc_loop(dm, make, args.nc_steps, args.nc_format)
            except Exception as exc:  # noqa: BLE001 - reported; the other presets still run
                res[key] = None
                print(f"{key:<15} failed: {type(exc).__name__}: {str(exc)[:120]}")
                continue
            res[key] = s / base_s[base]
            print(f"{key:<15} {s:7.2f} s  {res[key]:6.2f}x {base} ({base_s[base]:.2f} s)")
    return res


# -- 5. sweep throughput: k jobs per device ------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """One of k concurrent processes: wait for the go file, run the bare loop, print its time."""
    device = torch.device(args.device)
    dm = mnist_on(device)
    bare_rate(dm, args.format, args.warm, 2)  # warm-up before the common start
    Path(f"{args.sync}.ready{args.worker}").touch()
    while not Path(f"{args.sync}.go").exists():
        time.sleep(0.01)
    rate = bare_rate(dm, args.format, 0, args.steps)
    print(json.dumps({"rate": rate}), flush=True)


def concurrent_rate(args: argparse.Namespace, k: int, tmp: Path) -> float:
    """Aggregate steps/s of ``k`` worker processes stepping concurrently on the device."""
    sync_file = tmp / f"k{k}"
    cmd = [sys.executable, __file__, "--device", str(args.device), "--steps", str(args.steps)]
    cmd += ["--warm", str(args.warm), "--format", args.format, "--sync", str(sync_file)]
    cmd += ["--threads", str(max(1, args.threads // k))]
    procs = [
        subprocess.Popen([*cmd, "--worker", str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(k)
    ]
    while sum(Path(f"{sync_file}.ready{i}").exists() for i in range(k)) < k:
        if any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError(f"a worker of k={k} failed before the start")
        time.sleep(0.05)
    Path(f"{sync_file}.go").touch()
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["rate"] for p in procs]
    return sum(rates)


def sweep_throughput(args: argparse.Namespace, found: dict[str, Any], tmp: Path) -> dict:
    """Jobs/hour of a 16-job, 6-epoch original_mnist-like sweep with 1 and k jobs per device."""
    nc = found["nc"]
    factors = [1.0 if m in ("heavyball", "agd") else nc.get(m) or 1.0 for m in SWEEP]
    per_epoch = found["epoch"]["epoch_s"] * statistics.mean(factors)
    per_epoch += found["eval"]["eval_s_bs1000"]  # the test set every epoch, as the report
    job_s = found["epoch"]["startup_s"] + 6 * per_epoch
    rate1 = concurrent_rate(args, 1, tmp)
    res: dict[str, Any] = {"job_s": job_s, "mean_method_factor": statistics.mean(factors)}
    print(f"\n== 5. original_mnist-like sweep (16 jobs x 6 epochs), one job ~{job_s:.1f} s ==")
    print(f"1 job/device : {3600 / job_s:8.1f} jobs/h (bare loop {rate1:.1f} steps/s)")
    for k in args.k:
        ratek = concurrent_rate(args, k, tmp)
        scale = ratek / rate1
        res[f"scale_k{k}"], res[f"jobs_per_hour_k{k}"] = scale, 3600 / job_s * scale
        print(f"{k} jobs/device: {3600 / job_s * scale:8.1f} jobs/h (measured x{scale:.2f})")
    res["jobs_per_hour_k1"] = 3600 / job_s
    return res


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU with tiny sizes")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (GPU 300, --cpu 6)")
    ap.add_argument("--warm", type=int, default=None, help="untimed steps (GPU 20, --cpu 2)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epoch-steps", type=int, default=8, help="--cpu: steps of the epoch run")
    ap.add_argument("--nc-steps", type=int, default=None, help="GPU 400, --cpu 12")
    ap.add_argument("--nc-format", default="channels_last", choices=list(FORMATS))
    ap.add_argument("--reps", type=int, default=None, help="gradient / HVP (GPU 20, --cpu 5)")
    ap.add_argument("--k", type=int, nargs="+", default=None, help="jobs per device (GPU 2 4)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_gpu.json")
    # worker mode (section 5), started by this script
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--format", default="channels_last", help=argparse.SUPPRESS)
    ap.add_argument("--sync", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    tiny = args.cpu or (args.device or "").startswith("cpu")
    defaults = (("steps", 300, 6), ("warm", 20, 2), ("nc_steps", 400, 12), ("reps", 20, 5))
    for key, gpu, cpu in defaults:
        if getattr(args, key) is None:
            setattr(args, key, cpu if tiny else gpu)
    args.k = args.k or ([2] if tiny else [2, 4])
    args.device = args.device or ("cpu" if args.cpu else "cuda")
    return args


def main(argv: list[str] | None = None) -> int:
    import logging

    args = parse(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no per-run banners
    if args.worker is not None:
        worker(args)
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print("bench_gpu: torch sees no CUDA GPU; use --cpu for the CPU check.", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, {device} ({name}), threads {torch.get_num_threads()}"
        + (", tiny sizes (--cpu)" if args.cpu else ""),
        flush=True,
    )
    t0 = time.perf_counter()
    dm = mnist_on(device)
    found: dict[str, Any] = {"device": str(device), "device_name": name, "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        found["rates"] = step_rates(dm, args)
        found["epoch"] = epoch_seconds(args, Path(tmp))
        found["eval"] = eval_seconds(dm, 1000 if args.cpu else len(dm.test_set))
        found["hvp"] = hvp_ratio(dm, args.reps)
        found["nc"] = nc_ratios(dm, args)
        found["sweep"] = sweep_throughput(args, found, Path(tmp))
    found["total_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=1, default=str))
    print(f"\ntotal {found['total_s']:.0f} s; results in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
