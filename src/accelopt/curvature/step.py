"""Negative-curvature (NC) step rules.

Given a unit direction ``v`` with ``vᵀHv = λ < 0`` (from a search) the NC step is::

    d = −v if vᵀg > 0 else v  (so dᵀg ≤ 0; d = v when vᵀg = 0)
    θ ← θ + α d               α = ``length`` (the report: 0.5) or 2|λ|/L₂ (Carmon et al.)

Along ``d`` the loss changes by ``α dᵀg + ½α²λ + O(α³)`` ≤ ``½α²λ`` < 0 to second order.
Optionally the step is accepted only if the loss of ``closure`` (e.g. the search batch) does
not increase; a rejected step restores the parameters exactly.

Typical use in an optimizer::

    op = HessianOperator(closure, params)                 # search batch: loss, grad, graph
    res = lanczos(op, max_hvps=20, eps_h=eps_h, v0=last_v, generator=gen)
    last_v = res.candidate                                # warm start for the next search
    if res.found:
        alpha = step_length(res.lam, rule="carmon", L2=L2)  # or rule="fixed", length=0.5
        out = take_nc_step(params, res.direction, alpha, grad=op.grad, closure=closure,
                           accept=True, loss_before=float(op.loss))
        # out.accepted, out.loss_before, out.loss_after, out.length, out.sign, out.slope
    del op                                                # invalid once the parameters moved
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .hvp import Closure, assign_flat, flatten

__all__ = ["NCStep", "orient", "step_length", "take_nc_step"]


@dataclass
class NCStep:
    """What an NC step did.

    ``accepted``: parameters left at θ + α d. ``length``: α. ``sign``: s with d = s·v.
    ``slope``: dᵀg (NaN without a gradient). ``loss_before``/``loss_after``: loss of ``closure``
    before/after the step (NaN when not evaluated).
    """

    accepted: bool
    length: float
    sign: float
    slope: float = math.nan
    loss_before: float = math.nan
    loss_after: float = math.nan

    @property
    def loss_change(self) -> float:
        return self.loss_after - self.loss_before


def step_length(
    lam: float,
    *,
    rule: str = "fixed",
    length: float = 0.5,
    L2: float | None = None,
    max_length: float | None = None,
) -> float:
    """Step length α: ``rule="fixed"`` → ``length``; ``rule="carmon"`` → 2|λ|/L₂ (Carmon,
    Duchi, Hinder & Sidford 2018, L₂ = Lipschitz constant of the Hessian). Clipped to
    ``max_length`` when given; 0 for a non-finite λ."""
    if rule == "fixed":
        a = float(length)
    elif rule == "carmon":
        if L2 is None or not L2 > 0:
            raise ValueError("rule='carmon' needs L2 > 0")
        a = 2.0 * abs(lam) / L2 if math.isfinite(lam) else 0.0
    else:
        raise ValueError(f"unknown step rule {rule!r}")
    if max_length is not None:
        a = min(a, max_length)
    return a


def orient(direction: Tensor, grad: Tensor | None) -> tuple[Tensor, float]:
    """Return ``(d, s)``, ``d = s·direction`` with ``s = −1`` if ``directionᵀgrad > 0`` else
    ``+1``, so that ``dᵀgrad ≤ 0``. ``grad=None``: ``(direction, +1)``."""
    if grad is None:
        return direction, 1.0
    s = -1.0 if float(direction @ grad.to(direction)) > 0 else 1.0
    return s * direction, s


def take_nc_step(
    params: Sequence[Tensor],
    direction: Tensor,
    length: float,
    *,
    grad: Tensor | None = None,
    closure: Closure | None = None,
    accept: bool = False,
    loss_before: float | None = None,
) -> NCStep:
    """Apply θ ← θ + α d in place, d = ±``direction`` oriented by ``grad`` (see :func:`orient`).

    ``grad``: flat gradient g used for the sign (e.g. the search batch's, or the report's
    64-sample g₀); None keeps ``direction``'s sign. ``accept=True`` needs ``closure``: the loss is
    evaluated before (unless ``loss_before`` is given) and after the step, under ``no_grad``; if
    it increased (or is not finite) the parameters are restored exactly and ``accepted=False``.
    The parameters are set with :func:`~accelopt.curvature.hvp.assign_flat` (each ``p.data``
    rebound to a copy of its slice of the new flat vector in ``p``'s memory format, no in-place
    update): a ``HessianOperator`` built before the step must not be used after it (autograd's
    version check would not notice).
    """
    params = list(params)
    if accept and closure is None:
        raise ValueError("accept=True needs the closure of the batch to test on")
    d, s = orient(direction, grad)
    slope = float(d @ grad.to(d)) if grad is not None else math.nan
    if length == 0 or not math.isfinite(length):
        return NCStep(False, float(length), s, slope)
    x0 = flatten([p.detach() for p in params])  # a copy (torch.cat of reshapes)
    before = math.nan
    if accept:
        if loss_before is None:
            with torch.no_grad():
                before = float(closure())  # type: ignore[misc]
        else:
            before = float(loss_before)
    # assign_flat rebinds each p.data to a copy of its slice (no in-place add)
    assign_flat(x0 + (length * d).to(dtype=x0.dtype, device=x0.device), params)
    after = math.nan
    accepted = True
    if accept:
        with torch.no_grad():
            after = float(closure())  # type: ignore[misc]
        if not (math.isfinite(after) and after <= before):
            accepted = False
            assign_flat(x0, params)
    return NCStep(accepted, float(length), s, slope, before, after)
