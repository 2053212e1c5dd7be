"""Stochastic Lanczos quadrature (accelopt.curvature.density) on operators with known spectra."""

from __future__ import annotations

import math

import pytest
import torch

from accelopt.curvature.density import (
    density_on_grid,
    gauss_quadrature,
    lanczos_tridiagonal,
    slq,
)


class Dense:
    """A dense symmetric float64 matrix as an operator (optionally with a trainable mask)."""

    def __init__(self, a: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.a = a
        self.dim = a.shape[0]
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        self.n_products = 0
        if mask is not None:
            self.mask = mask

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_products += 1
        return self.a @ v


def rotated(eigs: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Q diag(eigs) Qᵀ with a random orthogonal Q (float64)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    return q @ torch.diag(eigs) @ q.T


def test_diagonal_spectrum_is_recovered_exactly() -> None:
    # Rademacher starts have v_i² = 1, so every quadratic form vᵀD^p v / n equals tr(D^p)/n:
    # the moments are exact, and with steps = n the nodes are the eigenvalues, weights 1/n each.
    eigs = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5, 4.0, 9.0], dtype=torch.float64)
    op = Dense(torch.diag(eigs))
    res = slq(op, starts=3, steps=8, generator=torch.Generator().manual_seed(1))
    assert res.weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    for p in range(1, 6):
        assert res.moment(p) == pytest.approx(float((eigs**p).mean()), rel=1e-9, abs=1e-9)
    assert res.lambda_min == pytest.approx(-2.0, abs=1e-9)
    assert res.lambda_max == pytest.approx(9.0, abs=1e-9)
    assert res.hvps == op.n_products == 24
    # every eigenvalue carries mass 1/n (summed over the starts' nodes near it)
    for lam in eigs:
        near = (res.nodes - lam).abs() < 1e-6
        assert res.weights[near].sum().item() == pytest.approx(1 / 8, abs=1e-9)


def test_gauss_quadrature_matches_dense_moments_of_the_start() -> None:
    # Σ_j τ_j θ_j^p = qᵀ A^p q for p ≤ 2k − 1 (Gauss quadrature), checked with dense powers
    eigs = torch.linspace(-1.0, 3.0, 40, dtype=torch.float64) ** 3
    a = rotated(eigs, seed=2)
    q = torch.randn(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q = q / q.norm()
    k = 5
    alphas, betas = lanczos_tridiagonal(Dense(a), q, k)
    assert alphas.numel() == k and betas.numel() == k - 1
    theta, tau = gauss_quadrature(alphas, betas)
    assert tau.sum().item() == pytest.approx(1.0, abs=1e-12)
    for p in range(2 * k):
        exact = float(q @ torch.linalg.matrix_power(a, p) @ q)
        assert float((tau * theta**p).sum()) == pytest.approx(exact, rel=1e-8, abs=1e-8)
    # degree 2k is not integrated exactly (the test above can fail)
    exact = float(q @ torch.linalg.matrix_power(a, 2 * k) @ q)
    assert abs(float((tau * theta ** (2 * k)).sum()) - exact) > 1e-6 * abs(exact)


def test_rotated_matrix_moments_and_extremes() -> None:
    # Hessian-like spectrum: a bulk near 0 and a few outliers, randomly rotated
    g = torch.Generator().manual_seed(4)
    bulk = 0.05 * torch.randn(57, generator=g, dtype=torch.float64)
    eigs = torch.cat([bulk, torch.tensor([-0.8, 5.0, 12.0], dtype=torch.float64)])
    a = rotated(eigs, seed=5)
    res = slq(Dense(a), starts=64, steps=12, generator=torch.Generator().manual_seed(6))
    n = len(eigs)
    # unbiased stochastic trace estimates: Var(vᵀAv)/n² = 2 Σ_{i≠j} a_ij² / n² for Rademacher
    for p in (1, 2):
        ap = torch.linalg.matrix_power(a, p)
        sd = math.sqrt(2 * float((ap**2).sum() - (ap.diagonal() ** 2).sum()) / 64) / n
        assert abs(res.moment(p) - float(ap.trace()) / n) < 4 * sd
    assert res.moment(0) == pytest.approx(1.0, abs=1e-12)
    assert res.lambda_max == pytest.approx(12.0, abs=1e-8)
    assert res.lambda_min == pytest.approx(-0.8, abs=1e-6)


def test_broadened_density_integrates_to_one_with_the_right_moments() -> None:
    eigs = torch.tensor([-1.0, 0.0, 0.0, 0.5, 2.0, 6.0], dtype=torch.float64)
    res = slq(Dense(torch.diag(eigs)), starts=2, steps=6, generator=torch.Generator())
    sigma = 0.1
    grid, phi = density_on_grid(res.nodes, res.weights, points=2000, sigma=sigma)
    assert grid[0] == pytest.approx(-1.0 - 3 * sigma) and grid[-1] == pytest.approx(6.3)
    mass = torch.trapezoid(phi, grid).item()
    mean = torch.trapezoid(phi * grid, grid).item() / mass
    second = torch.trapezoid(phi * grid**2, grid).item() / mass
    assert mass == pytest.approx(1.0, abs=3e-3)  # the 3σ tails are cut
    assert mean == pytest.approx(float(eigs.mean()), abs=1e-2)
    assert second == pytest.approx(float((eigs**2).mean()) + sigma**2, rel=1e-2)
    # the density peaks at the double eigenvalue 0 (mass 2/6)
    assert abs(float(grid[phi.argmax()])) < 0.02


def test_mask_restricts_the_density_to_trainable_entries() -> None:
    # frozen entries (mask 0) have zero Hessian rows: they must not add mass at 0
    eigs = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0], dtype=torch.float64)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    res = slq(Dense(torch.diag(eigs), mask), starts=2, steps=5, generator=torch.Generator())
    assert res.moment(1) == pytest.approx(2.0, abs=1e-9)
    assert res.lambda_min == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_reproducible_and_leaves_global_rng_alone(distribution: str) -> None:
    a = rotated(torch.linspace(-1, 1, 30, dtype=torch.float64), seed=7)
    state = torch.get_rng_state()
    r1 = slq(
        Dense(a),
        starts=2,
        steps=6,
        distribution=distribution,
        generator=torch.Generator().manual_seed(8),
    )
    r2 = slq(
        Dense(a),
        starts=2,
        steps=6,
        distribution=distribution,
        generator=torch.Generator().manual_seed(8),
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(r1.nodes, r2.nodes) and torch.equal(r1.weights, r2.weights)


def test_bad_input_is_refused_with_one_clear_line() -> None:
    op = Dense(torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="starts=0"):
        slq(op, starts=0)
    with pytest.raises(ValueError, match="distribution='uniform'"):
        slq(op, distribution="uniform")
    with pytest.raises(ValueError, match="sigma=-1.0"):
        density_on_grid(torch.ones(2), torch.ones(2), sigma=-1.0)
    with pytest.raises(ValueError, match="as many weights as nodes"):
        density_on_grid(torch.ones(2), torch.ones(3))
