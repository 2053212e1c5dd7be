"""Per-step cost of the graph-protocol optimizers (AdaHessian, Sophia-H) against heavy ball.

Run (repository root, venv active; about a minute on 1 CPU thread)::

    python benchmarks/bench_second_order.py                    # synthetic 28x28, batch 128
    python benchmarks/bench_second_order.py --rounds 7 --steps 20 --threads 1

One process, the report's CNN (``ReportCNN``, 62,026 parameters), a fixed random batch of
28x28 images (MNIST's shape, batch 128). Each optimizer is stepped exactly as
``ClassifierModule`` steps it: heavy ball (plain protocol: ``backward``, ``step``); AdaHessian and
Sophia-H (graph protocol: ``backward(create_graph=True)``, ``step`` (whose Hutchinson estimate
differentiates ``.grad`` once: one Hessian-vector product), ``zero_grad(set_to_none=True)``).
Sophia-H estimates the Hessian every ``update_period`` = 10 steps (its config), so its mean
cost per step is reported over whole periods. Rounds alternate the methods (so drifts of a
shared machine hit all of them alike); each round times ``--steps`` steps after 2 warm-up
steps; medians over rounds of wall time (``time.perf_counter``) and process CPU time
(``time.process_time``) per step, and their ratios to heavy ball, are printed and written as
JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_optimizer import AdaHessian, SophiaH

from accelopt.models import ReportCNN

ROOT = Path(__file__).resolve().parents[1]


def _factories() -> dict[str, tuple[Callable, bool]]:
    """name -> (optimizer factory with the shipped configs' values, needs the graph)."""
    return {
        "heavyball": (lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9), False),
        "adahessian": (
            lambda p: AdaHessian(p, lr=0.15, betas=(0.9, 0.999), eps=1e-4, update_period=1),
            True,
        ),
        "sophiah": (
            lambda p: SophiaH(p, lr=0.06, betas=(0.965, 0.99), p=0.04, update_period=10),
            True,
        ),
    }


def _stepper(name: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    factory, graph = _factories()[name]
    torch.manual_seed(0)
    net = ReportCNN()
    opt = factory(net.parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward(create_graph=graph)
        opt.step()
        if graph:
            opt.zero_grad(set_to_none=True)  # free the double-backward graph

    return step


def _time(step: Callable[[], None], n: int) -> tuple[float, float]:
    """(wall s, CPU s) per step over ``n`` steps."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="steps per round (a multiple of 10)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/second_order.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    names = list(_factories())
    steppers = {n: _stepper(n, x, y) for n in names}
    for n in names:  # warm-up (allocator, first Hessian estimate)
        _time(steppers[n], 2)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            w, c = _time(steppers[n], args.steps)
            wall[n].append(w)
            cpu[n].append(c)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s)",
        "batch": args.batch,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "methods": {},
    }
    base_w, base_c = statistics.median(wall["heavyball"]), statistics.median(cpu["heavyball"])
    print(
        f"{'method':<12}{'wall ms/step':>14}{'CPU ms/step':>14}{'wall ratio':>12}{'CPU ratio':>11}"
    )
    for n in names:
        w, c = statistics.median(wall[n]), statistics.median(cpu[n])
        result["methods"][n] = {
            "wall_ms": 1e3 * w,
            "cpu_ms": 1e3 * c,
            "wall_ratio": w / base_w,
            "cpu_ratio": c / base_c,
        }
        print(f"{n:<12}{1e3 * w:>14.2f}{1e3 * c:>14.2f}{w / base_w:>12.2f}{c / base_c:>11.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
