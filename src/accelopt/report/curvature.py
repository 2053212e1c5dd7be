"""The curvature monitor's measurements summarised per group (``callbacks=curvature`` runs).

Per group, over its completed runs' ``curvature`` lists (:class:`accelopt.monitor.CurvatureMonitor`:
λ_min/λ_max from a few Lanczos steps on a fixed probe batch): the first measurement (step 0,
the initial network) apart from the rest, since the network's first steps change its curvature
most; for the rest, the median over runs of each run's median λ_max and λ_min, each run's last
λ_min and λ_max, and how many measurements saw λ_min < 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .aggregate import Group

__all__ = ["CurvatureSummary", "curvature_summary"]


@dataclass(frozen=True)
class CurvatureSummary:
    """One group's monitor measurements (medians over its completed runs)."""

    runs: int  # completed runs with at least two measurements
    points: int  # measurements after the first, all runs together
    first_max: float  # λ_max at the first measurement
    first_min: float
    median_max: float  # median over runs of the run's median over the later measurements
    median_min: float
    last_max: float
    last_min: float
    negative: int  # later measurements with λ_min < 0


def _values(points: list[dict], key: str) -> list[float]:
    return [float(p[key]) for p in points if isinstance(p.get(key), int | float)]


def curvature_summary(g: Group) -> CurvatureSummary | None:
    """The summary of ``g``'s completed runs, or None if none has two measurements."""
    series = [sorted(r.curvature, key=lambda p: int(p["step"])) for r in g.completed]
    series = [s for s in series if len(_values(s, "lambda_min")) >= 2]
    if not series:
        return None
    later = [s[1:] for s in series]

    def med(values: list[float]) -> float:
        return float(np.median(values)) if values else float("nan")

    return CurvatureSummary(
        runs=len(series),
        points=sum(len(s) for s in later),
        first_max=med([v for s in series for v in _values(s[:1], "lambda_max")]),
        first_min=med([v for s in series for v in _values(s[:1], "lambda_min")]),
        median_max=med([med(_values(s, "lambda_max")) for s in later]),
        median_min=med([med(_values(s, "lambda_min")) for s in later]),
        last_max=med([v for s in series for v in _values(s[-1:], "lambda_max")]),
        last_min=med([v for s in series for v in _values(s[-1:], "lambda_min")]),
        negative=sum(1 for s in later for v in _values(s, "lambda_min") if v < 0),
    )
