"""Time-to-target (AlgoPerf's measure): the training time a run takes to reach a validation target.

The config's ``targets`` (default: the data set's ``dataset.targets``) maps a validation metric
to its thresholds, e.g. ``{val/acc: [0.98, 0.99]}``; a metric whose name ends in ``loss`` is
reached at or below its threshold, any other at or above. Every evaluation (each epoch's, and
every ``trainer.val_check_interval`` steps within one) is a row of the record's ``evals``;
:func:`time_to_target` finds, for each (metric, threshold), the first row that reached it.
``stop_at_target=true`` ends the run at the evaluation that reaches the last of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from accelopt.checks import is_finite
from accelopt.errors import ConfigError

__all__ = ["METRICS", "Target", "parse_targets", "time_to_target", "all_reached", "check_interval"]

# the validation metrics every run logs (the data module's held-out ``val`` split)
METRICS = ("val/acc", "val/loss")
# what a time-to-target entry copies from the evaluation row that reached it
REACHED_KEYS = ("step", "epoch", "time/train_s", "time/train_cpu_s")


@dataclass(frozen=True)
class Target:
    """One threshold of one validation metric."""

    metric: str
    threshold: float

    @property
    def lower_is_better(self) -> bool:
        return self.metric.endswith("loss")

    def reached_by(self, row: Mapping[str, Any]) -> bool:
        value = row.get(self.metric)
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        return value <= self.threshold if self.lower_is_better else value >= self.threshold


def parse_targets(spec: Any, *, has_val: bool = True, stop: bool = False) -> list[Target]:
    """The targets of ``spec`` (a mapping metric → threshold or list of thresholds; None: none).

    Raises :class:`~accelopt.config.ConfigError` (one line) for an unknown metric, a
    non-numeric threshold, or ``stop`` without any target. Without a validation split
    (``has_val`` false, ``dataset.val_size=0``) there is nothing to reach: no targets, and
    ``stop`` is refused.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        if stop:
            raise ConfigError("stop_at_target=true needs targets (e.g. targets={val/acc: [0.98]})")
        return []
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"targets={spec!r} is not a mapping: give metric → thresholds, "
            "e.g. targets={val/acc: [0.98, 0.99]}"
        )
    if not has_val:
        if stop:
            raise ConfigError(
                "stop_at_target=true needs a validation split: dataset.val_size=0 holds none out"
            )
        return []
    out = []
    for metric, values in spec.items():
        if metric not in METRICS:
            raise ConfigError(f"targets: unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
        values = (
            list(values)
            if isinstance(values, Sequence) and not isinstance(values, str)
            else [values]
        )
        bad = [v for v in values if not is_finite(v)]
        if bad or not values:
            raise ConfigError(
                f"targets.{metric}: threshold {bad[0] if bad else values!r} is not a finite "
                "number; give a number or a list of numbers, e.g. [0.98, 0.99]"
            )
        out += [Target(str(metric), float(v)) for v in values]
    return out


def time_to_target(evals: Sequence[Mapping[str, Any]], targets: Sequence[Target]) -> list[dict]:
    """For each target, the first row of ``evals`` (in step order) that reached it: its
    ``step``, ``epoch``, ``time/train_s`` and ``time/train_cpu_s`` (all None if none did)."""
    rows = sorted(evals, key=lambda r: r.get("step") or 0)
    out = []
    for t in targets:
        first = next((r for r in rows if t.reached_by(r)), None)
        entry: dict[str, Any] = {"metric": t.metric, "threshold": t.threshold}
        entry.update({k: None if first is None else first.get(k) for k in REACHED_KEYS})
        out.append(entry)
    return out


def all_reached(evals: Sequence[Mapping[str, Any]], targets: Sequence[Target]) -> bool:
    """Whether every target has been reached by some row (False without targets)."""
    return bool(targets) and all(any(t.reached_by(r) for r in evals) for t in targets)


def check_interval(val_check_batch: float, num_batches: float, per_epoch: bool) -> None:
    """Refuse a ``trainer.val_check_interval`` that does not divide the epoch's batches.

    Lightning then evaluates at the multiples only, not at the epoch's end, so the epoch's
    row (and its test accuracy) would come from an earlier step.
    """
    finite = math.isfinite(val_check_batch) and math.isfinite(num_batches)
    if not per_epoch or not finite or int(num_batches) % int(val_check_batch) == 0:
        return
    n = int(num_batches)
    divisors = [d for d in range(1, n + 1) if n % d == 0][-6:-1] or [n]
    raise ConfigError(
        f"trainer.val_check_interval evaluates every {int(val_check_batch)} batches, which does "
        f"not divide the {n} training batches of an epoch (the epoch's end would not be "
        f"evaluated); use a divisor of {n}, e.g. {', '.join(map(str, divisors))}"
    )
