"""The saddle benchmark's problem (a): its closed-form saddle and a tiny run of its core.

``f(U, V) = ½‖UVᵀ − M‖²_F`` has a strict saddle at the origin with ``λ_min = −σ_max(M)``
(:mod:`accelopt.analysis.saddles` derives it); checked here on a dense float64 Hessian.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import hessian

from accelopt.analysis import saddles


def _hessian_at_origin(loss, d: int, k: int) -> torch.Tensor:
    """Dense float64 Hessian of ``loss(U, V)`` at ``U = V = 0`` over the flat ``(U, V)``."""

    def flat(z: torch.Tensor) -> torch.Tensor:
        return loss(z[: d * k].view(d, k), z[d * k :].view(d, k))

    return hessian(flat, torch.zeros(2 * d * k, dtype=torch.float64))


@pytest.mark.parametrize("sigmas", [saddles.SIGMAS, (2.5, 1.0), (0.7, 0.7, 0.2, 0.1)])
def test_origin_is_strict_saddle_with_lambda_min_minus_sigma_max(sigmas: tuple) -> None:
    torch.set_num_threads(1)
    m = saddles.make_target(saddles.D, sigmas, seed=3)
    sigma = torch.linalg.svdvals(m)
    assert sigma[0].item() == pytest.approx(max(sigmas), abs=1e-12)
    h = _hessian_at_origin(lambda u, v: saddles.population_loss(u, v, m), saddles.D, len(sigmas))
    eig = torch.linalg.eigvalsh(h)
    assert eig[0].item() == pytest.approx(-sigma[0].item(), abs=1e-10)
    assert eig[-1].item() == pytest.approx(sigma[0].item(), abs=1e-10)  # spectrum is ±σ_i, 0


def test_minibatch_loss_has_the_population_saddle() -> None:
    """The sampled loss the optimizers see: its Hessian at 0 on 200k samples ≈ the population's."""
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    m = saddles.make_target()
    x = torch.randn(200_000, saddles.D, generator=g, dtype=torch.float64)
    xi = saddles.NOISE * torch.randn(200_000, saddles.D, generator=g, dtype=torch.float64)
    h = _hessian_at_origin(lambda u, v: saddles.sample_loss(u, v, m, x, xi), saddles.D, saddles.K)
    lam = torch.linalg.eigvalsh(h)[0].item()
    assert lam == pytest.approx(-max(saddles.SIGMAS), abs=0.02)


def test_heldout_is_relative_excess() -> None:
    prob = saddles.SaddleProblem(seed=1, scale=0.0)
    assert prob.heldout() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():  # U Vᵀ = M exactly: the excess is 0
        u, s, vh = torch.linalg.svd(prob.m)
        prob.u.copy_(u[:, : saddles.K] * s[: saddles.K])
        prob.v.copy_(vh[: saddles.K].T)
    assert prob.heldout() == pytest.approx(0.0, abs=1e-4)


def test_saddle_core_gose_escapes_before_heavy_ball() -> None:
    """Tiny budget (300 steps): GOSE's NC steps reach the threshold, heavy ball is still stuck."""
    torch.set_num_threads(1)
    spec = saddles.Spec(lr=saddles.SPECS["saddle"].lr, budget=300, eval_every=10, threshold=0.002)
    hb = saddles.run_one("saddle", "heavyball", 1, spec)
    gose = saddles.run_one("saddle", "gose", 1, spec)
    assert hb["status"] == "budget" and hb["last_heldout"] > spec.threshold
    assert gose["status"] == "reached" and gose["steps"] <= 300
    assert gose["nc"]["steps"] >= 1 and gose["nc"]["searches"] >= gose["nc"]["steps"]
