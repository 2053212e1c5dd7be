"""Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

For a symmetric n×n operator H with eigenpairs (λ_i, u_i), the spectral density is
φ(t) = (1/n) Σ_i δ(t − λ_i). For a random start v with E[v vᵀ] = I (Rademacher ±1 entries or
Gaussian) and q = v/‖v‖, the quadratic forms qᵀ f(H) q = Σ_i (u_iᵀq)² f(λ_i) average to
tr f(H)/n. k steps of Lanczos from q give a tridiagonal T_k = S diag(θ) Sᵀ; the Gauss quadrature
with nodes θ_j (Ritz values) and weights τ_j = S[0, j]² (squared first components) satisfies

    Σ_j τ_j θ_j^p = qᵀ H^p q          exactly for p = 0 .. 2k−1.

SLQ averages these quadratures over ``starts`` random vectors, giving nodes and weights whose
weights sum to 1; :func:`density_on_grid` broadens each node into a Gaussian of width σ
(Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019). The extreme Ritz values bound the
spectrum from inside: min θ ≥ λ_min and max θ ≤ λ_max.

The operator needs ``.matvec(v)`` and ``.dim`` (``.dtype``, ``.device`` and a flat 0/1 ``.mask``
of the entries that may vary are used when present, as for
:class:`accelopt.curvature.hvp.HessianOperator`; with a mask, starts are drawn inside it and
the density is that of the masked block, normalised to mass 1). Randomness comes only from the
explicit ``generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from accelopt.checks import is_finite, is_int

from .search import lanczos_step

__all__ = ["SLQResult", "density_on_grid", "gauss_quadrature", "lanczos_tridiagonal", "slq"]

DISTRIBUTIONS = ("rademacher", "gaussian")


@dataclass
class SLQResult:
    """Nodes (Ritz values) and weights of an SLQ run, both float64 1-D tensors on the CPU.

    ``weights`` sum to 1 (each start contributes weights summing to 1/``starts``). ``hvps``:
    operator products spent. ``lambda_min`` / ``lambda_max``: the extreme Ritz values.
    """

    nodes: Tensor
    weights: Tensor
    hvps: int
    starts: int

    @property
    def lambda_min(self) -> float:
        return float(self.nodes.min()) if self.nodes.numel() else math.nan

    @property
    def lambda_max(self) -> float:
        return float(self.nodes.max()) if self.nodes.numel() else math.nan

    def moment(self, p: int) -> float:
        """The quadrature's estimate of tr(H^p)/n."""
        return float((self.weights * self.nodes**p).sum())


def lanczos_tridiagonal(op: object, v0: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``steps`` Lanczos iterations from ``v0``; return ``(alphas, betas)`` (float64, CPU).

    Full re-orthogonalisation (twice per step) keeps Q orthonormal. On breakdown (β ≈ 0: the
    Krylov space of ``v0`` is invariant) it stops early; the quadrature is then exact for every
    polynomial, so no restart is needed. ``len(betas) == len(alphas) − 1``.
    """
    dim = int(op.dim)
    dtype = getattr(op, "dtype", torch.float64)
    device = getattr(op, "device", torch.device("cpu"))
    k = min(int(steps), dim)
    q = v0.detach().to(dtype=dtype, device=device).reshape(-1)
    nq = torch.linalg.vector_norm(q)
    if k < 1 or not torch.isfinite(nq) or nq == 0:
        raise ValueError(f"lanczos_tridiagonal needs steps >= 1 and a nonzero start; got {steps}")
    q = q / nq
    eps = torch.finfo(dtype).eps
    Q = torch.empty(k, dim, dtype=dtype, device=device)
    alphas: list[float] = []
    betas: list[float] = []
    anorm = 0.0
    for j in range(k):
        Q[j] = q
        w, b = lanczos_step(op, Q, j, alphas, betas, name="lanczos_tridiagonal")  # type: ignore[arg-type]
        anorm = max(anorm, abs(alphas[-1]), b)
        if j + 1 == k or b <= 100 * eps * max(anorm, 1e-300) * math.sqrt(j + 1):
            break
        betas.append(b)
        q = w / b
    return torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64)


def gauss_quadrature(alphas: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    """Nodes θ (ascending) and weights S[0, :]² of the tridiagonal T = tridiag(β, α, β).

    For T from :func:`lanczos_tridiagonal` of H from q (unit): Σ_j w_j θ_j^p = qᵀH^p q for
    p ≤ 2k − 1, and the weights sum to 1.
    """
    T = torch.diag(alphas)
    if betas.numel():
        T = T + torch.diag(betas, 1) + torch.diag(betas, -1)
    theta, S = torch.linalg.eigh(T)
    return theta, S[0, :] ** 2


def _start(
    dim: int, distribution: str, mask: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    if distribution == "rademacher":
        v = torch.randint(0, 2, (dim,), generator=generator, device=gdev).to(torch.float64)
        v = 2.0 * v - 1.0
    else:
        v = torch.randn(dim, generator=generator, device=gdev, dtype=torch.float64)
    if mask is not None:
        v = v * mask.detach().to(device=v.device, dtype=v.dtype)
    return v


def slq(
    op: object,
    *,
    starts: int = 2,
    steps: int = 16,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
) -> SLQResult:
    """Stochastic Lanczos quadrature of ``op``: ``starts`` random starts × ≤ ``steps`` products.

    Returns the concatenated Gauss quadrature nodes of every start with weights
    ``S[0, j]² / starts`` (see the module docstring). Costs at most ``starts · steps`` products.
    """
    if not is_int(starts) or starts < 1:
        raise ValueError(f"slq: starts={starts!r} is invalid; it must be an integer >= 1")
    if not is_int(steps) or steps < 1:
        raise ValueError(f"slq: steps={steps!r} is invalid; it must be an integer >= 1")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"slq: distribution={distribution!r} is not one of {DISTRIBUTIONS}")
    dim = int(op.dim)
    mask = getattr(op, "mask", None)
    if mask is not None and not bool((mask != 0).any()):
        mask = None
    nodes, weights, hvps = [], [], 0
    for _ in range(starts):
        v = _start(dim, distribution, mask, generator)
        if not bool((v != 0).any()):  # a Rademacher start cannot vanish; a masked one may
            v = _start(dim, "gaussian", mask, generator)
        alphas, betas = lanczos_tridiagonal(op, v, steps)
        hvps += alphas.numel()
        theta, tau = gauss_quadrature(alphas, betas)
        nodes.append(theta)
        weights.append(tau / starts)
    return SLQResult(torch.cat(nodes), torch.cat(weights), hvps, starts)


def density_on_grid(
    nodes: Tensor,
    weights: Tensor,
    *,
    points: int = 64,
    sigma: float | None = None,
    grid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Gaussian-broadened density φ(t) = Σ_j w_j N(t; θ_j, σ²) on a grid; return ``(grid, φ)``.

    Default grid: ``points`` equally spaced values on [min θ − 3σ, max θ + 3σ], so φ integrates
    to ≈ Σ w_j (= 1 for :func:`slq`). Default σ: 2 % of the node range (1e-3 if the range is 0,
    e.g. a single node). All float64 on the CPU.
    """
    nodes = nodes.detach().to(dtype=torch.float64, device="cpu").reshape(-1)
    weights = weights.detach().to(dtype=torch.float64, device="cpu").reshape(-1)
    if nodes.numel() == 0 or nodes.numel() != weights.numel():
        raise ValueError(
            f"density_on_grid needs as many weights as nodes (>= 1); got {nodes.numel()} nodes "
            f"and {weights.numel()} weights"
        )
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.02 * (hi - lo) if hi > lo else 1e-3
    if not (is_finite(sigma) and sigma > 0):
        raise ValueError(f"density_on_grid: sigma={sigma!r} is invalid; it must be a number > 0")
    if grid is None:
        if not is_int(points) or points < 2:
            raise ValueError(f"density_on_grid: points={points!r} is invalid; it must be >= 2")
        grid = torch.linspace(lo - 3 * sigma, hi + 3 * sigma, points, dtype=torch.float64)
    grid = grid.detach().to(dtype=torch.float64, device="cpu").reshape(-1)
    z = (grid[:, None] - nodes[None, :]) / sigma
    phi = (torch.exp(-0.5 * z**2) * weights[None, :]).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return grid, phi
