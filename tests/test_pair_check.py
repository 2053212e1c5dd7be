"""PairCheck: ⟨g₁, g₂⟩ of two independent probe gradients, an unbiased estimate of ‖∇f(θ)‖².

The problem: f(θ) = ½ θᵀAθ + bᵀθ in d = 20 dimensions, every probe gradient ∇f(θ) + ξ with
ξ ~ N(0, s² I) drawn afresh (s² = 0.05): ∇f = Aθ + b is known in closed form, and so are the
estimator's mean ‖∇f‖² and variance 2s²‖∇f‖² + d s⁴.
"""

from __future__ import annotations

import math

import pytest
import torch

from accelopt.optim import NCEscape, PairCheck, Schedule

DT = torch.float64
D, S2 = 20, 0.05
A = torch.linspace(0.5, 3.0, D, dtype=DT)
B = torch.linspace(-1.0, 1.0, D, dtype=DT)


def make(grad: torch.Tensor, tol: float = 0.5, seed: int = 0):
    """An optimizer at the θ with ∇f(θ) = ``grad``, and a noisy probe."""
    theta = ((grad - B) / A).clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)

    def probe(n: int):
        xi = math.sqrt(S2) * torch.randn(D, generator=gen, dtype=DT)
        return lambda: 0.5 * (A * theta**2).sum() + ((B + xi) * theta).sum()

    opt = NCEscape([theta], lr=0.1, base="sgd", check=PairCheck(batch_size=4, tol=tol))
    return opt, probe


def draws(grad: torch.Tensor, m: int, tol: float = 0.5) -> torch.Tensor:
    opt, probe = make(grad, tol=tol)
    out = []
    for _ in range(m):
        opt.check.passes(opt, probe)
        out.append(opt.check.last_grad_sq)
    assert opt.counters["grads"] == 2 * m  # two gradients per check
    return torch.tensor(out, dtype=DT)


def gradient(sq_norm: float) -> torch.Tensor:
    g = torch.ones(D, dtype=DT)
    return g * math.sqrt(sq_norm / D)


@pytest.mark.parametrize("sq_norm", [0.0, 1.0])
def test_the_estimate_is_unbiased_at_a_fixed_point(sq_norm: float) -> None:
    m = 4000
    est = draws(gradient(sq_norm), m)
    se = float(est.std()) / math.sqrt(m)
    var = 2 * S2 * sq_norm + D * S2**2
    assert float(est.var()) == pytest.approx(var, rel=0.1)  # the closed-form variance
    # mean within 4 standard errors; ‖g₁‖² would be biased by d s² = 1.0 ≫ 4 SE ≈ 0.025
    assert abs(float(est.mean()) - sq_norm) < 4 * se
    assert 20 * se < D * S2


def test_false_positives_above_the_threshold_are_rare() -> None:
    # ‖∇f‖² = 1 against ε_g² = 0.25: Cantelli bounds P(estimate < ε_g²) by
    # Var / (Var + (1 − 0.25)²) = 0.15 / 0.7125 = 0.21 whatever the noise's law;
    # Gaussian noise gives about Φ(−0.75 / 0.39) ≈ 3 %.
    m, tau, g2 = 2000, 0.25, 1.0
    var = 2 * S2 * g2 + D * S2**2
    rate = float((draws(gradient(g2), m) < tau).double().mean())
    assert rate <= var / (var + (g2 - tau) ** 2)
    assert rate < 0.08


def test_a_point_below_the_threshold_fires_most_of_the_time() -> None:
    # ∇f = 0: the estimate has mean 0 and variance d s⁴ = 0.05; Cantelli: it fires with
    # probability ≥ 1 − 0.05 / (0.05 + 0.25²) = 0.56, Gaussian noise: Φ(0.25 / 0.22) ≈ 0.87.
    m, tau = 2000, 0.25
    opt, probe = make(torch.zeros(D, dtype=DT))
    fired = sum(opt.check.passes(opt, probe) for _ in range(m)) / m
    assert fired >= 1 - (D * S2**2) / (D * S2**2 + tau**2)
    assert fired > 0.75


def test_pair_check_inside_the_optimizer_counts_its_gradients() -> None:
    theta = torch.zeros(D, dtype=DT, requires_grad=True)
    gen = torch.Generator().manual_seed(1)

    def probe(n: int):
        xi = math.sqrt(S2) * torch.randn(D, generator=gen, dtype=DT)
        return lambda: 0.5 * (A * theta**2).sum() + ((B + xi) * theta).sum()

    opt = NCEscape([theta], lr=0.01, base="sgd", check="pair", tol=1e-3, schedule=Schedule(every=2))
    for _ in range(6):
        opt.step(probe(1), probe=probe)
    assert opt.counters["checks"] == 3
    assert opt.counters["grads"] == 6  # ‖∇f‖ ≈ ‖b‖ ≫ 1e-3: no search, 2 gradients per check
    assert opt.counters["searches"] == 0


@pytest.mark.parametrize(
    ("knobs", "message"),
    [({"tol": 0.0}, "tol=0.0"), ({"batch_size": 0}, "batch_size=0"), ({"tol": "x"}, "tol='x'")],
)
def test_bad_knobs_are_one_clear_error(knobs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PairCheck(**knobs)


def test_the_pair_config_group_selects_it(make_cfg) -> None:
    from hydra.utils import instantiate

    cfg = make_cfg("optimizer=gose", "optimizer/check=pair", "+optimizer.check.tol=0.05")
    opt = instantiate(cfg.optimizer)(torch.nn.Linear(3, 2).parameters())
    assert isinstance(opt.check, PairCheck) and opt.check.tol == 0.05
    assert opt.check.threshold == pytest.approx(0.0025)
