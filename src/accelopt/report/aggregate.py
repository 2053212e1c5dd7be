"""Aggregation: runs grouped by (dataset, method, lr), statistics over the completed seeds."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from accelopt.record import NC_HELDOUT_KEYS, NC_KEYS

from .records import ReportError, Run, Sweep

__all__ = [
    "DEFAULT_BASELINE",
    "DEFAULT_BASES",
    "NC_COUNT_KEYS",
    "Stats",
    "Curve",
    "Group",
    "Summary",
    "summarise",
]

NC_COUNT_KEYS = ("checks", "searches", "steps", "rejected", "hvps")
DEFAULT_BASELINE = "heavyball"
# the method each method is compared with, seed by seed (config-group names, as in the records)
DEFAULT_BASES = {
    "gose": "heavyball",
    "gose_seed": "heavyball",
    "gose_random": "heavyball",
    "combined_random": "agd",
    "ancm_random": "agd",
    "ancm": "agd",
    "ancm_seed": "agd",
    "combined": "agd",
    "combined_seed": "agd",
}


@dataclass(frozen=True)
class Stats:
    """Mean, sample std (NaN for n < 2), min and max of n values."""

    n: int
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stats | None:
        """Stats of the non-null values, or None if there are none."""
        a = np.asarray([v for v in values if v is not None], dtype=np.float64)
        if a.size == 0:
            return None
        std = float(np.std(a, ddof=1)) if a.size > 1 else math.nan
        return cls(int(a.size), float(np.mean(a)), std, float(np.min(a)), float(np.max(a)))


@dataclass(frozen=True)
class Curve:
    """A mean curve over seeds with its min–max band."""

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int


@dataclass(eq=False)
class Group:
    """The runs of one (dataset, method, lr); statistics over its completed runs."""

    dataset: str
    method: str
    lr: float
    runs: list[Run]
    final_acc: Stats | None = None
    epoch_s: Stats | None = None
    ratio: float | None = None
    loss: Curve | None = None
    acc: Curve | None = None
    nc: dict[str, Stats | None] | None = None
    nc_fired: int = 0  # completed runs with at least one NC step
    nc_share: Stats | None = None  # share of each run's training time spent in NC work
    lambda_min: Curve | None = None  # curvature-monitor λ_min per step (mean over seeds)
    lambda_max: Curve | None = None

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "completed"]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)


@dataclass(eq=False)
class Summary:
    """Groups and notes of a sweep, ready to plot and tabulate."""

    sweep: Sweep
    baseline: str
    groups: dict[tuple[str, str, float], Group]
    notes: list[str]
    bases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_BASES))  # method → base

    @property
    def datasets(self) -> list[str]:
        return sorted({k[0] for k in self.groups})

    def methods(self, dataset: str) -> list[str]:
        """Methods of a dataset, the baseline first, then alphabetical."""
        ms = {k[1] for k in self.groups if k[0] == dataset}
        return sorted(ms, key=lambda m: (m != self.baseline, m))

    def lrs(self, dataset: str) -> list[float]:
        """Learning rates of a dataset, largest first (the report's grid order)."""
        return sorted({k[2] for k in self.groups if k[0] == dataset}, reverse=True)

    def all_methods(self) -> list[str]:
        ms = {k[1] for k in self.groups}
        return sorted(ms, key=lambda m: (m != self.baseline, m))

    def at(self, dataset: str, lr: float) -> list[Group]:
        """The groups of one (dataset, lr), in :meth:`methods` order."""
        return [
            self.groups[(dataset, m, lr)]
            for m in self.methods(dataset)
            if (dataset, m, lr) in self.groups
        ]


def fmt_lr(lr: float) -> str:
    """A learning rate as the report writes it (``0.02``, ``1e-05``)."""
    return format(lr, "g")


def _loss_curve(runs: Sequence[Run]) -> Curve | None:
    runs = [r for r in runs if r.loss_steps.size]
    if not runs:
        return None
    common = runs[0].loss_steps
    for r in runs[1:]:
        common = np.intersect1d(common, r.loss_steps)
    if common.size == 0:
        return None
    rows = []
    for r in runs:
        # the last record of a repeated step wins
        index = {int(s): i for i, s in enumerate(r.loss_steps)}
        rows.append(r.loss_values[[index[int(s)] for s in common]])
    m = np.vstack(rows)
    keep = np.all(np.isfinite(m), axis=0)
    if not keep.any():
        return None
    m = m[:, keep]
    return Curve(common[keep], m.mean(axis=0), m.min(axis=0), m.max(axis=0), len(runs))


def _pooled_curve(per_x: dict[int, list[float]], n: int, shift: int = 0) -> Curve | None:
    """Mean, min and max per x of the values pooled from ``n`` runs."""
    if not per_x:
        return None
    xs = sorted(per_x)
    vals = [np.asarray(per_x[x], dtype=np.float64) for x in xs]
    return Curve(
        np.asarray(xs, dtype=np.int64) + shift,
        np.asarray([v.mean() for v in vals]),
        np.asarray([v.min() for v in vals]),
        np.asarray([v.max() for v in vals]),
        n,
    )


def _acc_curve(runs: Sequence[Run]) -> Curve | None:
    per_epoch: dict[int, list[float]] = {}
    for r in runs:
        for e in r.epochs:
            if e.get("test/acc") is not None:
                per_epoch.setdefault(int(e["epoch"]), []).append(e["test/acc"])
    # 1-based epoch numbers, as the report plots them
    return _pooled_curve(per_epoch, len(runs), shift=1)


def _curvature_curve(runs: Sequence[Run], key: str) -> Curve | None:
    """``key`` (``lambda_min``/``lambda_max``) of the curvature monitor per step, over seeds."""
    per_step: dict[int, list[float]] = {}
    contributing = 0
    for r in runs:
        points = [(int(m["step"]), m.get(key)) for m in r.curvature]
        points = [(s, v) for s, v in points if isinstance(v, (int, float)) and math.isfinite(v)]
        contributing += bool(points)
        for s, v in points:
            per_step.setdefault(s, []).append(float(v))
    return _pooled_curve(per_step, contributing)


def _group_stats(g: Group) -> None:
    """Fill ``g``'s statistics from its completed runs."""
    done = g.completed
    g.final_acc = Stats.of(r.final_test_acc for r in done)
    g.epoch_s = Stats.of(r.epoch_seconds for r in done)
    g.loss = _loss_curve(done)
    g.acc = _acc_curve(done)
    g.lambda_min = _curvature_curve(done, "lambda_min")
    g.lambda_max = _curvature_curve(done, "lambda_max")
    with_nc = [r for r in done if r.nc is not None]
    if with_nc:
        g.nc = {k: Stats.of(r.nc.get(k) for r in with_nc) for k in NC_KEYS + NC_HELDOUT_KEYS}
        g.nc_fired = sum((r.nc.get("steps") or 0) > 0 for r in with_nc)
        g.nc_share = Stats.of(r.nc_share for r in with_nc)


def _duplicate_seed_note(g: Group) -> str | None:
    seeds = [r.seed for r in g.runs]
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if not dup:
        return None
    return (
        f"{g.dataset} / {g.method} / lr {fmt_lr(g.lr)}: seed(s) {dup} appear more "
        "than once; each record counts as a repeat"
    )


def _ratios(groups: dict[tuple[str, str, float], Group], baseline: str) -> list[str]:
    """Set each group's seconds-per-epoch ratio to the baseline; notes where there is none."""
    notes = []
    for (dataset, _method, lr), g in groups.items():
        base = groups.get((dataset, baseline, lr))
        if base is not None and base.epoch_s is not None and g.epoch_s is not None:
            g.ratio = g.epoch_s.mean / base.epoch_s.mean if base.epoch_s.mean > 0 else None
    for dataset, lr in sorted({(k[0], k[2]) for k in groups}):
        base = groups.get((dataset, baseline, lr))
        timed = any(g.epoch_s for k, g in groups.items() if (k[0], k[2]) == (dataset, lr))
        if not timed:
            continue
        if base is None:
            notes.append(f"{dataset} / lr {fmt_lr(lr)}: no `{baseline}` run, so no ratios to it")
        elif base.epoch_s is None:
            notes.append(
                f"{dataset} / lr {fmt_lr(lr)}: no completed `{baseline}` run with epoch "
                "times, so no ratios to it"
            )
    return notes


def summarise(
    sweep: Sweep | Sequence[Run],
    baseline: str = DEFAULT_BASELINE,
    bases: Mapping[str, str] | None = None,
) -> Summary:
    """Group runs by (dataset, method, lr) and compute every statistic the report shows.

    ``bases`` (method → base, default :data:`DEFAULT_BASES`) are the paired comparisons.
    """
    if not isinstance(sweep, Sweep):
        runs = list(sweep)
        if not runs:
            raise ReportError("no runs to summarise")
        sweep = Sweep(root=Path(os.path.commonpath([str(r.path.parent) for r in runs])), runs=runs)
    groups: dict[tuple[str, str, float], Group] = {}
    for r in sweep.runs:
        groups.setdefault(r.key, Group(r.dataset, r.method, r.lr, []))
        groups[r.key].runs.append(r)
    groups = dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])))
    notes: list[str] = []
    for g in groups.values():
        note = _duplicate_seed_note(g)
        if note:
            notes.append(note)
        _group_stats(g)
    notes += _ratios(groups, baseline)
    bases = dict(DEFAULT_BASES if bases is None else bases)
    return Summary(sweep=sweep, baseline=baseline, groups=groups, notes=notes, bases=bases)
