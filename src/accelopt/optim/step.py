"""NC step rules as components: :class:`CarmonStep` (α = 2|λ|/L₂) and :class:`FixedStep`.

A step rule owns the NC step taken along a direction ``v`` found with curvature ``λ``:

- its **length** ``α`` (:meth:`StepRule.alpha`), capped at ``max_length`` when given;
- the **sign rule**: ``d = −v`` if ``⟨g, v⟩ > 0`` else ``v``, with ``g`` the gradient of the
  search batch (``sign_batch=None``) or of a fresh probe batch of ``sign_batch`` samples;
- the **acceptance test** (``accept``): keep ``θ + αd`` only if the loss of the test batch did
  not increase, halving ``α`` up to ``backtracks`` times, else restore θ exactly (rejected). The
  test batch is the sign batch, or a fresh probe batch of ``accept_batch`` samples when that is
  set (and, with the schedule's ``verify_batch``, always a fresh one: see
  :mod:`accelopt.optim.judge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from accelopt.checks import count, flag, positive
from accelopt.curvature.hvp import Closure
from accelopt.curvature.step import NCStep, step_length, take_nc_step
from accelopt.optim.component import Component, Context
from accelopt.optim.presets import REPORT_STEP

__all__ = ["CarmonStep", "FixedStep", "StepRule", "reduce_loss", "reduced"]


class StepRule(Component):
    """An NC step rule (a component of ``NCEscape``); subclasses define :meth:`alpha`."""

    kind: ClassVar[str] = "step"
    max_length: float | None = None
    sign_batch: int | None = None
    accept: bool = False
    backtracks: int = 0
    accept_batch: int | None = None

    def _validate_common(self, owner: str) -> None:
        if self.max_length is not None:
            positive(owner, "max_length", self.max_length)
        if self.sign_batch is not None:
            count(owner, "sign_batch", self.sign_batch, minimum=1)
        if self.accept_batch is not None:
            count(owner, "accept_batch", self.accept_batch, minimum=1)
        flag(owner, "accept", self.accept)
        count(owner, "backtracks", self.backtracks, minimum=0)

    def alpha(self, lam: float) -> float:
        """The step length α for curvature ``lam`` (before backtracking)."""
        raise NotImplementedError

    def apply(
        self,
        ctx: Context,
        v: Tensor,
        lam: float,
        closure: Closure | None,
        loss: Tensor | None,
        grad: Tensor,
    ) -> NCStep | None:
        """Take the NC step along ±``v`` (sign from ``grad``); its outcome if kept, else None.

        ``closure``/``loss``: the batch of the acceptance test and its loss at θ (``None``: one
        forward pass computes it); reduced across ranks before comparing, so that all ranks
        accept or reject alike. The outcome's ``length`` is the final α (after halvings).
        """
        c, params = ctx.counters, ctx.params()
        alpha = self.alpha(lam)
        if not self.accept:
            out = take_nc_step(params, v, alpha, grad=grad)
            if out.accepted:
                c["steps"] += 1
                return out
            c["rejected"] += 1  # a zero or non-finite length
            return None
        assert closure is not None
        test = reduced(ctx, closure)
        if loss is None:
            with torch.no_grad():
                before = float(test())
        else:
            before = reduce_loss(ctx, loss)
        for _ in range(self.backtracks + 1):
            out = take_nc_step(
                params, v, alpha, grad=grad, closure=test, accept=True, loss_before=before
            )
            if out.accepted:
                c["steps"] += 1
                c["loss_change"] += out.loss_change
                return out
            alpha *= 0.5
        c["rejected"] += 1
        return None


def reduce_loss(ctx: Context, loss: Tensor) -> float:
    """``loss`` (detached) reduced across ranks, as a float."""
    loss = loss.detach().reshape(1)
    if ctx.reduce is not None:
        loss = ctx.reduce(loss)
    return float(loss[0])


def reduced(ctx: Context, closure: Closure) -> Closure:
    """``closure`` whose loss is reduced across ranks."""

    def run() -> Tensor:
        loss = closure().detach().reshape(1)
        return (loss if ctx.reduce is None else ctx.reduce(loss))[0]

    return run


@dataclass
class CarmonStep(StepRule):
    """α = min(2|λ|/``l2``, ``max_length``) (Carmon, Duchi, Hinder & Sidford 2018; ``l2`` the
    Hessian's Lipschitz constant); by default with the acceptance test on the search batch."""

    name: ClassVar[str] = "carmon"
    l2: float = 1.0
    max_length: float | None = 0.5
    sign_batch: int | None = None
    accept: bool = True
    backtracks: int = 3
    accept_batch: int | None = None

    def __post_init__(self) -> None:
        positive("CarmonStep", "l2", self.l2)
        self.l2 = float(self.l2)
        self._validate_common("CarmonStep")

    def alpha(self, lam: float) -> float:
        return step_length(lam, rule="carmon", L2=self.l2, max_length=self.max_length)


@dataclass
class FixedStep(StepRule):
    """α = ``length`` (the report: 0.5, sign from 64 fresh samples, no acceptance test)."""

    name: ClassVar[str] = "fixed"
    length: float = REPORT_STEP["length"]
    max_length: float | None = None
    sign_batch: int | None = REPORT_STEP["sign_batch"]  # type: ignore[assignment]
    accept: bool = False
    backtracks: int = 0
    accept_batch: int | None = None

    def __post_init__(self) -> None:
        positive("FixedStep", "length", self.length)
        self.length = float(self.length)
        self._validate_common("FixedStep")

    def alpha(self, lam: float) -> float:
        return step_length(lam, rule="fixed", length=self.length, max_length=self.max_length)
