"""Aggregation: runs grouped by variant, statistics over the completed seeds.

A group is one (dataset, label, lr): the label is the method plus every config key that tells
its runs apart from the sweep's other runs of that data set (:func:`accelopt.variant.describe`),
so a group only ever holds runs whose configs differ in the seed alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from accelopt.run.record import NC_HELDOUT_KEYS, NC_KEYS
from accelopt.variant import describe

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
    "gose_original": "heavyball",
    "gose_random": "heavyball",
    "combined_random": "agd",
    "ancm_random": "agd",
    "ancm": "agd",
    "ancm_original": "agd",
    "combined": "agd",
    "combined_original": "agd",
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
    """The runs of one variant at one (dataset, lr); statistics over its completed runs.

    ``method`` is the group's label (the optimizer's name, plus what differs from the other
    runs, e.g. ``heavyball model=mlp``); ``name`` the optimizer's config-group name and
    ``setting`` the label's parts outside the optimizer (what a base method must share).
    """

    dataset: str
    method: str
    lr: float
    runs: list[Run]
    name: str = ""
    setting: tuple[str, ...] = ()
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

    def __post_init__(self) -> None:
        self.name = self.name or self.method

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
    varying: dict[str, list[str]] = field(default_factory=dict)  # dataset → keys that vary

    @property
    def datasets(self) -> list[str]:
        return sorted({k[0] for k in self.groups})

    def _order(self, label: str) -> tuple[bool, str]:
        return (label.split(" ", 1)[0] != self.baseline, label)

    def methods(self, dataset: str) -> list[str]:
        """Methods (group labels) of a dataset, the baseline's first, then alphabetical."""
        return sorted({k[1] for k in self.groups if k[0] == dataset}, key=self._order)

    def lrs(self, dataset: str) -> list[float]:
        """Learning rates of a dataset, largest first (the report's grid order)."""
        return sorted({k[2] for k in self.groups if k[0] == dataset}, reverse=True)

    def all_methods(self) -> list[str]:
        return sorted({k[1] for k in self.groups}, key=self._order)

    def counterpart(self, g: Group, name: str) -> Group | None:
        """The group of method ``name`` in ``g``'s setting at its (dataset, lr), if exactly one."""
        return counterpart(self.groups, g, name)

    def at(self, dataset: str, lr: float) -> list[Group]:
        """The groups of one (dataset, lr), in :meth:`methods` order."""
        return [
            self.groups[(dataset, m, lr)]
            for m in self.methods(dataset)
            if (dataset, m, lr) in self.groups
        ]


def counterpart(
    groups: Mapping[tuple[str, str, float], Group], g: Group, name: str
) -> Group | None:
    """The group of method ``name`` in ``g``'s setting at its (dataset, lr), if exactly one."""
    found = [
        h
        for (d, _, lr), h in groups.items()
        if (d, lr) == (g.dataset, g.lr) and h.name == name and h.setting == g.setting
    ]
    return found[0] if len(found) == 1 else None


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


def _length_note(g: Group) -> str | None:
    """Completed runs of one group that trained for different numbers of epochs: the training
    length may change on resume, so it is not part of the variant; said, not hidden."""
    lengths = sorted({len(r.epochs) for r in g.completed})
    if len(lengths) < 2:
        return None
    return (
        f"{g.dataset} / {g.method} / lr {fmt_lr(g.lr)}: completed runs trained for different "
        f"numbers of epochs ({', '.join(map(str, lengths))}; trainer.max_epochs may change on "
        "resume, so it does not split groups): their final numbers are pooled"
    )


def _ratios(summary: Summary) -> list[str]:
    """Set each group's seconds-per-epoch ratio to the baseline (in the same setting); notes
    where there is none."""
    notes = []
    groups, baseline = summary.groups, summary.baseline
    for g in groups.values():
        base = summary.counterpart(g, baseline)
        if base is not None and base.epoch_s is not None and g.epoch_s is not None:
            g.ratio = g.epoch_s.mean / base.epoch_s.mean if base.epoch_s.mean > 0 else None
    for dataset, lr in sorted({(k[0], k[2]) for k in groups}):
        here = [g for k, g in groups.items() if (k[0], k[2]) == (dataset, lr)]
        base = next((g for g in here if g.name == baseline), None)
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
    varying = _label(sweep.runs)
    groups: dict[tuple[str, str, float], Group] = {}
    for r in sweep.runs:
        groups.setdefault(r.key, Group(r.dataset, r.key[1], r.lr, [], r.method, r.setting))
        groups[r.key].runs.append(r)
    groups = dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])))
    notes: list[str] = []
    for g in groups.values():
        notes += [n for n in (_duplicate_seed_note(g), _length_note(g)) if n]
        _group_stats(g)
    bases = dict(DEFAULT_BASES if bases is None else bases)
    summary = Summary(sweep, baseline, groups, notes, bases, varying)
    notes += _ratios(summary)
    return summary


def _label(runs: Sequence[Run]) -> dict[str, list[str]]:
    """Set every run's ``label`` and ``setting`` (per data set); return each data set's keys
    that vary. Runs that would still share a label with another variant get its hash added."""
    varying: dict[str, list[str]] = {}
    for dataset in sorted({r.dataset for r in runs}):
        mine = [r for r in runs if r.dataset == dataset]
        text, parts = describe(
            [r.identity for r in mine], [r.method for r in mine], [r.choices for r in mine]
        )
        varying[dataset] = text
        for r, (opt, rest) in zip(mine, parts, strict=True):
            r.label, r.setting = " ".join([r.method, *opt, *rest]), tuple(rest)
    by_key: dict[tuple[str, str, float], set[str]] = {}
    for r in runs:
        by_key.setdefault(r.key, set()).add(r.variant)
    for r in runs:
        if len(by_key[r.key]) > 1:
            r.label = f"{r.label} [{r.variant}]"
    return varying
