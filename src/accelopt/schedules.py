"""Learning-rate schedules (the ``scheduler`` config group) built from torch's own schedulers.

A schedule is a small mapping (conf/scheduler/<name>.yaml, part of the run's identity):

- ``constant``: no scheduler (the report's constant lr).
- ``step``: ``MultiStepLR(milestones, gamma)``, milestones in epochs, stepped once per epoch.
- ``cosine``: ``CosineAnnealingLR(T_max=total, eta_min=floor·lr)``, stepped per batch.
- ``warmup_cosine``: ``SequentialLR([LinearLR(start_factor → 1, warmup steps),
  CosineAnnealingLR(total − warmup, eta_min=floor·lr)])``, stepped per batch.
- ``linear``: ``LinearLR(1 → end_factor, total)``, stepped per batch.

``total`` is Lightning's ``trainer.estimated_stepping_batches``; ``warmup`` is a fraction of it
(a float in (0, 1)) or a number of steps (an integer >= 1); ``floor`` is a fraction of the
optimizer's (first group's) initial lr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    SequentialLR,
)

from accelopt.checks import is_int, is_number

__all__ = ["INTERVALS", "SCHEDULES", "build_scheduler", "check_scheduler", "warmup_steps"]

INTERVALS = {"constant": None, "step": "epoch", "cosine": "step"}
INTERVALS.update({"warmup_cosine": "step", "linear": "step"})
SCHEDULES = tuple(INTERVALS)


def warmup_steps(warmup: float | int, total: int) -> int:
    """Warm-up length in steps: ``warmup`` steps (int >= 1) or ``round(warmup·total)`` (>= 1)."""
    if isinstance(warmup, int):
        return warmup
    return max(1, round(warmup * total))


def _problem(spec: Mapping[str, Any]) -> str | None:
    """What is wrong with ``spec`` (one phrase), or None."""
    name = spec.get("name")
    if name not in INTERVALS:
        return f"scheduler.name={name!r} is invalid; accepted: {', '.join(SCHEDULES)}"
    floor, warmup = spec.get("floor", 0.0), spec.get("warmup", 0.05)
    if name in ("cosine", "warmup_cosine") and not (is_number(floor) and 0 <= floor <= 1):
        return f"scheduler.floor={floor!r} is invalid: a fraction of the lr in [0, 1], e.g. 0.0"
    if name == "warmup_cosine":
        ok_int = is_int(warmup) and warmup >= 1
        ok_frac = isinstance(warmup, float) and 0 < warmup < 1
        start = spec.get("start_factor", 0.01)
        if not (ok_int or ok_frac):
            return (
                f"scheduler.warmup={warmup!r} is invalid: a fraction of training in (0, 1) "
                "(e.g. 0.05) or a number of steps >= 1 (e.g. 100)"
            )
        if not (is_number(start) and 0 < start <= 1):
            return f"scheduler.start_factor={start!r} is invalid: a number in (0, 1], e.g. 0.01"
    if name == "linear":
        end = spec.get("end_factor", 0.0)
        if not (is_number(end) and 0 <= end <= 1):
            return f"scheduler.end_factor={end!r} is invalid: a number in [0, 1], e.g. 0.0"
    if name == "step":
        milestones, gamma = spec.get("milestones"), spec.get("gamma", 0.1)
        ok = isinstance(milestones, list | tuple) and all(is_int(m) and m >= 1 for m in milestones)
        if not ok or list(milestones) != sorted(milestones):
            return (
                f"scheduler.milestones={milestones!r} is invalid: increasing epochs >= 1, "
                "e.g. [3, 5]"
            )
        if not (is_number(gamma) and gamma > 0):
            return f"scheduler.gamma={gamma!r} is invalid: a number > 0, e.g. 0.1"
    return None


def check_scheduler(
    spec: Mapping[str, Any] | None, trainer_cfg: Mapping[str, Any] | None = None
) -> None:
    """Raise ConfigError for the first invalid value of the ``scheduler`` config (and for a
    per-batch schedule over an unbounded run: ``trainer.max_epochs=-1`` without ``max_steps``)."""
    from omegaconf import DictConfig, OmegaConf

    from accelopt.errors import ConfigError  # a leaf: no cycle through config

    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)  # type: ignore[assignment]
    problem = None if spec is None else _problem(spec)
    trainer_cfg = trainer_cfg or {}
    unbounded = trainer_cfg.get("max_epochs") == -1 and (trainer_cfg.get("max_steps") or -1) == -1
    if problem is None and spec is not None and INTERVALS[spec["name"]] == "step" and unbounded:
        problem = (
            f"scheduler={spec['name']} needs a finite number of training steps, and "
            "trainer.max_epochs=-1 with trainer.max_steps=-1 has none; set either"
        )
    if problem is not None:
        raise ConfigError(problem + ".")


def build_scheduler(
    spec: Mapping[str, Any] | None, optimizer: Optimizer, total: int
) -> tuple[LRScheduler | None, str | None]:
    """The torch scheduler of ``spec`` over ``total`` optimizer steps, and its interval."""
    name = "constant" if spec is None else spec["name"]
    if name == "constant":
        return None, None
    assert spec is not None
    total = max(int(total), 1)
    eta_min = float(spec.get("floor", 0.0)) * float(optimizer.param_groups[0]["lr"])
    if name == "step":
        sched: LRScheduler = MultiStepLR(
            optimizer, list(spec["milestones"]), gamma=float(spec.get("gamma", 0.1))
        )
    elif name == "cosine":
        sched = CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min)
    elif name == "linear":
        end = float(spec.get("end_factor", 0.0))
        sched = LinearLR(optimizer, start_factor=1.0, end_factor=end, total_iters=total)
    else:  # warmup_cosine
        w = min(warmup_steps(spec.get("warmup", 0.05), total), total)
        start = float(spec.get("start_factor", 0.01))
        warm = LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=w)
        cos = CosineAnnealingLR(optimizer, T_max=max(total - w, 1), eta_min=eta_min)
        sched = SequentialLR(optimizer, [warm, cos], milestones=[w])
    return sched, INTERVALS[name]
