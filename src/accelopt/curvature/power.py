"""The report's variance-reduced power iteration (the ``seed`` presets' search), torch only.

Kept apart from :mod:`accelopt.curvature.search` (Lanczos, Neon2): it is the 2019 study's method,
reproduced with its quirks, not one this project recommends (it returns a vector no better than a
random one at its 48 HVPs on the report's CNN: docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .hvp import Closure, HessianOperator, Reduce, trainable_mask
from .search import SearchResult, _is_negative, _randn, _unit

__all__ = ["seed_power"]


def seed_power(
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

    Source: ``MyCNN.power_method`` in PatriciaXiao/AcceleratedSGDMethods ``my_cnn.py`` (itself
    from uclaml/GOSE ``cnn_gose.py``), with the settings of the report (Zhiping (Patricia) Xiao,
    "Accelerated Optimization Methods on Convolutional Neural Networks", ECE236C course project
    report, UCLA, June 2019): E = ``outer`` = 2, m = ``inner`` = 8, step η = 0.5, λ = 5, HVP batches of ``batch`` = 8 fresh samples
    (every HVP batch is a new ``probe(batch)``; H_b is the Hessian on batch b, all at the fixed
    x₀). Note: the two stored versions of ``my_cnn.py`` read for this (commits 06fe745, 2f2758d)
    have signature defaults ``epoch_power=8, inner_iteration_power=16`` and
    ``--batch_size_power 16``; pass ``outer=8, inner=16, batch=16`` for those (384 HVPs)::

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

    48 HVPs for the report's values (3m per outer round). In expectation the update is
    y ← (1+η)y − (η/λ)Hy = 1.5y − 0.1Hy, a power iteration on 1.5 − 0.1H: it converges to the
    eigenvector maximising |1.5 − 0.1λ_i|, i.e. the *largest* one whenever λ_max + λ_min > 30,
    and 16 steps barely move a random start when the spectrum is small. Quirks kept: ``est`` is
    the average of per-batch estimates yᵀH_b y over the last outer round's iterates (not the
    returned vector's quotient); the original initialises ``y`` with torch's global RNG (here:
    ``generator``). The NC step (θ ← θ − 0.5·sign(⟨g₀, v⟩)·v, g₀ on 64 samples) lives in
    :mod:`accelopt.curvature.step`. ``method``/``module``: how the HVPs are computed (see
    :class:`~accelopt.curvature.hvp.HessianOperator`).
    """
    params = list(params)
    dim = sum(p.numel() for p in params)
    if dim == 0 or outer < 1 or inner < 1:
        return SearchResult(math.nan, None, 0, method="seed_power")
    ref = params[0]
    y = _unit(_randn(dim, ref.dtype, ref.device, generator) * trainable_mask(params))
    if y is None:  # nothing trainable
        return SearchResult(math.nan, None, 0, method="seed_power")
    hvps = grads = 0  # grads: one first-order graph per HVP batch
    est = math.nan
    for _ in range(outer):
        y_snap = y.clone()
        z = torch.zeros_like(y)
        for _ in range(inner):
            op = HessianOperator(probe(batch), params, method=method, reduce=reduce, module=module)
            grads += 1
            z += (y_snap - op.matvec(y_snap) / lam) / inner
            hvps += 1
        acc = 0.0
        for _ in range(inner):
            op = HessianOperator(probe(batch), params, method=method, reduce=reduce, module=module)
            grads += 1
            hy = op.matvec(y)
            hy_snap = op.matvec(y_snap)
            hvps += 2
            acc += float(y @ hy)
            y = y + step * ((y - hy / lam) - (y_snap - hy_snap / lam) + z)
            yn = _unit(y)
            if yn is None:
                return SearchResult(math.nan, None, hvps, method="seed_power", grads=grads)
            y = yn
        est = acc / inner
    found = _is_negative(est, eps_h)
    result = SearchResult(est, y if found else None, hvps, method="seed_power", candidate=y)
    result.iters, result.grads = outer * inner, grads
    return result
