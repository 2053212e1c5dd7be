"""Per-epoch training time of each NC preset relative to heavy-ball SGD, real MNIST, one process.

The report's CNN, batch 128, all 60,000 training images (``dataset.val_size=0``; ``--val-size
default``: a user's 55,000), validation off, progress bar off, through the real entry point
(``accelopt.train.train`` on a composed config, TensorBoard logger and checkpoint callback on,
as a user's run). A measured "epoch" is the first epoch of a fresh run, cut to ``--steps``
training steps (``trainer.limit_train_batches``; ``--steps 0``: the whole epoch, 469 batches or
430 with the default split) so that the 9×-cost faithful ANCM stays affordable. The improved
presets' noise check does not fire in a fresh run's first epoch, so their NC phase (one per
epoch) comes later: ``--epoch 2`` measures the second epoch, each method's first epoch run once
(seed 1) and every round resuming from its checkpoint (the same work each round). Its time is the
run's own ``time/epoch_s`` (training only) and ``time/epoch_cpu_s`` (the process's CPU seconds
over the same span, which other jobs on a shared machine barely move; with ``--threads 1`` it is
the work done). Methods alternate within each round and the script prints every time, then per
method the medians, the ratios of medians to heavy-ball SGD (wall and CPU) with the range of the
per-round ratios, the NC counters of its median round (checks, re-checks, searches, NC steps,
rejected, HVPs, λ of the last direction found and the last search's estimate, seconds in NC
work; a resumed run's counters include its first epochs) and the share of that run's epoch time
spent in NC work (a within-run measure of the slowdown that the load of a shared machine cannot
skew).

    python benchmarks/bench_nc_presets.py [--rounds 3] [--steps 150 | 0] [--epoch 1]
        [--threads 1] [--val-size 0 | default] [--methods heavyball,gose_original,...]
        [--set gose:optimizer.every=100 ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

from accelopt.optim.nc import COUNTER_KEYS  # noqa: E402
from accelopt.train import compose_config as compose_cfg  # noqa: E402
from accelopt.train import train  # noqa: E402

METHODS = (
    "heavyball",
    "gose_original",
    "combined_original",
    "ancm_original",
    "gose",
    "combined",
    "ancm",
)
REPORT = {
    "gose_original": 1.48,
    "combined_original": 1.49,
    "ancm_original": 8.95,
}  # report, Table 1 (MNIST)
# The optimizer's counters up to its NC seconds (the rest are finer splits and held-out judging).
COUNTERS = COUNTER_KEYS[: COUNTER_KEYS.index("time_s") + 1]


def run_epoch(
    out: Path,
    method: str,
    seed: int,
    steps: int,
    threads: int,
    extra: list[str],
    epoch: int = 1,
    ckpt: Path | None = None,
) -> dict[str, Any]:
    """A run to epoch ``epoch`` of ``steps`` training steps (0: whole epochs) in folder ``out``,
    fresh or resumed from ``ckpt``; the time and NC counters of its last epoch."""
    cfg = compose_cfg(
        [
            f"optimizer={method}",
            "dataset=mnist",
            f"trainer.max_epochs={epoch}",
            f"trainer.limit_train_batches={steps or 1.0}",
            "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            f"hardware.num_threads={threads}",
            f"seed={seed}",
            *([f"ckpt_path={ckpt}"] if ckpt else []),
            *extra,
        ],
        out,
    )
    record = train(cfg)
    assert record["status"] == "completed", record["error"]
    last = record["epochs"][-1]
    return {
        "time": last["time/epoch_s"],
        "cpu": last["time/epoch_cpu_s"],
        "nc": record.get("nc") or {},
    }


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.3g}"
    return f"{int(v)}"


def ratio_range(runs: dict[str, list[dict[str, Any]]], method: str, key: str) -> str:
    """The lowest–highest per-round ratio of ``method``'s ``key`` to heavy ball's in that round."""
    ratios = [o[key] / b[key] for o, b in zip(runs[method], runs["heavyball"], strict=True)]
    return f"{min(ratios):.2f}–{max(ratios):.2f}×"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--steps", type=int, default=150, help="training steps per measured epoch; 0: all"
    )
    ap.add_argument(
        "--epoch",
        type=int,
        default=1,
        help="measure this epoch (> 1: the first ones run once per method, rounds resume there)",
    )
    ap.add_argument(
        "--val-size",
        default="0",
        help="images held out of training (dataset.val_size); 'default': the config's 5,000",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE",
        help="an extra override for one method, e.g. gose:optimizer.every=100",
    )
    return ap.parse_args()


def measure(
    args: argparse.Namespace, extra: dict[str, list[str]], split: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Every round's measured epoch of every method (methods alternate within a round)."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in extra}
    with tempfile.TemporaryDirectory() as tmp:
        run_epoch(Path(tmp, "warm-up"), "heavyball", 0, 20, args.threads, split)
        ckpts = {m: None for m in extra}
        if args.epoch > 1:  # each method's first epochs once; every round resumes after them
            for m in extra:
                run_epoch(
                    Path(tmp, m), m, 1, args.steps, args.threads, split + extra[m], args.epoch - 1
                )
                ckpts[m] = Path(tmp, m, "checkpoints", "last.ckpt")
        for r in range(args.rounds):
            for m in extra:
                seed, ckpt = (r + 1, None) if args.epoch == 1 else (1, ckpts[m])
                out = run_epoch(
                    Path(tmp, f"{m}_{seed}_{r}"), m, seed, args.steps, args.threads,
                    split + extra[m], args.epoch, ckpt,
                )  # fmt: skip
                runs[m].append(out)
                nc = out["nc"]
                note = ", ".join(f"{k} {fmt(nc.get(k))}" for k in COUNTERS if k in nc)
                print(
                    f"round {r} {m:14s} {out['time']:7.2f} s  cpu {out['cpu']:7.2f} s  {note}",
                    flush=True,
                )
    return runs


def print_table(runs: dict[str, list[dict[str, Any]]]) -> None:
    """Per method: medians, ratios to heavy ball with per-round ranges, NC share and counters."""
    base = statistics.median(o["time"] for o in runs["heavyball"])
    base_cpu = statistics.median(o["cpu"] for o in runs["heavyball"])
    # "NC share": seconds of NC work (the optimizer's own time_s) / that run's epoch time, so
    # 1 / (1 − share) is the slowdown measured inside one run, immune to the load between runs.
    # Ranges: the lowest and highest of the per-round ratios (a method over that round's heavy ball).
    head = ["method", "median s", "ratio", "range", "median CPU s", "CPU ratio", "CPU range"]
    head += ["report", "NC share", *COUNTERS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for m in runs:
        times = [o["time"] for o in runs[m]]
        med = statistics.median(times)
        mid = runs[m][sorted(range(len(times)), key=times.__getitem__)[len(times) // 2]]
        nc = mid["nc"]
        share = nc.get("time_s", 0.0) / mid["time"] if nc else None
        cpu = statistics.median(o["cpu"] for o in runs[m])
        row = [m, f"{med:.2f}", f"{med / base:.2f}×", ratio_range(runs, m, "time")]
        row += [f"{cpu:.2f}", f"{cpu / base_cpu:.2f}×", ratio_range(runs, m, "cpu")]
        row.append(fmt(REPORT.get(m)))
        row.append("–" if share is None else f"{share:.1%} (→ {1 / (1 - share):.2f}×)")
        row += [fmt(nc.get(k)) if nc else "–" for k in COUNTERS]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    args = parse_args()
    methods = args.methods.split(",")
    if methods[0] != "heavyball":
        methods = ["heavyball", *[m for m in methods if m != "heavyball"]]
    split = [] if args.val_size == "default" else [f"dataset.val_size={args.val_size}"]
    extra: dict[str, list[str]] = {m: [] for m in methods}
    for item in args.set:
        m, _, override = item.partition(":")
        extra[m].append(override)
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {args.threads}, {args.steps} steps per measured "
        f"epoch, epoch {args.epoch} measured, {args.rounds} rounds; extra overrides {extra}",
        flush=True,
    )
    t0 = time.perf_counter()
    runs = measure(args, extra, split)
    base = statistics.median(o["time"] for o in runs["heavyball"])
    print(f"\nwall {time.perf_counter() - t0:.0f} s; heavy-ball median {base:.2f} s")
    print_table(runs)


if __name__ == "__main__":
    main()
