r"""NC steps judged on data they were not chosen on: verification and the held-out record.

A search picks ``(λ, v)`` on its batch ``S``; on a small batch ``vᵀH_S v`` can be negative while
the curvature of the loss along ``v`` is not. Two opt-in knobs of the
:class:`~accelopt.optim.schedule.Schedule` look at fresh probe batches instead (their HVPs
computed by its ``hvp_method``):

- ``verify_batch = n_V`` (**verification**, before the step): one HVP on a fresh batch ``V``,

  .. math:: \kappa_V = \frac{v^\top H_V v}{v^\top v}, \qquad
      \text{use } v \text{ only if } \kappa_V < -\epsilon_H / 2

  (else the counter ``unverified`` grows and the phase takes no step). With verification on,
  the sign rule uses a fresh batch (``sign_batch``, or the search batch's size) and the
  acceptance test another fresh one (``accept_batch``, or the search batch's size): the
  direction, its sign and its acceptance are chosen on three independent batches.
- ``heldout_batch = n_H`` (**the held-out record**, after every NC step kept): on a fresh batch
  ``H``, with ``θ₀`` the point before the step and ``θ₁`` the point after it,

  .. math:: \kappa_H = \frac{v^\top H_H(\theta_0) v}{v^\top v}, \qquad
      \Delta_H = f_H(\theta_1) - f_H(\theta_0)

  (one forward pass at ``θ₁``, one gradient with its graph and one HVP at ``θ₀``; the
  parameters are then set back to ``θ₁`` bit for bit). ``opt.nc_log`` gets one entry per NC
  step kept and the counters ``heldout_curvature`` / ``heldout_loss_change`` hold the means of
  ``κ_H`` / ``Δ_H`` over those steps, ``heldout_steps`` their number and ``heldout_down`` how
  many lowered ``f_H``.

Every loss and HVP goes through ``opt.reduce`` (DDP); the gradients and HVPs are counted in
``grads`` / ``hvps`` and the time in ``time_s`` (the phase's).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from accelopt.curvature.hvp import Closure, HessianOperator, assign_flat
from accelopt.optim.component import Context
from accelopt.optim.step import reduce_loss

__all__ = ["curvature_on", "heldout_judge", "record_step", "verify"]


def curvature_on(
    opt: Context,
    closure: Closure,
    v: Tensor,
    *,
    method: str = "double_backward",
    with_loss: bool = True,
) -> tuple[float, float]:
    """``(vᵀH_B v / vᵀv, f_B(θ))`` on ``closure``'s batch at the current θ (1 gradient, 1 HVP by
    ``method``; the loss NaN unless ``with_loss``)."""
    op = HessianOperator(closure, opt.params(), method=method, reduce=opt.reduce, module=opt.module)
    u = v.detach().to(dtype=op.dtype, device=op.device)
    u = u / u.norm()
    curvature = float(u @ op.matvec(u))
    loss = reduce_loss(opt, op.loss) if with_loss else math.nan
    opt.counters["grads"] += 1
    opt.counters["hvps"] += 1
    return curvature, loss


def verify(
    opt: Context, closure: Closure, v: Tensor, eps_h: float, *, method: str = "double_backward"
) -> tuple[bool, float]:
    """Whether ``v`` has curvature below ``−eps_h/2`` on ``closure``'s (fresh) batch, and it."""
    curvature, _ = curvature_on(opt, closure, v, method=method, with_loss=False)
    return curvature < -eps_h / 2, curvature


def heldout_judge(
    opt: Context, closure: Closure, v: Tensor, before: Tensor, method: str = "double_backward"
) -> tuple[float, float]:
    """``(κ_H, Δ_H)`` of the NC step just kept, from θ₀ = ``before`` (flat) to the current θ₁.

    Leaves the parameters at exactly the θ₁ they had (same values, bit for bit, in their own
    memory format: ``channels_last`` weights stay ``channels_last``).
    """
    params = opt.params()
    after = opt.flat_params()  # a copy
    with torch.no_grad():
        loss = closure().detach().reshape(1)
    loss_after = float((loss if opt.reduce is None else opt.reduce(loss))[0])
    assign_flat(before, params)
    try:
        curvature, loss_before = curvature_on(opt, closure, v, method=method)
    finally:
        assign_flat(after, params)
    return curvature, loss_after - loss_before


def _running_mean(counters: dict[str, float], key: str, value: float, n: float) -> None:
    old = counters[key]
    counters[key] = value if n == 1 or math.isnan(old) else old + (value - old) / n


def record_step(opt: Context, entry: dict[str, Any]) -> None:
    """Append ``entry`` to ``opt.nc_log``; with held-out values, update the held-out counters."""
    opt.nc_log.append(entry)
    curvature, change = entry.get("heldout_curvature"), entry.get("heldout_loss_change")
    if curvature is None or change is None:
        return
    c = opt.counters
    c["heldout_steps"] += 1
    c["heldout_down"] += float(change < 0)
    _running_mean(c, "heldout_curvature", curvature, c["heldout_steps"])
    _running_mean(c, "heldout_loss_change", change, c["heldout_steps"])
