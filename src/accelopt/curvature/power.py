"""The report's variance-reduced power iteration (the ``original`` presets' search), torch only.

Kept apart from :mod:`accelopt.curvature.search` (Lanczos, Neon2): it is the 2019 study's method,
reproduced with its quirks, not one this project recommends (it returns a vector no better than a
random one at its 48 HVPs on the report's CNN: docs/benchmarks.md).

Source: ``MyCNN.power_method`` in PatriciaXiao/AcceleratedSGDMethods ``my_cnn.py`` (itself from
uclaml/GOSE ``cnn_gose.py``), with the settings of the report (Zhiping (Patricia) Xiao,
"Accelerated Optimization Methods on Convolutional Neural Networks", ECE236C course project
report, UCLA, June 2019): E = 2, m = 8, step η = 0.5, λ = 5, HVP batches of 8 fresh samples. The
two stored versions of ``my_cnn.py`` read for this (commits 06fe745, 2f2758d) have signature
defaults ``epoch_power=8, inner_iteration_power=16`` and ``--batch_size_power 16``; pass
``outer=8, inner=16, batch=16`` for those (384 HVPs).

In expectation the update is y ← (1+η)y − (η/λ)Hy = 1.5y − 0.1Hy, a power iteration on
1.5 − 0.1H: it converges to the eigenvector maximising |1.5 − 0.1λ_i|, i.e. the *largest* one
whenever λ_max + λ_min > 30, and 16 steps barely move a random start when the spectrum is small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .hvp import Closure, HessianOperator, Reduce, trainable_mask
from .search import SearchResult, _is_negative, _randn, _unit

__all__ = ["vr_power"]

METHOD = "vr_power"  # SearchResult.method
BatchHessian = Callable[[], HessianOperator]  # the Hessian on a fresh probe batch, at fixed x₀


def vr_power(
    probe: Callable[[int], Closure],
    params: Sequence[Tensor],
    *,
    outer: int,
    inner: int,
    step: float,
    lam: float,
    batch: int,
    eps_h: float = 0.0,
    generator: torch.Generator | None = None,
    reduce: Reduce = None,
    method: str = "double_backward",
    module: torch.nn.Module | None = None,
) -> SearchResult:
    """The report's variance-reduced power (Oja/SCSG-for-PCA) iteration, reproduced faithfully.

    E = ``outer``, m = ``inner``, η = ``step``, λ = ``lam``; every HVP batch is a new
    ``probe(batch)`` (H_b: the Hessian on batch b, all at the fixed x₀)::

        y ← ξ/‖ξ‖  (Gaussian)
        for e in 1..E:
            ỹ ← y
            z ← (1/m) Σ_{b=1..m} (ỹ − H_b ỹ/λ)                    m HVPs, m batches
            est ← 0
            for b in 1..m (m fresh batches):
                est += yᵀ H_b y                                   (y before the update)
                y ← y + η [(y − H_b y/λ) − (ỹ − H_b ỹ/λ) + z]    2 HVPs on the same batch
                y ← y/‖y‖
            est ← est/m
        return (est, y);  "found" iff est < 0 (and est ≤ −eps_h/2)

    48 HVPs for the report's values (3m per outer round). Quirks kept: ``est`` is the average of
    per-batch estimates yᵀH_b y over the last outer round's iterates (not the returned vector's
    quotient); the original initialises ``y`` with torch's global RNG (here: ``generator``). The
    NC step (θ ← θ − 0.5·sign(⟨g₀, v⟩)·v, g₀ on 64 samples) lives in
    :mod:`accelopt.curvature.step`. ``method``/``module``: as for :class:`HessianOperator`.
    """
    params = list(params)
    dim = sum(p.numel() for p in params)
    if dim == 0 or outer < 1 or inner < 1:
        return SearchResult(math.nan, None, 0, method=METHOD)
    ref = params[0]
    y = _unit(_randn(dim, ref.dtype, ref.device, generator) * trainable_mask(params))
    if y is None:  # nothing trainable
        return SearchResult(math.nan, None, 0, method=METHOD)

    def hessian() -> HessianOperator:
        return HessianOperator(probe(batch), params, method=method, reduce=reduce, module=module)

    y_end, est, hvps, grads = _rounds(hessian, y, outer=outer, inner=inner, step=step, lam=lam)
    if y_end is None:
        return SearchResult(math.nan, None, hvps, method=METHOD, grads=grads)
    found = _is_negative(est, eps_h)
    result = SearchResult(est, y_end if found else None, hvps, method=METHOD, candidate=y_end)
    result.iters, result.grads = outer * inner, grads
    return result


def _rounds(
    hessian: BatchHessian, y: Tensor, *, outer: int, inner: int, step: float, lam: float
) -> tuple[Tensor | None, float, int, int]:
    """The E outer rounds from the unit vector ``y``: ``(y, est, hvps, grads)``, ``y`` ``None``
    if an iterate vanished or was not finite (the counts then stop at that batch). ``grads``: one
    first-order graph per HVP batch."""
    hvps = grads = 0
    est = math.nan
    for _ in range(outer):
        y_snap = y.clone()
        z = _snapshot_term(hessian, y_snap, inner=inner, lam=lam)
        y_next, acc, used = _inner_loop(hessian, y, y_snap, z, inner=inner, step=step, lam=lam)
        hvps, grads = hvps + inner + 2 * used, grads + inner + used
        if y_next is None:
            return None, est, hvps, grads
        y, est = y_next, acc / inner
    return y, est, hvps, grads


def _snapshot_term(hessian: BatchHessian, y_snap: Tensor, *, inner: int, lam: float) -> Tensor:
    """z = (1/m) Σ_b (ỹ − H_b ỹ/λ) over m fresh batches (m HVPs)."""
    z = torch.zeros_like(y_snap)
    for _ in range(inner):
        op = hessian()
        z += (y_snap - op.matvec(y_snap) / lam) / inner
    return z


def _inner_loop(
    hessian: BatchHessian,
    y: Tensor,
    y_snap: Tensor,
    z: Tensor,
    *,
    inner: int,
    step: float,
    lam: float,
) -> tuple[Tensor | None, float, int]:
    """The m variance-reduced updates of one round, each on a fresh batch (2 HVPs): ``(y,
    Σ_b yᵀH_b y, batches used)``, ``y`` ``None`` as soon as an iterate cannot be normalised."""
    acc = 0.0
    for used in range(1, inner + 1):
        op = hessian()
        hy = op.matvec(y)
        hy_snap = op.matvec(y_snap)
        acc += float(y @ hy)
        y_next = _unit(y + step * ((y - hy / lam) - (y_snap - hy_snap / lam) + z))
        if y_next is None:
            return None, acc, used
        y = y_next
    return y, acc, inner
