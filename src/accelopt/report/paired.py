"""Paired comparison of each method with its base: final test accuracy, seed by seed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .aggregate import DEFAULT_BASES, Group, Stats, Summary, counterpart

__all__ = ["DEFAULT_BASES", "Paired", "paired", "verdict"]

WITHIN_NOISE = "within noise"
HIGHER = "higher"
LOWER = "lower"
NO_PAIRS = "no pairs"


@dataclass(frozen=True)
class Paired:
    """Method − base final test accuracy of one (dataset, lr), over the seeds where both ran.

    Only seeds with exactly one completed run (with a final test accuracy) in each of the two
    groups are paired; every other seed of either group is listed in ``unpaired``.
    """

    dataset: str
    method: str
    base: str
    lr: float
    seeds: tuple[int, ...]  # the paired seeds, ascending
    unpaired: tuple[int, ...]  # seeds of either group that could not be paired
    diff: Stats | None  # of the paired differences (method − base); None without pairs
    better: int  # pairs where the method's accuracy is higher than the base's
    spread: float  # the larger of the two groups' seed std of final accuracy (NaN: neither)
    verdict: str

    @property
    def n(self) -> int:
        """The number of pairs."""
        return len(self.seeds)


def verdict(diff: Stats | None, spread: float) -> str:
    """``within noise``, ``higher`` or ``lower`` (``no pairs`` without any pair).

    Within noise if n < 2, or [min, max] of the differences includes 0, or |mean| ≤ ``spread``
    (the larger seed std of the two methods); otherwise the sign of the mean, on which all the
    pairs then agree.
    """
    if diff is None:
        return NO_PAIRS
    if diff.n < 2 or diff.min <= 0.0 <= diff.max or not abs(diff.mean) > spread:
        return WITHIN_NOISE
    return HIGHER if diff.mean > 0 else LOWER


def _final_accs(g: Group) -> dict[int, float]:
    """Seed → final test accuracy of ``g``'s completed runs; repeated seeds are left out."""
    accs: dict[int, list[float]] = {}
    for r in g.completed:
        if r.final_test_acc is not None:
            accs.setdefault(r.seed, []).append(r.final_test_acc)
    return {s: v[0] for s, v in accs.items() if len(v) == 1}


def _pair(g: Group, b: Group) -> Paired:
    mine, theirs = _final_accs(g), _final_accs(b)
    seeds = sorted(set(mine) & set(theirs))
    unpaired = sorted({r.seed for r in g.runs + b.runs} - set(seeds))
    diff = Stats.of(mine[s] - theirs[s] for s in seeds)
    stds = [s.std for s in (g.final_acc, b.final_acc) if s is not None and math.isfinite(s.std)]
    spread = max(stds, default=math.nan)
    return Paired(
        dataset=g.dataset,
        method=g.method,
        base=b.method,
        lr=g.lr,
        seeds=tuple(seeds),
        unpaired=tuple(unpaired),
        diff=diff,
        better=sum(mine[s] > theirs[s] for s in seeds),
        spread=spread,
        verdict=verdict(diff, spread),
    )


def paired(
    summary: Summary | Mapping[tuple[str, str, float], Group],
    bases: Mapping[str, str] | None = None,
) -> list[Paired]:
    """Every (method, base) comparison whose two groups exist at the same (dataset, lr) and
    setting (:meth:`Summary.counterpart`: the base's group with the same non-optimizer keys).

    ``bases`` (method → base) defaults to ``summary.bases`` (for a mapping of groups: to
    :data:`DEFAULT_BASES`). In the order of the groups: dataset, method, lr largest first.
    """
    if isinstance(summary, Summary):
        groups = summary.groups
        bases = summary.bases if bases is None else bases
    else:
        groups = summary
        bases = DEFAULT_BASES if bases is None else bases
    out = []
    for g in groups.values():
        base = bases.get(g.name or g.method)
        b = counterpart(groups, g, base) if base is not None and base != g.name else None
        if b is not None:
            out.append(_pair(g, b))
    return out
