"""Searches for a direction of negative curvature: ``lanczos``, ``neon2``, ``vr_power``.

Each returns a :class:`SearchResult` ``(lam, direction, hvps)`` under a budget. A direction is
returned ("found") only when its curvature estimate ``lam`` satisfies ``lam < 0`` and
``lam <= -eps_h/2``; otherwise ``direction`` is ``None`` and ``lam`` is the best estimate (NaN if
there is none). Randomness comes only from the explicit ``generator`` (``None``: torch's global
generator), so a search is reproducible from the generator's state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .hvp import Closure, HessianOperator, Reduce, assign_flat, flat_grad, flatten, trainable_mask

__all__ = ["SearchResult", "lanczos", "lanczos_step", "neon2", "random_unit"]


class LinearOperator(Protocol):
    dim: int

    def matvec(self, v: Tensor) -> Tensor: ...


@dataclass
class SearchResult:
    """Outcome of a negative-curvature search.

    ``lam``: Rayleigh quotient ``vᵀHv`` of the returned direction (of the best candidate if none
    was found; NaN if there is none). ``direction``: unit flat vector, or ``None`` ("none found").
    ``hvps``: Hessian-vector products spent (``neon2``: the one of its ``rayleigh="hvp"``
    curvature estimate, or none). ``lam_max``: largest Ritz value (``lanczos`` only, a lower bound of
    λ_max). ``residual``: ``‖H v − lam v‖`` estimate (``lanczos`` only). ``iters``: iterations.
    ``history``: smallest Ritz value after each product (``lanczos(record=True)`` only).
    ``candidate``: the unit vector behind ``lam`` even when nothing was found (for warm starts
    and diagnostics; ``None`` only if there is no vector). ``grads``: gradients computed besides
    the products (``vr_power``: the first-order graph of each HVP batch; ``neon2``: g₀, the
    walk's and the estimate's gradients; 0 for ``lanczos``, whose operator's gradient is counted
    by the caller that built it).
    """

    lam: float
    direction: Tensor | None
    hvps: int
    lam_max: float = math.nan
    residual: float = math.nan
    iters: int = 0
    method: str = ""
    history: list[float] | None = None
    candidate: Tensor | None = None
    grads: int = 0

    @property
    def found(self) -> bool:
        return self.direction is not None


def _is_negative(lam: float, eps_h: float) -> bool:
    return math.isfinite(lam) and lam < 0.0 and lam <= -eps_h / 2


def _randn(
    n: int, dtype: torch.dtype, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randn(n, generator=generator, dtype=dtype, device=gdev).to(device)


def _unit(v: Tensor) -> Tensor | None:
    n = torch.linalg.vector_norm(v)
    if not torch.isfinite(n) or n == 0:
        return None
    return v / n


# --------------------------------------------------------------------------------------------
# Lanczos
# --------------------------------------------------------------------------------------------


def _tridiag(alphas: list[float], betas: list[float]) -> Tensor:
    """The k×k symmetric tridiagonal T (float64) from α₁..α_k and β₁..β_{k−1}."""
    k = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return T


def random_unit(
    op: LinearOperator,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
) -> Tensor:
    """A uniformly random unit vector inside ``op.mask`` (the trainable entries), if it has one."""
    r = _randn(dim, dtype, device, generator)
    mask = getattr(op, "mask", None)
    q = _unit(r if mask is None else r * mask.to(r))
    q = _unit(r) if q is None else q
    assert q is not None
    return q


def _start(
    op: LinearOperator,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    v0: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    """Lanczos's first vector: ``v0`` normalised, else :func:`random_unit`."""
    q = None
    if v0 is not None:
        q = _unit(v0.detach().to(dtype=dtype, device=device).reshape(-1))
    return random_unit(op, dim, dtype, device, generator) if q is None else q


def _restart(
    Qj: Tensor,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    generator: torch.Generator | None,
    eps: float,
) -> Tensor | None:
    """A random unit vector orthogonal to the rows of ``Qj``; None if none is left."""
    r = _randn(dim, dtype, device, generator)
    for _ in range(2):
        r = r - Qj.T @ (Qj @ r)
    nr = float(torch.linalg.vector_norm(r))
    if nr <= 1e3 * eps * math.sqrt(dim):
        return None
    return r / nr


def lanczos_step(
    op: LinearOperator,
    Q: Tensor,
    j: int,
    alphas: list[float],
    betas: list[float],
    name: str = "lanczos",
) -> tuple[Tensor, float]:
    """One Lanczos step at ``q_j = Q[j]``; appends α_j to ``alphas``; returns ``(w, ‖w‖)``::

    w = H q_j,  α_j = q_jᵀ w,  w ← w − α_j q_j − β_{j−1} q_{j−1},
    w ← w − Q (Qᵀ w) twice (full re-orthogonalisation against Q[: j + 1])
    """
    q = Q[j]
    w = op.matvec(q).to(dtype=Q.dtype, device=Q.device).reshape(-1)
    if not torch.isfinite(w).all():
        raise FloatingPointError(f"{name}: the operator returned a non-finite product")
    a = float(q @ w)
    alphas.append(a)
    w = w - a * q
    if j > 0:
        w = w - betas[j - 1] * Q[j - 1]
    Qj = Q[: j + 1]
    for _ in range(2):
        w = w - Qj.T @ (Qj @ w)
    return w, float(torch.linalg.vector_norm(w))


def lanczos(
    op: LinearOperator,
    *,
    max_hvps: int = 30,
    eps_h: float = 0.0,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    record: bool = False,
) -> SearchResult:
    """Smallest algebraic eigenvalue of the symmetric operator ``op`` by Lanczos.

    ``op`` needs ``.matvec(v)`` and ``.dim`` (``.dtype``/``.device`` are used when present,
    else float64/CPU). Iteration (q₁ = v0/‖v0‖, or a random unit vector when ``v0`` is None/zero,
    drawn inside ``op.mask`` (trainable entries) when the operator has one; β₀ q₀ = 0)::

        w   = H q_j                     (one product)
        α_j = q_jᵀ w
        w  ← w − α_j q_j − β_{j−1} q_{j−1}
        w  ← w − Q (Qᵀ w), twice        (full re-orthogonalisation against Q = [q₁ … q_j])
        β_j = ‖w‖,  q_{j+1} = w / β_j

    The k×k tridiagonal T_k = tridiag(β, α, β) is eigen-solved with ``torch.linalg.eigh``
    (float64) at the end, and after every product when ``eps_h > 0``; its smallest eigenpair
    (θ, s) gives the Ritz vector ``v = Q s`` with Rayleigh quotient ``vᵀHv = θ`` and residual
    ``‖Hv − θv‖ = |β_k s_k|``. ``lam_max`` is the largest Ritz value (cheap λ_max estimate).

    Stopping: budget of ``max_hvps`` products (at most ``dim``). With ``eps_h > 0`` it exits early
    as soon as θ ≤ −eps_h/2; with ``eps_h == 0`` it spends the whole budget (the most accurate
    λ_min for the budget). Breakdown (β_j ≈ 0: Q spans an invariant subspace) restarts from a
    random vector orthogonal to Q with β_j = 0 in T (still an exact projection QᵀHQ), and stops
    when no such vector is left. ``found`` iff θ < 0 and θ ≤ −eps_h/2. ``record=True`` keeps the
    smallest Ritz value after every product in ``history`` (the Krylov spaces are nested, so
    ``history[k-1]`` is what a budget of k products returns from the same start).
    """
    dim = int(op.dim)
    dtype = getattr(op, "dtype", torch.float64)
    device = getattr(op, "device", torch.device("cpu"))
    budget = min(int(max_hvps), dim)
    if budget <= 0:
        return SearchResult(math.nan, None, 0, method="lanczos")
    Q = torch.empty(budget, dim, dtype=dtype, device=device)
    Q[0] = _start(op, dim, dtype, device, v0, generator)
    alphas, betas, history = _lanczos_loop(op, Q, eps_h, generator, record)
    return _ritz(Q, alphas, betas, eps_h, history if record else None)


def _lanczos_loop(
    op: LinearOperator, Q: Tensor, eps_h: float, generator: torch.Generator | None, record: bool
) -> tuple[list[float], list[float], list[float]]:
    """:func:`lanczos`'s iteration from ``Q[0]``, filling the rows of ``Q`` it reaches.

    Returns α₁..α_k (one per product), β₁..β_k and the smallest Ritz value after each product
    (computed only when ``eps_h > 0`` or ``record``).
    """
    budget, dim = Q.shape
    eps = torch.finfo(Q.dtype).eps
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}
    history: list[float] = []
    anorm = 0.0
    for j in range(budget):
        w, b = lanczos_step(op, Q, j, alphas, betas)
        anorm = max(anorm, abs(alphas[-1]), b, betas[j - 1] if j > 0 else 0.0)
        k = j + 1
        if eps_h > 0 or record:  # early exit test (with eps_h == 0 T is solved only at the end)
            theta = float(torch.linalg.eigvalsh(_tridiag(alphas, betas))[0])
            history.append(theta)
            if eps_h > 0 and _is_negative(theta, eps_h):
                betas.append(b)
                break
        if k == budget:
            betas.append(b)
            break
        if b <= 100 * eps * max(anorm, 1e-300) * math.sqrt(k):
            # invariant subspace: restart from a random vector orthogonal to span(Q)
            b = 0.0
            q = _restart(Q[:k], dim, Q.dtype, Q.device, generator, eps)
            if q is None:
                betas.append(0.0)
                break
        else:
            q = w / b
        betas.append(b)
        Q[k] = q
    return alphas, betas, history


def _ritz(
    Q: Tensor, alphas: list[float], betas: list[float], eps_h: float, history: list[float] | None
) -> SearchResult:
    """The smallest Ritz pair of T_k = tridiag(β, α, β) as a :class:`SearchResult` (k products)."""
    k = len(alphas)
    evals, evecs = torch.linalg.eigh(_tridiag(alphas, betas))
    theta, lam_max = float(evals[0]), float(evals[-1])
    s = evecs[:, 0].to(dtype=Q.dtype, device=Q.device)
    v = _unit(Q[:k].T @ s)
    residual = abs(betas[k - 1] * float(s[-1])) if betas else math.nan
    found = v is not None and _is_negative(theta, eps_h)
    return SearchResult(
        lam=theta,
        direction=v if found else None,
        hvps=k,
        lam_max=lam_max,
        residual=residual,
        iters=k,
        method="lanczos",
        history=history,
        candidate=v,
    )


# --------------------------------------------------------------------------------------------
# Neon2 (first-order)
# --------------------------------------------------------------------------------------------


def neon2(
    closure: Closure,
    params: Sequence[Tensor],
    *,
    max_grads: int,
    eps_h: float = 0.0,
    generator: torch.Generator | None = None,
    reduce: Reduce = None,
    eta: float = 0.05,
    sigma: float = 1e-3,
    radius: float | None = None,
    rayleigh: str = "hvp",
) -> SearchResult:
    """Allen-Zhu & Li (2018) Neon2 first-order search on the fixed batch of ``closure``.

    With x₀ the current parameters, g₀ = ∇f_S(x₀), ξ a random unit vector::

        x₁ = x₀ + σ ξ
        x_{t+1} = x_t − η (∇f_S(x_t) − g₀)        (≈ (I − ηH)(x_t − x₀) around x₀)

    until ‖x_t − x₀‖ ≥ r (``radius``, default 100σ) or the gradient budget is spent; then
    ``v = (x_t − x₀)/‖x_t − x₀‖``. The displacement is a power iteration on I − ηH, so it grows
    fastest along the most negative curvature (needs η < 2/λ_max to stay stable). The parameters
    are moved (``assign_flat``: ``p.data`` rebound to copies of slices of a flat vector) and
    restored exactly before returning; a :class:`HessianOperator` built before the call must not
    be used afterwards (autograd's version check would not notice): build operators after it.

    Curvature estimate ``lam = vᵀHv``: ``rayleigh="hvp"`` (default, exact) builds one
    first-order graph at x₀ and takes one HVP (counted 2: one gradient + one HVP);
    ``rayleigh="fd"`` uses one gradient difference ``vᵀ(∇f_S(x₀ + δv) − g₀)/δ`` with
    δ = ‖x_t − x₀‖ (counted 1; inaccurate in float32 on ReLU nets: a gradient difference over
    a small δ loses most of its digits, and ReLU kinks make it a poor curvature estimate).
    ``grads`` (g₀, the walk's, the estimate's) + ``hvps`` (the estimate's one HVP, or none)
    ≤ ``max_grads``.
    """
    n_iter, _ = _neon2_budget(max_grads, rayleigh)
    params = list(params)
    batch = _Neon2Batch(closure, params, reduce, flatten([p.detach() for p in params]).clone())
    x0 = batch.x0
    try:
        g0 = batch.grad()
        xi = _unit(_randn(x0.numel(), x0.dtype, x0.device, generator) * trainable_mask(params))
        if xi is None:
            return SearchResult(math.nan, None, 0, method="neon2", grads=1)
        r = 100 * sigma if radius is None else radius
        u, it = batch.walk(g0, sigma * xi, n_iter=n_iter, eta=eta, radius=r)
        v = _unit(u)
        if v is None:
            return SearchResult(math.nan, None, 0, iters=it, method="neon2", grads=1 + it)
        lam = batch.curvature(v, u, g0, rayleigh)
    finally:
        assign_flat(x0, params)
    hvps = 1 if rayleigh == "hvp" else 0  # the estimate: one gradient (+ one HVP for "hvp")
    found = _is_negative(lam, eps_h)
    return SearchResult(
        lam, v if found else None, hvps, iters=it, method="neon2", candidate=v, grads=2 + it
    )


def _neon2_budget(max_grads: int, rayleigh: str) -> tuple[int, int]:
    """(iterations of the walk, cost of the curvature estimate) within ``max_grads`` gradients."""
    if rayleigh not in ("hvp", "fd"):
        raise ValueError(f"rayleigh must be 'hvp' or 'fd', got {rayleigh!r}")
    est_cost = 2 if rayleigh == "hvp" else 1
    n_iter = int(max_grads) - 1 - est_cost
    if n_iter < 1:
        raise ValueError(f"neon2 needs max_grads >= {2 + est_cost}")
    return n_iter, est_cost


@dataclass
class _Neon2Batch:
    """:func:`neon2`'s fixed batch: its gradient anywhere near ``x0``, its curvature at ``x0``."""

    closure: Closure
    params: list[Tensor]
    reduce: Reduce
    x0: Tensor

    def grad(self, x: Tensor | None = None) -> Tensor:
        """∇f_S at ``x`` (the parameters moved there), or where the parameters are if None."""
        if x is not None:
            assign_flat(x, self.params)
        return flat_grad(self.closure, self.params, reduce=self.reduce)[1]

    def walk(
        self, g0: Tensor, u: Tensor, *, n_iter: int, eta: float, radius: float
    ) -> tuple[Tensor, int]:
        """``u ← u − η (∇f_S(x₀ + u) − g₀)`` until ``‖u‖ ≥ radius``, ``u`` is not finite or
        ``n_iter`` gradients are spent; returns the last ``u`` and the gradients spent."""
        it = 0
        for it in range(1, n_iter + 1):  # noqa: B007
            u = u - eta * (self.grad(self.x0 + u) - g0)
            if not torch.isfinite(u).all():
                break
            if float(torch.linalg.vector_norm(u)) >= radius:
                break
        return u, it

    def curvature(self, v: Tensor, u: Tensor, g0: Tensor, rayleigh: str) -> float:
        """``vᵀHv`` at x₀: one HVP (``"hvp"``) or one gradient difference over δ = ‖u‖ (``"fd"``)."""
        if rayleigh == "hvp":
            assign_flat(self.x0, self.params)
            op = HessianOperator(self.closure, self.params, reduce=self.reduce)
            return float(v @ op.matvec(v))
        delta = float(torch.linalg.vector_norm(u))
        return float(v @ (self.grad(self.x0 + delta * v) - g0)) / delta
