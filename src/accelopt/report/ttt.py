"""Time to target (AlgoPerf's measure): training seconds until a validation target is reached.

Each run's record holds, per target (metric, threshold), the first evaluation that reached it
(:mod:`accelopt.targets`). Per group and target: how many runs reached it, the median of the
runs' training seconds — a run that never reached it counts as infinitely slow, so the median
is "not reached" once half the runs missed it — and [min, max] over the runs that reached it;
the same median of the training steps and of the process's CPU seconds (both unmoved by other
work sharing the machine); and the ratio to the base method (``--pair``/the defaults, else the
baseline) in the same setting, seed by seed over the seeds where both reached it: median [min,
max] of the ratios, of wall seconds and of CPU seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .aggregate import Group, Summary
from .records import Run

__all__ = ["TimeToTarget", "time_to_targets", "targets_of"]

TIME_KEY = "time/train_s"
CPU_KEY = "time/train_cpu_s"
STEP_KEY = "step"


@dataclass(frozen=True)
class TimeToTarget:
    """One group's time to one target, and its ratio to the base's (paired by seed)."""

    group: Group
    metric: str
    threshold: float
    n: int  # runs that trained (status other than failed)
    reached: int
    median: float  # training seconds; inf: not reached by half the runs or more
    lo: float | None  # min and max over the runs that reached it
    hi: float | None
    cpu_median: float
    steps_median: float
    base: str | None = None  # the base group's label
    ratios: tuple[float, ...] = ()  # method / base seconds, per paired seed
    cpu_ratios: tuple[float, ...] = ()  # method / base CPU seconds, per paired seed


def targets_of(runs: list[Run]) -> list[tuple[str, float]]:
    """The (metric, threshold) pairs the runs' records hold, in first-seen order."""
    seen: dict[tuple[str, float], None] = {}
    for r in runs:
        for t in r.targets:
            seen.setdefault((str(t["metric"]), float(t["threshold"])), None)
    return list(seen)


def _seconds(r: Run, metric: str, threshold: float, key: str = TIME_KEY) -> float | None:
    for t in r.targets:
        if t["metric"] == metric and float(t["threshold"]) == threshold:
            value = t.get(key)
            return float(value) if isinstance(value, int | float) else None
    return None


def _trained(g: Group) -> list[Run]:
    return [r for r in g.runs if r.status != "failed"]


def _median(values: list[float | None]) -> float:
    if not values:
        return math.nan
    return float(np.median([math.inf if v is None else v for v in values]))


def _by_seed(g: Group, metric: str, threshold: float, key: str = TIME_KEY) -> dict[int, float]:
    """Seed → seconds (``key``) to the target, for seeds with one run in ``g`` that reached it."""
    times: dict[int, list[float | None]] = {}
    for r in _trained(g):
        times.setdefault(r.seed, []).append(_seconds(r, metric, threshold, key))
    return {s: v[0] for s, v in times.items() if len(v) == 1 and v[0] is not None}


def _one(summary: Summary, g: Group, metric: str, threshold: float) -> TimeToTarget:
    runs = _trained(g)
    times = [_seconds(r, metric, threshold) for r in runs]
    hit = [t for t in times if t is not None]
    base_name = summary.bases.get(g.name) or summary.baseline
    b = summary.counterpart(g, base_name) if base_name != g.name else None
    ratios = cpu_ratios = ()
    if b is not None:
        ratios = _paired_ratios(g, b, metric, threshold, TIME_KEY)
        cpu_ratios = _paired_ratios(g, b, metric, threshold, CPU_KEY)
    return TimeToTarget(
        group=g,
        metric=metric,
        threshold=threshold,
        n=len(runs),
        reached=len(hit),
        median=_median(times),
        lo=min(hit) if hit else None,
        hi=max(hit) if hit else None,
        cpu_median=_median([_seconds(r, metric, threshold, CPU_KEY) for r in runs]),
        steps_median=_median([_seconds(r, metric, threshold, STEP_KEY) for r in runs]),
        base=None if b is None else b.method,
        ratios=ratios,
        cpu_ratios=cpu_ratios,
    )


def _paired_ratios(
    g: Group, b: Group, metric: str, threshold: float, key: str
) -> tuple[float, ...]:
    """``g``'s / ``b``'s ``key`` to the target, seed by seed where both reached it."""
    mine, theirs = _by_seed(g, metric, threshold, key), _by_seed(b, metric, threshold, key)
    return tuple(mine[s] / theirs[s] for s in sorted(set(mine) & set(theirs)) if theirs[s] > 0)


def time_to_targets(summary: Summary, dataset: str) -> list[TimeToTarget]:
    """Every group × target of ``dataset`` (groups in report order, lr largest first)."""
    gs = [
        summary.groups[(dataset, m, lr)]
        for m in summary.methods(dataset)
        for lr in summary.lrs(dataset)
        if (dataset, m, lr) in summary.groups
    ]
    targets = targets_of([r for g in gs for r in g.runs])
    return [_one(summary, g, m, t) for m, t in targets for g in gs if _trained(g)]
