"""Negative-curvature searches as components: :class:`Lanczos`, :class:`Neon2`, :class:`VRPower`,
and the control :class:`RandomDirection` (a random direction, no curvature selection).

Each wraps one function of :mod:`accelopt.curvature.search` and owns its knobs. The optimizer
calls :meth:`Search.reference` to draw the round's reference batch (when one is needed) and
:meth:`Search.run` to search; ``run`` returns the :class:`~accelopt.curvature.search.SearchResult`
and the closure of the batch it searched on (``None`` for searches that draw their own batches),
which then serves the sign rule and the acceptance test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from accelopt.checks import choice, count, positive
from accelopt.curvature.hvp import Closure, HessianOperator, flat_grad
from accelopt.curvature.power import vr_power
from accelopt.curvature.search import SearchResult, lanczos, neon2, random_unit
from accelopt.optim.component import HVP_METHODS, Batch, Component, Context, Probe
from accelopt.optim.presets import REPORT_POWER

__all__ = ["HVP_METHODS", "Lanczos", "Neon2", "RandomDirection", "Search", "VRPower"]


class Search(Component):
    """A search for a direction of negative curvature (a component of ``NCEscape``).

    ``search_batch``: the size of the one probe batch the search works on, or ``None`` when it
    draws its own batches (the step rule's ``sign_batch`` then sizes the reference batch).
    ``needs_reference``: the search needs the reference batch drawn before it (Lanczos: its
    Hessian operator). ``eps_h``: curvature threshold (found iff λ ≤ −ε_H/2, λ < 0).
    """

    kind: ClassVar[str] = "search"
    needs_reference: ClassVar[bool] = False
    search_batch: int | None = None
    eps_h: float = 0.0

    def reference(self, ctx: Context, closure: Closure) -> Batch:
        """The reference batch of ``closure`` at θ: loss and gradient (one gradient)."""
        loss, grad = flat_grad(closure, ctx.params(), reduce=ctx.reduce)
        ctx.counters["grads"] += 1
        return Batch(closure, loss, grad)

    def run(
        self, ctx: Context, probe: Probe, batch: Batch | None
    ) -> tuple[SearchResult, Closure | None]:
        raise NotImplementedError


def _check_hvp(owner: str, method: str, ctx: Context) -> None:
    if method == "forward_over_reverse" and ctx.module is None:
        raise ValueError(
            f"{owner}: hvp_method='forward_over_reverse' needs the model: pass "
            "module=<the nn.Module the closures call> to the optimizer (or set opt.module); "
            "accepted without it: hvp_method='double_backward'"
        )


def _operator_batch(owner: str, method: str, ctx: Context, closure: Closure) -> Batch:
    """The reference batch of ``closure`` with its Hessian operator at θ (one gradient)."""
    _check_hvp(owner, method, ctx)
    op = HessianOperator(closure, ctx.params(), method=method, reduce=ctx.reduce, module=ctx.module)
    ctx.counters["grads"] += 1
    return Batch(closure, op.loss, op.grad, op)


@dataclass
class Lanczos(Search):
    """Warm-started Lanczos on one probe batch of ``search_batch``: ≤ ``max_hvps`` HVPs, early
    exit once the Ritz value is ≤ −``eps_h``/2; starts from the last search's vector."""

    name: ClassVar[str] = "lanczos"
    needs_reference: ClassVar[bool] = True
    search_batch: int = 64
    max_hvps: int = 20
    eps_h: float = 0.2
    hvp_method: str = "double_backward"

    def __post_init__(self) -> None:
        count("Lanczos", "search_batch", self.search_batch, minimum=1)
        count("Lanczos", "max_hvps", self.max_hvps, minimum=1)
        positive("Lanczos", "eps_h", self.eps_h, allow_zero=True)
        choice("Lanczos", "hvp_method", self.hvp_method, HVP_METHODS)
        self.eps_h = float(self.eps_h)

    def reference(self, ctx: Context, closure: Closure) -> Batch:
        return _operator_batch("Lanczos", self.hvp_method, ctx, closure)

    def run(
        self, ctx: Context, probe: Probe, batch: Batch | None
    ) -> tuple[SearchResult, Closure | None]:
        assert batch is not None and batch.op is not None
        result = lanczos(
            batch.op,
            max_hvps=self.max_hvps,
            eps_h=self.eps_h,
            v0=ctx.direction,
            generator=ctx.generator,
        )
        batch.op = None  # free the retained first-order graph
        return result, batch.closure


@dataclass
class Neon2(Search):
    """Allen-Zhu & Li's first-order Neon2 on one probe batch of ``search_batch``: ≤ ``max_grads``
    gradients (≥ 4; the curvature estimate counts 2), step ``eta``, start radius ``sigma``."""

    name: ClassVar[str] = "neon2"
    search_batch: int = 64
    max_grads: int = 20
    eps_h: float = 0.2
    eta: float = 0.05
    sigma: float = 1e-3

    def __post_init__(self) -> None:
        count("Neon2", "search_batch", self.search_batch, minimum=1)
        count("Neon2", "max_grads", self.max_grads, minimum=4)
        positive("Neon2", "eps_h", self.eps_h, allow_zero=True)
        positive("Neon2", "eta", self.eta)
        positive("Neon2", "sigma", self.sigma)
        self.eps_h, self.eta, self.sigma = float(self.eps_h), float(self.eta), float(self.sigma)

    def run(
        self, ctx: Context, probe: Probe, batch: Batch | None
    ) -> tuple[SearchResult, Closure | None]:
        closure = probe(self.search_batch) if batch is None else batch.closure
        result = neon2(
            closure,
            ctx.params(),
            max_grads=self.max_grads,
            eps_h=self.eps_h,
            generator=ctx.generator,
            reduce=ctx.reduce,
            eta=self.eta,
            sigma=self.sigma,
        )
        return result, closure


@dataclass
class VRPower(Search):
    """The report's variance-reduced power iteration: ``outer`` rounds of ``inner`` steps of size
    ``step`` on ``I − H/lam``, every HVP on a fresh probe batch of ``batch`` (48 HVPs)."""

    name: ClassVar[str] = "vr_power"
    outer: int = REPORT_POWER["outer"]  # type: ignore[assignment]
    inner: int = REPORT_POWER["inner"]  # type: ignore[assignment]
    step: float = REPORT_POWER["step"]
    lam: float = REPORT_POWER["lam"]
    batch: int = REPORT_POWER["batch"]  # type: ignore[assignment]
    eps_h: float = 0.0
    hvp_method: str = "double_backward"

    def __post_init__(self) -> None:
        count("VRPower", "outer", self.outer, minimum=1)
        count("VRPower", "inner", self.inner, minimum=1)
        positive("VRPower", "step", self.step)
        positive("VRPower", "lam", self.lam)
        count("VRPower", "batch", self.batch, minimum=1)
        positive("VRPower", "eps_h", self.eps_h, allow_zero=True)
        choice("VRPower", "hvp_method", self.hvp_method, HVP_METHODS)
        self.step, self.lam, self.eps_h = float(self.step), float(self.lam), float(self.eps_h)

    @property
    def search_batch(self) -> None:  # type: ignore[override]
        return None  # draws its own batches: the sign batch is the reference

    def run(
        self, ctx: Context, probe: Probe, batch: Batch | None
    ) -> tuple[SearchResult, Closure | None]:
        _check_hvp("VRPower", self.hvp_method, ctx)
        result = vr_power(
            probe,
            ctx.params(),
            outer=self.outer,
            inner=self.inner,
            step=self.step,
            lam=self.lam,
            batch=self.batch,
            eps_h=self.eps_h,
            generator=ctx.generator,
            reduce=ctx.reduce,
            method=self.hvp_method,
            module=ctx.module,
        )
        return result, None


@dataclass
class RandomDirection(Search):
    """The control for the searches: a uniformly random unit direction ``v`` (inside the trainable
    entries, from the optimizer's generator), always returned, with ``λ = vᵀH_S v`` on a probe
    batch ``S`` of ``search_batch`` samples (one HVP) for the record.

    With an NC preset's check, schedule and step rule (verification off: a random direction has
    curvature ≈ 0), it steps as far, as often and with the same sign rule and acceptance test,
    along directions chosen without regard to curvature: what a preset gains beyond this control
    is due to the curvature of its directions.
    """

    name: ClassVar[str] = "random"
    needs_reference: ClassVar[bool] = True
    search_batch: int = 256
    hvp_method: str = "double_backward"

    def __post_init__(self) -> None:
        count("RandomDirection", "search_batch", self.search_batch, minimum=1)
        choice("RandomDirection", "hvp_method", self.hvp_method, HVP_METHODS)

    def reference(self, ctx: Context, closure: Closure) -> Batch:
        return _operator_batch("RandomDirection", self.hvp_method, ctx, closure)

    def run(
        self, ctx: Context, probe: Probe, batch: Batch | None
    ) -> tuple[SearchResult, Closure | None]:
        assert batch is not None and batch.op is not None
        op = batch.op
        v = random_unit(op, op.dim, op.dtype, op.device, ctx.generator)
        lam = float(v @ op.matvec(v).reshape(-1).to(v))
        batch.op = None  # free the retained first-order graph
        return SearchResult(lam, v, hvps=1, iters=1, method="random", candidate=v), batch.closure
