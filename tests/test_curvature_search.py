"""Negative-curvature searches against numpy.linalg.eigvalsh and dense Hessians (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from accelopt.curvature import HessianOperator, flatten, lanczos, neon2, unflatten_like
from accelopt.curvature import vr_power as _vr_power
from accelopt.optim.presets import REPORT_POWER


def vr_power(probe, params, **knobs):
    """The report's power iteration with its values (accelopt.optim.presets) unless given."""
    return _vr_power(probe, params, **{**REPORT_POWER, **knobs})


class Dense:
    """A dense symmetric matrix as a search operator (counts products)."""

    def __init__(self, A: torch.Tensor) -> None:
        self.A = A
        self.dim = A.shape[0]
        self.dtype = A.dtype
        self.device = A.device
        self.n_products = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.n_products += 1
        return self.A @ v


def wishart_minus_shift(dim: int, seed: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((dim, 2 * dim))
    return X @ X.T / (2 * dim) - shift * np.eye(dim)


def with_spectrum(evals: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(evals), len(evals))))
    return (Q * evals) @ Q.T


def check_eigpair(A: np.ndarray, res, max_hvps: int, rel: float = 1e-6) -> None:
    lam_min = np.linalg.eigvalsh(A)[0]
    assert res.found and res.hvps <= max_hvps
    assert abs(res.lam - lam_min) <= rel * abs(lam_min)
    v = res.direction.numpy()
    assert abs(np.linalg.norm(v) - 1) < 1e-12
    rq = v @ A @ v
    assert abs(rq - lam_min) <= rel * abs(lam_min)
    resid = np.linalg.norm(A @ v - rq * v)
    assert resid <= 1e-2 * abs(lam_min)
    assert res.residual == pytest.approx(resid, rel=0.1, abs=1e-9)


@pytest.mark.parametrize("dim,seed", [(200, 0), (500, 1)])
def test_lanczos_wishart_minus_shift(dim, seed):
    A = wishart_minus_shift(dim, seed, shift=1.0)  # spectrum ≈ [−0.91, 1.91]
    res = lanczos(
        Dense(torch.from_numpy(A)), max_hvps=dim, generator=torch.Generator().manual_seed(0)
    )
    check_eigpair(A, res, dim)
    assert res.lam_max == pytest.approx(np.linalg.eigvalsh(A)[-1], rel=1e-6)


def test_lanczos_known_spectrum_with_gap_small_budget():
    dim = 300
    evals = np.concatenate([[-2.0, -1.0], np.linspace(0.5, 10.0, dim - 2)])
    A = with_spectrum(evals, 2)
    op = Dense(torch.from_numpy(A))
    res = lanczos(op, max_hvps=60, generator=torch.Generator().manual_seed(3))
    assert op.n_products == res.hvps == 60  # eps_h = 0: the whole budget is used
    check_eigpair(A, res, 60)
    assert res.lam == pytest.approx(-2.0, rel=1e-6)


def test_lanczos_positive_definite_reports_none_found():
    A = wishart_minus_shift(250, 4, shift=-0.05)  # all eigenvalues > 0.05
    lam_min = np.linalg.eigvalsh(A)[0]
    assert lam_min > 0
    res = lanczos(
        Dense(torch.from_numpy(A)), max_hvps=250, generator=torch.Generator().manual_seed(0)
    )
    assert not res.found and res.direction is None
    assert res.lam == pytest.approx(lam_min, rel=1e-6)


def test_lanczos_early_exit_and_warm_start():
    dim = 200
    evals = np.concatenate([[-2.0], np.linspace(0.5, 10.0, dim - 1)])
    A = with_spectrum(evals, 5)
    op = Dense(torch.from_numpy(A))
    res = lanczos(op, max_hvps=50, eps_h=0.5, generator=torch.Generator().manual_seed(0))
    assert res.found and res.hvps < 50 and res.lam <= -0.25
    assert float(res.direction @ op.A @ res.direction) == pytest.approx(res.lam, abs=1e-10)
    # warm start from the exact eigenvector: one product, exact answer
    v_true = torch.from_numpy(np.linalg.eigh(A)[1][:, 0])
    res2 = lanczos(Dense(torch.from_numpy(A)), max_hvps=50, eps_h=0.5, v0=v_true)
    assert res2.hvps == 1 and res2.lam == pytest.approx(-2.0, rel=1e-10)
    # zero v0 falls back to a random start
    res3 = lanczos(op, max_hvps=50, eps_h=0.5, v0=torch.zeros(dim, dtype=torch.float64))
    assert res3.found


def test_lanczos_breakdown_few_distinct_eigenvalues():
    dim = 200
    evals = np.repeat([-3.0, 1.0, 2.0, 4.0], dim // 4)
    A = with_spectrum(evals, 6)
    # start in the span of the top eigenvectors only: the Krylov space is invariant at once
    U = np.linalg.eigh(A)[1]
    v0 = torch.from_numpy(U[:, -1])
    op = Dense(torch.from_numpy(A))
    res = lanczos(op, max_hvps=20, v0=v0, generator=torch.Generator().manual_seed(0))
    assert res.found and res.lam == pytest.approx(-3.0, rel=1e-9)
    assert math.isfinite(res.residual) and res.residual < 1e-8
    # H = c·I: every start is an eigenvector
    res_c = lanczos(Dense(-0.5 * torch.eye(50, dtype=torch.float64)), max_hvps=30)
    assert res_c.found and res_c.lam == pytest.approx(-0.5, rel=1e-12)


@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e-200])
def test_lanczos_zero_and_tiny_operators(scale):
    evals = np.linspace(-1.0, 1.0, 40) * scale
    A = (
        torch.from_numpy(with_spectrum(evals, 7))
        if scale
        else torch.zeros(40, 40, dtype=torch.float64)
    )
    res = lanczos(Dense(A), max_hvps=40, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(res.lam) and math.isfinite(res.lam_max)
    if scale == 0:
        assert not res.found and res.lam == 0.0
    else:
        assert res.found and res.lam == pytest.approx(-scale, rel=1e-6)
        assert torch.isfinite(res.direction).all()


def test_lanczos_float32_operator():
    A = wishart_minus_shift(100, 8, shift=1.0)
    res = lanczos(Dense(torch.from_numpy(A).float()), max_hvps=100)
    assert res.direction.dtype == torch.float32
    assert res.lam == pytest.approx(np.linalg.eigvalsh(A)[0], rel=1e-4)


def test_lanczos_reproducible_from_generator_state():
    A = torch.from_numpy(wishart_minus_shift(120, 9, shift=1.0))
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    r1 = lanczos(Dense(A), max_hvps=10, generator=g)
    g.set_state(state)
    r2 = lanczos(Dense(A), max_hvps=10, generator=g)
    r3 = lanczos(Dense(A), max_hvps=10, generator=torch.Generator().manual_seed(123))
    r4 = lanczos(Dense(A), max_hvps=10, generator=torch.Generator().manual_seed(124))
    assert torch.equal(r1.direction, r2.direction) and torch.equal(r1.direction, r3.direction)
    assert not torch.equal(r1.direction, r4.direction)


# --------------------------------------------------------------------------------------------
# the loss Hessian of a tiny conv net
# --------------------------------------------------------------------------------------------


def conv_problem(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).double()
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 5, (16,))
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]

    def f(theta):
        ps = dict(zip(names, unflatten_like(theta, params), strict=True))
        return F.cross_entropy(torch.func.functional_call(net, ps, (x,)), y)

    H = torch.func.hessian(f)(flatten([p.detach() for p in params]))
    return net, params, (lambda: F.cross_entropy(net(x), y)), H


def test_tiny_conv_lambda_min_within_5_percent_in_30_hvps():
    net, params, closure, H = conv_problem()
    evals = np.linalg.eigvalsh(H.numpy())
    lam_min, lam_max = evals[0], evals[-1]
    assert lam_min < 0
    op = HessianOperator(closure, params)
    res = lanczos(op, max_hvps=30, generator=torch.Generator().manual_seed(0))
    assert res.found and res.hvps <= 30 and op.n_products == res.hvps
    assert abs(res.lam - lam_min) <= 0.05 * abs(lam_min)
    assert float(res.direction @ H @ res.direction) == pytest.approx(res.lam, rel=1e-8)

    x0 = [p.detach().clone() for p in params]
    nres = neon2(
        closure,
        params,
        max_grads=30,
        eta=1.0 / lam_max,
        sigma=1e-4,
        generator=torch.Generator().manual_seed(0),
    )
    assert all(torch.equal(p, q) for p, q in zip(params, x0, strict=True))  # exactly restored
    sres = vr_power(lambda n: closure, params, generator=torch.Generator().manual_seed(0))
    s30 = vr_power(
        lambda n: closure, params, outer=1, inner=10, generator=torch.Generator().manual_seed(0)
    )

    def rq(d):
        return float(d @ H @ d)

    print(
        f"\ntiny conv net (dim {H.shape[0]}): eigvalsh lam_min={lam_min:.5f} lam_max={lam_max:.4f}\n"
        f"  lanczos    hvps={res.hvps:2d} lam={res.lam:.5f} rel.err={abs(res.lam / lam_min - 1):.2e}\n"
        f"  neon2      hvps={nres.hvps:2d} lam={nres.lam:.5f} rel.err={abs(nres.lam / lam_min - 1):.2e}"
        f" found={nres.found}\n"
        f"  vr_power hvps={s30.hvps:2d} est={s30.lam:.5f} v'Hv={rq(s30.candidate):.5f} (E=1, m=10)"
        f" found={s30.found}\n"
        f"  vr_power hvps={sres.hvps:2d} est={sres.lam:.5f} v'Hv={rq(sres.candidate):.5f}"
        f" (report defaults) found={sres.found}"
    )
    assert s30.hvps == 30
    assert nres.hvps <= 30 and math.isfinite(nres.lam)
    assert sres.hvps == 48 and math.isfinite(sres.lam)


def test_neon2_finds_negative_curvature_and_restores_params():
    net, params, closure, H = conv_problem(1)
    evals = np.linalg.eigvalsh(H.numpy())
    x0 = [p.detach().clone() for p in params]
    res = neon2(
        closure,
        params,
        max_grads=200,
        eta=1.0 / evals[-1],
        sigma=1e-9,
        radius=1e-3,
        generator=torch.Generator().manual_seed(0),
    )
    assert all(torch.equal(p, q) for p, q in zip(params, x0, strict=True))
    assert res.found and res.hvps <= 200
    # the returned lam is the exact Rayleigh quotient of the direction (one HVP)
    assert float(res.direction @ H @ res.direction) == pytest.approx(res.lam, rel=1e-8)
    assert res.lam < 0.5 * evals[0]
    fd = neon2(
        closure,
        params,
        max_grads=200,
        eta=1.0 / evals[-1],
        sigma=1e-9,
        radius=1e-3,
        rayleigh="fd",
        generator=torch.Generator().manual_seed(0),
    )
    assert fd.lam == pytest.approx(float(fd.direction @ H @ fd.direction), rel=1e-3)
    with pytest.raises(TypeError):
        neon2(closure, params, max_grads=10, bogus=1)  # no catch-all keyword


def test_vr_power_hvp_accounting_and_its_quirk():
    """48 HVPs on 16 fresh batches of 8; iteration 1.5y − 0.1Hy converges to the *top*
    eigenvector when λ_max + λ_min > 30."""
    dim = 60
    evals = np.concatenate([[-1.0], np.linspace(0.5, 2.0, dim - 2), [40.0]])
    A = torch.from_numpy(with_spectrum(evals, 11))
    p = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    sizes = []

    def probe(n):
        sizes.append(n)
        return lambda: 0.5 * p @ (A @ p)

    res = vr_power(probe, [p], outer=6, generator=torch.Generator().manual_seed(0))
    assert res.hvps == 6 * 24 and sizes == [8] * (6 * 16)
    assert not res.found and res.lam > 20  # it found λ_max = 40, not λ_min = −1
    res2 = vr_power(probe, [p], generator=torch.Generator().manual_seed(0))
    assert res2.hvps == 48
    # with a small spectrum, the iteration does converge to λ_min (|1.5 − 0.1λ| largest at λ_min)
    B = torch.from_numpy(
        with_spectrum(np.concatenate([[-8.0], np.linspace(0.5, 2.0, dim - 1)]), 12)
    )
    q = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    res3 = vr_power(
        lambda n: lambda: 0.5 * q @ (B @ q),
        [q],
        outer=8,
        generator=torch.Generator().manual_seed(0),
    )
    assert res3.found and res3.lam < -4


def test_vr_power_with_one_hessian_is_the_power_iteration_on_its_closed_form():
    """With every batch's Hessian the same A the variance-reduced terms cancel, so each update is
    y ← (1+η)y − (η/λ)Ay, normalised (a numpy reference, float64); ``est`` averages yᵀAy over the
    last round's iterates before their update."""
    dim, outer, inner, step, lam = 30, 2, 8, 0.5, 5.0
    A = with_spectrum(np.linspace(-3.0, 3.0, dim), 21)
    p = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    At = torch.from_numpy(A)
    res = vr_power(
        lambda n: lambda: 0.5 * p @ (At @ p), [p], generator=torch.Generator().manual_seed(3)
    )
    y = torch.randn(dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64).numpy()
    y, quotients = y / np.linalg.norm(y), []
    for _ in range(outer * inner):
        quotients.append(y @ A @ y)
        y = (1 + step) * y - (step / lam) * (A @ y)
        y /= np.linalg.norm(y)
    assert np.allclose(res.candidate.numpy(), y, rtol=0, atol=1e-12)
    assert res.lam == pytest.approx(np.mean(quotients[-inner:]), rel=1e-12)
    assert (res.hvps, res.grads, res.iters) == (3 * inner * outer, 2 * inner * outer, outer * inner)


def test_vr_power_stops_at_an_iterate_it_cannot_normalise():
    """A NaN Hessian: the first update of round one cannot be normalised; the counts stop there
    (the m snapshot products, then 2 HVPs on one more batch)."""
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    res = vr_power(lambda n: lambda: float("nan") * (p @ p), [p], outer=2, inner=3)
    assert not res.found and math.isnan(res.lam) and res.candidate is None
    assert (res.hvps, res.grads, res.iters) == (3 + 2, 3 + 1, 0)


def test_searches_reproducible_from_generator():
    net, params, closure, _ = conv_problem(2)
    for search in (
        lambda g: neon2(closure, params, max_grads=10, generator=g),
        lambda g: vr_power(lambda n: closure, params, outer=1, inner=2, generator=g, eps_h=-1e9),
    ):
        g = torch.Generator().manual_seed(7)
        state = g.get_state()
        a = search(g)
        g.set_state(state)
        b = search(g)
        if a.direction is None:
            assert b.direction is None and a.lam == b.lam
        else:
            assert torch.equal(a.direction, b.direction)


def test_lanczos_history_matches_smaller_budgets():
    A = torch.from_numpy(wishart_minus_shift(150, 13, shift=1.0))
    full = lanczos(Dense(A), max_hvps=25, generator=torch.Generator().manual_seed(5), record=True)
    assert len(full.history) == 25 and full.history[-1] == pytest.approx(full.lam, rel=1e-12)
    assert all(a >= b - 1e-12 for a, b in zip(full.history, full.history[1:], strict=False))
    for k in (3, 10):
        part = lanczos(Dense(A), max_hvps=k, generator=torch.Generator().manual_seed(5))
        assert part.lam == pytest.approx(full.history[k - 1], rel=1e-10)


def test_candidate_is_returned_when_none_found():
    A = wishart_minus_shift(80, 14, shift=-0.05)  # positive definite
    res = lanczos(Dense(torch.from_numpy(A)), max_hvps=80)
    assert not res.found and res.candidate is not None
    c = res.candidate.numpy()
    assert c @ A @ c == pytest.approx(res.lam, rel=1e-8)


def test_searches_with_frozen_parameters():
    net, params, closure, _ = conv_problem(3)
    params[0].requires_grad_(False)  # conv weight frozen: a constant, zero curvature block
    frozen = params[0].detach().clone()
    n0 = params[0].numel()
    res = lanczos(HessianOperator(closure, params), max_hvps=30)
    assert res.found and math.isfinite(res.lam)
    nres = neon2(closure, params, max_grads=10, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(nres.lam) and torch.all(nres.candidate[:n0] == 0)
    sres = vr_power(lambda n: closure, params, outer=1, inner=2)
    assert math.isfinite(sres.lam)
    assert torch.equal(params[0], frozen)


@pytest.mark.parametrize(("rayleigh", "hvps"), [("hvp", 1), ("fd", 0)])
def test_neon2_counts_gradients_as_gradients(rayleigh: str, hvps: int):
    """Neon2 is first-order: its walk's gradients are ``grads``; only the ``rayleigh="hvp"``
    estimate is an HVP; a walk that never reaches the radius spends the whole budget."""
    _, params, closure, _ = conv_problem(3)
    res = neon2(
        closure,
        params,
        max_grads=10,
        rayleigh=rayleigh,
        radius=1e9,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.hvps == hvps and res.iters == 10 - 1 - (hvps + 1)
    assert res.grads + res.hvps == 10  # g₀, the walk, the estimate's gradient (+ its HVP)
