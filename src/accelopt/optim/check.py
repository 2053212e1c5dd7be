"""Small-gradient checks: is the iterate in a region where a negative-curvature search pays?

Two checks, both used by :class:`accelopt.optim.NCEscape`:

- :func:`seed_check` — the report's check (DESIGN.md §3): the norm of the gradient averaged over
  ``batches`` fresh probe batches of ``batch_size`` samples, compared with an absolute threshold
  (``1e-3``). It costs ``batches`` extra gradients every time it runs.
- :class:`NoiseCheck` — the project's default: it reuses the minibatch gradients the optimizer
  computes anyway (cost: one vector add and one dot product per step). Over the ``W`` minibatch
  gradients ``g_1 .. g_W`` seen since the last check it forms

  .. math::
      \\widehat{\\|\\nabla f\\|^2} = \\frac{\\|\\sum_i g_i\\|^2 - \\sum_i \\|g_i\\|^2}{W (W - 1)}
      = \\operatorname{mean}_{i \\neq j} \\langle g_i, g_j \\rangle ,
      \\qquad
      \\hat\\sigma^2 = \\frac{1}{W}\\sum_i \\|g_i\\|^2 - \\widehat{\\|\\nabla f\\|^2}
      = \\frac{W}{W-1}\\Big(\\frac{1}{W}\\sum_i\\|g_i\\|^2 - \\|\\bar g\\|^2\\Big).

  With independent minibatch noise, the mean of the cross inner products is an unbiased estimate
  of ``‖∇f‖²`` with no noise floor (the two-half-batch inner product generalised to ``W``
  batches), and ``σ̂²`` estimates ``E‖g_i − ∇f‖²``, the noise of *one* minibatch gradient. The check
  fires when

  .. math:: \\widehat{\\|\\nabla f\\|^2} \\le \\rho \\, \\hat\\sigma^2 + \\tau^2

  i.e. when the true gradient is no larger than ``√ρ`` times the noise of one minibatch gradient
  (``ρ = ratio``, default 1) or than the absolute floor ``τ = tol`` (default 0). With fewer than two
  gradients in the window it cannot estimate anything and does not fire. On a deterministic problem
  (no noise) at an exact critical point both estimates are 0 and the check fires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from accelopt.curvature.hvp import flat_grad

__all__ = ["NoiseCheck", "seed_check"]

Probe = Callable[[int], Callable[[], Tensor]]
Reduce = Callable[[Tensor], Tensor] | None


def seed_check(
    probe: Probe,
    params: list[Tensor],
    *,
    batches: int = 8,
    batch_size: int = 128,
    reduce: Reduce = None,
) -> float:
    """Norm of the gradient averaged over ``batches`` fresh probe batches of ``batch_size``.

    The report's check; the caller compares the result with its threshold (``1e-3``).
    Costs ``batches`` gradients.
    """
    total: Tensor | None = None
    for _ in range(batches):
        _, g = flat_grad(probe(batch_size), params, reduce=reduce)
        total = g if total is None else total + g
    assert total is not None
    return float((total / batches).norm())


class NoiseCheck:
    """The noise-relative small-gradient check over the minibatch gradients since the last check.

    Call :meth:`observe` with every (flat) minibatch gradient and :meth:`fires` at a scheduled
    check; :meth:`fires` resets the window. See the module docstring for the estimator.
    """

    def __init__(self, *, ratio: float = 1.0, tol: float = 0.0) -> None:
        self.ratio = float(ratio)
        self.tol = float(tol)
        self.total: Tensor | None = None
        self.sq_sum = 0.0
        self.count = 0
        self.last_grad_sq = float("nan")
        self.last_noise = float("nan")

    def observe(self, g: Tensor) -> None:
        """Add one minibatch gradient (flat) to the window."""
        g = g.detach()
        self.total = g.clone() if self.total is None else self.total.add_(g)
        self.sq_sum += float(g.dot(g))
        self.count += 1

    def estimate(self) -> tuple[float, float]:
        """``(‖∇f‖² estimate, one-minibatch noise estimate)`` over the window; NaN if < 2 gradients."""
        w = self.count
        if w < 2 or self.total is None:
            return float("nan"), float("nan")
        grad_sq = (float(self.total.dot(self.total)) - self.sq_sum) / (w * (w - 1))
        noise = self.sq_sum / w - grad_sq
        return grad_sq, noise

    def fires(self) -> bool:
        """Decide on the current window, then empty it."""
        grad_sq, noise = self.estimate()
        self.last_grad_sq, self.last_noise = grad_sq, noise
        self.total, self.sq_sum, self.count = None, 0.0, 0
        if grad_sq != grad_sq:  # NaN: fewer than two gradients
            return False
        return grad_sq <= self.ratio * max(noise, 0.0) + self.tol**2

    def state_dict(self) -> dict[str, Any]:
        return {
            "total": None if self.total is None else self.total.clone(),
            "sq_sum": self.sq_sum,
            "count": self.count,
            "last_grad_sq": self.last_grad_sq,
            "last_noise": self.last_noise,
        }

    def load_state_dict(self, state: dict[str, Any], like: Tensor | None = None) -> None:
        total = state["total"]
        if total is not None:
            total = total.detach().clone()
            if like is not None:
                total = total.to(dtype=like.dtype, device=like.device)
        self.total = total
        self.sq_sum = float(state["sq_sum"])
        self.count = int(state["count"])
        self.last_grad_sq = float(state["last_grad_sq"])
        self.last_noise = float(state["last_noise"])
