"""The small-gradient checks of accelopt.optim.check."""

from __future__ import annotations

import pytest
import torch

from accelopt.optim import NoiseCheck, mean_grad_norm

DT = torch.float64


def feed(check: NoiseCheck, mean: torch.Tensor, sigma: float, w: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(w):
        check.observe(mean + sigma * torch.randn(mean.shape, generator=g, dtype=DT))


def test_noise_check_estimates_gradient_and_noise_without_the_noise_floor() -> None:
    # 400 gradients g_i = m + σ ξ_i in 1000 dimensions: ‖m‖² = 0.25, E‖g_i − m‖² = σ² d = 10.
    # ‖mean g‖² would read 0.25 + 10/400 = 0.275; the cross-product estimate has no such bias.
    d, w, sigma = 1000, 400, 0.1
    mean = torch.zeros(d, dtype=DT)
    mean[0] = 0.5
    check = NoiseCheck()
    feed(check, mean, sigma, w)
    grad_sq, noise = check.estimate()
    assert grad_sq == pytest.approx(0.25, abs=0.01)
    assert noise == pytest.approx(10.0, rel=0.02)


@pytest.mark.parametrize(("mean_norm", "fires"), [(0.0, True), (1.0, True), (10.0, False)])
def test_noise_check_fires_when_the_gradient_is_below_the_minibatch_noise(
    mean_norm: float, fires: bool
) -> None:
    # noise of one minibatch gradient: σ² d = 0.3² · 50 = 4.5, i.e. a noise norm of about 2.1
    mean = torch.zeros(50, dtype=DT)
    mean[3] = mean_norm
    check = NoiseCheck(ratio=1.0)
    feed(check, mean, 0.3, 64, seed=1)
    assert check.fires() is fires
    assert check.count == 0  # the window is emptied by a decision


def test_noise_check_needs_two_gradients_and_fires_at_an_exact_critical_point() -> None:
    check = NoiseCheck()
    assert check.fires() is False
    check.observe(torch.zeros(3, dtype=DT))
    assert check.fires() is False
    for _ in range(2):
        check.observe(torch.zeros(3, dtype=DT))
    assert check.fires() is True  # deterministic and ∇f = 0: 0 ≤ ratio·0


def test_mean_grad_norm_is_the_norm_of_the_averaged_probe_gradients() -> None:
    p = torch.tensor([1.0, -2.0], dtype=DT, requires_grad=True)
    targets = iter(torch.arange(8, dtype=DT))

    def probe(n: int):
        t = next(targets)
        return lambda: 0.5 * ((p - t) ** 2).sum() * (n / 128)

    norm = mean_grad_norm(probe, [p], batches=8, batch_size=128)
    expected = (p.detach() - torch.arange(8, dtype=DT).mean()).norm()
    assert norm == pytest.approx(float(expected))
