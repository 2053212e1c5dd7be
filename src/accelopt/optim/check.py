"""Small-gradient checks: is the iterate in a region where a negative-curvature search pays?

A check is a :class:`Check` component of :class:`accelopt.optim.NCEscape`: the wrapper calls
:meth:`Check.observe` with every minibatch gradient it computes, :meth:`Check.passes` at each
scheduled check, and :meth:`Check.recheck` before every further search round of an NC phase.

- :class:`GradNormCheck` — the report's check: the norm of the gradient averaged over ``batches``
  fresh probe batches of ``batch_size`` samples (8 × 128), below ``threshold`` (``1e-3``). It
  costs ``batches`` extra gradients every time it runs (:func:`mean_grad_norm`).
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
- :class:`PairCheck` — an unbiased check at the current θ: two fresh probe batches of
  ``batch_size`` give independent gradients ``g₁, g₂`` with ``E g_i = ∇f(θ)``, so

  .. math:: \\widehat{\\|\\nabla f\\|^2} = \\langle g_1, g_2 \\rangle, \\qquad
      E\\,\\widehat{\\|\\nabla f\\|^2} = \\|\\nabla f(\\theta)\\|^2

  exactly (no noise floor, no drift of θ between the two gradients). It fires iff the estimate
  is below ``ε_g²`` with ``ε_g = tol``: "θ counts as a small-gradient point when
  ‖∇f(θ)‖ < ε_g". Cost: 2 gradients per check. With per-batch noise ``ξ_i`` of covariance
  ``Σ`` (``s² = tr Σ``), ``Var = 2 ∇fᵀΣ∇f + tr Σ² ≤ 2 s²‖∇f‖² + s⁴``.
- :class:`Always`, :class:`Never` — pass always / never (``Never``: no NC phase at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from accelopt.checks import count, positive
from accelopt.curvature.hvp import flat_grad
from accelopt.optim.component import Batch, Component, Context, Probe, Reduce
from accelopt.optim.presets import REPORT_CHECK

__all__ = [
    "Always",
    "Check",
    "Never",
    "NoiseCheck",
    "PairCheck",
    "GradNormCheck",
    "pair_estimate",
    "mean_grad_norm",
]


def mean_grad_norm(
    probe: Probe,
    params: list[Tensor],
    *,
    batches: int,
    batch_size: int,
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


def pair_estimate(
    probe: Probe, params: list[Tensor], *, batch_size: int = 128, reduce: Reduce = None
) -> float:
    """``⟨g₁, g₂⟩`` for the gradients of two fresh probe batches of ``batch_size``: an unbiased
    estimate of ``‖∇f(θ)‖²`` at the current θ. Costs 2 gradients."""
    _, g1 = flat_grad(probe(batch_size), params, reduce=reduce)
    _, g2 = flat_grad(probe(batch_size), params, reduce=reduce)
    return float(g1.dot(g2))


class Check(Component):
    """A small-gradient check (a component of :class:`accelopt.optim.NCEscape`).

    ``recheck_on_batch``: ``True`` if :meth:`recheck` judges the next round from that round's
    reference batch (drawn first), ``False`` if it runs before the batch is drawn.
    """

    kind: ClassVar[str] = "check"
    recheck_on_batch: ClassVar[bool] = False
    schedules: ClassVar[bool] = True  # False: no NC phase is ever due (Never)

    def observe(self, grad: Tensor) -> None:
        """See one minibatch gradient (flat, reduced); the default ignores it."""

    def passes(self, ctx: Context, probe: Probe) -> bool:
        """Decide at a scheduled check."""
        raise NotImplementedError

    def recheck(
        self, ctx: Context, probe: Probe, batch: Batch | None, ref_sq: float | None
    ) -> bool:
        """Decide before a further search round; the default runs :meth:`passes` again."""
        del batch, ref_sq
        return self.passes(ctx, probe)


@dataclass
class GradNormCheck(Check):
    """The report's check: ‖mean of ``batches`` probe gradients of ``batch_size``‖ < ``threshold``."""

    name: ClassVar[str] = "grad_norm"
    batches: int = REPORT_CHECK["batches"]  # type: ignore[assignment]
    batch_size: int = REPORT_CHECK["batch_size"]  # type: ignore[assignment]
    threshold: float = REPORT_CHECK["threshold"]

    def __post_init__(self) -> None:
        count("GradNormCheck", "batches", self.batches, minimum=1)
        count("GradNormCheck", "batch_size", self.batch_size, minimum=1)
        positive("GradNormCheck", "threshold", self.threshold)
        self.threshold = float(self.threshold)

    def passes(self, ctx: Context, probe: Probe) -> bool:
        norm = mean_grad_norm(
            probe, ctx.params(), batches=self.batches, batch_size=self.batch_size, reduce=ctx.reduce
        )
        ctx.counters["grads"] += self.batches
        return norm < self.threshold


@dataclass
class PairCheck(Check):
    """Fires iff ``⟨g₁, g₂⟩ < tol²`` for two fresh probe batches of ``batch_size`` (unbiased for
    ``‖∇f(θ)‖²``; ``tol`` = ε_g, the gradient norm below which θ counts as a small-gradient
    point). Costs 2 gradients per check; ``last_grad_sq`` keeps the last estimate."""

    name: ClassVar[str] = "pair"
    batch_size: int = 128
    tol: float = 0.1
    last_grad_sq: float = field(default=float("nan"), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        count("PairCheck", "batch_size", self.batch_size, minimum=1)
        positive("PairCheck", "tol", self.tol)
        self.tol = float(self.tol)

    def knobs(self) -> tuple[str, ...]:
        return ("batch_size", "tol")

    def replace(self, **knobs: Any) -> PairCheck:
        return PairCheck(**{"batch_size": self.batch_size, "tol": self.tol, **knobs})

    @property
    def threshold(self) -> float:
        """The squared gradient-norm level ``ε_g²`` the estimate is compared with."""
        return self.tol**2

    def passes(self, ctx: Context, probe: Probe) -> bool:
        self.last_grad_sq = pair_estimate(
            probe, ctx.params(), batch_size=self.batch_size, reduce=ctx.reduce
        )
        ctx.counters["grads"] += 2
        return self.last_grad_sq < self.threshold


@dataclass
class Always(Check):
    """Always passes: a search at every scheduled check."""

    name: ClassVar[str] = "always"

    def passes(self, ctx: Context, probe: Probe) -> bool:
        return True


@dataclass
class Never(Check):
    """Never passes, and no NC phase is scheduled at all: the base optimizer alone."""

    name: ClassVar[str] = "never"
    schedules: ClassVar[bool] = False

    def passes(self, ctx: Context, probe: Probe) -> bool:
        return False


@dataclass
class NoiseCheck(Check):
    """The noise-relative small-gradient check over the minibatch gradients since the last check.

    Call :meth:`observe` with every (flat) minibatch gradient and :meth:`fires` at a scheduled
    check; :meth:`fires` resets the window. See the module docstring for the estimator. As a
    re-check inside an NC phase (free: the round's reference batch gives ``g_S``) it passes iff
    ``‖g_S‖² ≤ ‖g_{S_0}‖² + max(0, ρσ̂² + τ² − ‖∇f‖²^)``, the margin by which the phase's check
    passed (``S_0`` the first round's batch, same size, hence the same noise floor).
    """

    name: ClassVar[str] = "noise"
    recheck_on_batch: ClassVar[bool] = True
    ratio: float = 1.0
    tol: float = 0.0
    total: Tensor | None = field(default=None, init=False, repr=False, compare=False)
    sq_sum: float = field(default=0.0, init=False, repr=False, compare=False)
    count: int = field(default=0, init=False, repr=False, compare=False)
    last_grad_sq: float = field(default=float("nan"), init=False, repr=False, compare=False)
    last_noise: float = field(default=float("nan"), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive("NoiseCheck", "ratio", self.ratio, allow_zero=True)
        positive("NoiseCheck", "tol", self.tol, allow_zero=True)
        self.ratio, self.tol = float(self.ratio), float(self.tol)

    def knobs(self) -> tuple[str, ...]:
        return ("ratio", "tol")

    def replace(self, **knobs: Any) -> NoiseCheck:
        return NoiseCheck(**{"ratio": self.ratio, "tol": self.tol, **knobs})

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

    def passes(self, ctx: Context, probe: Probe) -> bool:
        return self.fires()

    def recheck(
        self, ctx: Context, probe: Probe, batch: Batch | None, ref_sq: float | None
    ) -> bool:
        assert batch is not None and ref_sq is not None
        margin = self.ratio * max(self.last_noise, 0.0) + self.tol**2 - self.last_grad_sq
        return float(batch.grad.dot(batch.grad)) <= ref_sq + max(margin, 0.0)

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
