"""Closed-form saddles: search + NC step (float64), and the NC step rules."""

from __future__ import annotations

import math

import pytest
import torch

from accelopt.curvature import (
    HessianOperator,
    lanczos,
    neon2,
    orient,
    step_length,
    take_nc_step,
)

from .test_curvature_search import vr_power  # with the report's values unless given

f64 = torch.float64


def point(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=f64, requires_grad=True)


def escape_loop(p, f, *, eps_h=0.1, L2=None, lr=0.1, iters=400):
    """Minimal NC-escape optimizer: an NC step when a search finds curvature ≤ −eps_h/2,
    a gradient step otherwise. Returns (#NC steps taken, first search result)."""
    nc_steps, first = 0, None

    def closure():
        return f(p)

    for _ in range(iters):
        op = HessianOperator(closure, [p])
        res = lanczos(
            op, max_hvps=p.numel(), eps_h=eps_h, generator=torch.Generator().manual_seed(0)
        )
        first = first or res
        if res.found:
            alpha = step_length(res.lam, rule="carmon" if L2 else "fixed", L2=L2, length=0.5)
            out = take_nc_step(
                [p], res.direction, alpha, grad=op.grad, closure=closure, accept=True
            )
            assert out.slope <= 0
            nc_steps += out.accepted
        else:
            with torch.no_grad():
                p -= lr * op.grad
    return nc_steps, first


def test_quartic_saddle():
    """f = ½x² − ½y² + ¼y⁴ at 0: direction ±e_y, λ = −1; NC steps + GD reach f = −¼."""

    def f(p):
        x, y = p[0], p[1]
        return 0.5 * x**2 - 0.5 * y**2 + 0.25 * y**4

    p = point(0.0, 0.0)
    res = lanczos(HessianOperator(lambda: f(p), [p]), max_hvps=2)
    assert res.found and res.lam == pytest.approx(-1.0, abs=1e-12)
    assert abs(float(res.direction[1])) == pytest.approx(1.0, abs=1e-12)
    # NC steps with the Carmon length 2|λ|/L₂ (L₂ = sup|f'''| = 6 on |y| ≤ 1), then GD
    nc, _ = escape_loop(p, f, L2=6.0)
    assert nc >= 1
    assert float(f(p).detach()) == pytest.approx(-0.25, abs=1e-10)
    assert (
        abs(float(p.detach()[1])) == pytest.approx(1.0, abs=1e-5)
        and abs(float(p.detach()[0])) < 1e-5
    )
    # the first-order search also finds it (zero gradient at the saddle)
    q = point(0.0, 0.0)
    nres = neon2(
        lambda: f(q),
        [q],
        max_grads=30,
        eta=0.5,
        sigma=1e-6,
        radius=1e-3,
        generator=torch.Generator().manual_seed(0),
    )
    assert nres.found and nres.lam == pytest.approx(-1.0, abs=1e-3)
    assert torch.equal(q.detach(), torch.zeros(2, dtype=f64))


def test_product_saddle_symmetric_spectrum():
    """f = ½(ab − 1)² at 0: H = [[0, −1], [−1, 0]], eigenvalues ±1; must return (1,1)/√2."""

    def f(p):
        return 0.5 * (p[0] * p[1] - 1) ** 2

    p = point(0.0, 0.0)
    op = HessianOperator(lambda: f(p), [p])
    res = lanczos(op, max_hvps=30, generator=torch.Generator().manual_seed(1))
    assert res.found and res.hvps == 2
    assert res.lam == pytest.approx(-1.0, abs=1e-12)
    e = torch.tensor([1.0, 1.0], dtype=f64) / math.sqrt(2)
    assert abs(float(res.direction @ e)) == pytest.approx(1.0, abs=1e-12)
    # a plain power iteration on H cannot tell ±1 apart: its Rayleigh quotient never moves
    v = torch.tensor([0.8, 0.6], dtype=f64)
    rq0 = float(v @ op.matvec(v))
    for _ in range(50):
        v = op.matvec(v)
        v = v / v.norm()
    assert float(v @ op.matvec(v)) == pytest.approx(rq0, abs=1e-12) and rq0 > -0.99
    # escape: NC step, then GD to the valley ab = 1
    escape_loop(p, f)
    assert float(f(p).detach()) < 1e-10


def test_matrix_factorisation_saddle():
    """f = ¼‖xxᵀ − M‖², M = diag(3,2,1), at √2·e₂: λ_min = −1 along e₁; escape to ±√3·e₁."""
    M = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=f64))

    def f(p):
        return 0.25 * ((torch.outer(p, p) - M) ** 2).sum()

    p = point(0.0, math.sqrt(2), 0.0)
    op = HessianOperator(lambda: f(p), [p])
    assert float(op.grad.norm()) < 1e-12
    res = lanczos(op, max_hvps=3, generator=torch.Generator().manual_seed(0))
    assert res.found and res.lam == pytest.approx(-1.0, abs=1e-12)
    assert abs(float(res.direction[0])) == pytest.approx(1.0, abs=1e-12)
    nc, _ = escape_loop(p, f)
    assert nc >= 1
    assert abs(float(p.detach()[0])) == pytest.approx(math.sqrt(3), abs=1e-6)
    assert float(p.detach()[1:].abs().max()) < 1e-6
    assert float(f(p).detach()) == pytest.approx(1.25, abs=1e-10)


def test_monkey_saddle_zero_hessian():
    """x³ − 3xy² at 0: H = 0, zero gradient: "none found", no NaN, nothing moves."""

    def f(p):
        return p[0] ** 3 - 3 * p[0] * p[1] ** 2

    p = point(0.0, 0.0)
    res = lanczos(HessianOperator(lambda: f(p), [p]), max_hvps=30)
    assert not res.found and res.lam == 0.0 and not math.isnan(res.lam_max)
    nres = neon2(lambda: f(p), [p], max_grads=10, generator=torch.Generator().manual_seed(0))
    assert not nres.found and nres.lam == 0.0
    sres = vr_power(lambda n: lambda: f(p), [p], generator=torch.Generator().manual_seed(0))
    assert not sres.found and sres.lam == 0.0 and sres.hvps == 48
    assert torch.equal(p.detach(), torch.zeros(2, dtype=f64))


def rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def test_rosenbrock_nc_step_lowers_f():
    """Rosenbrock at (0,1): H = diag(−398, 200); the NC step along e_x lowers f."""
    p = point(0.0, 1.0)
    op = HessianOperator(lambda: rosenbrock(p), [p])
    res = lanczos(op, max_hvps=2)
    assert res.found and res.lam == pytest.approx(-398.0, rel=1e-12)
    assert abs(float(res.direction[0])) == pytest.approx(1.0, abs=1e-12)
    f0 = float(rosenbrock(p).detach())
    out = take_nc_step(
        [p], res.direction, 0.5, grad=op.grad, closure=lambda: rosenbrock(p), accept=True
    )
    assert out.accepted and out.slope == pytest.approx(-2.0)  # g = (−2, 200): d = +e_x
    assert out.loss_before == pytest.approx(f0) and out.loss_after < f0
    assert float(p.detach()[0]) == pytest.approx(0.5) and float(p.detach()[1]) == 1.0
    assert float(rosenbrock(p).detach()) == pytest.approx(56.5)


def test_rejected_step_restores_params_exactly():
    p = point(0.0, 1.0)
    op = HessianOperator(lambda: rosenbrock(p), [p])
    res = lanczos(op, max_hvps=2)
    before = p.detach().clone()
    out = take_nc_step(
        [p], res.direction, 3.0, grad=op.grad, closure=lambda: rosenbrock(p), accept=True
    )
    assert not out.accepted and out.loss_after > out.loss_before
    assert torch.equal(p.detach(), before)
    with pytest.raises(ValueError):
        take_nc_step([p], res.direction, 0.5, accept=True)


def test_step_rules():
    assert step_length(-2.0) == 0.5
    assert step_length(-2.0, rule="carmon", L2=8.0) == pytest.approx(0.5)
    assert step_length(-2.0, rule="carmon", L2=1.0, max_length=1.0) == 1.0
    assert step_length(math.nan, rule="carmon", L2=1.0) == 0.0
    with pytest.raises(ValueError):
        step_length(-1.0, rule="carmon")
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v, grad = torch.randn(5, generator=g, dtype=f64), torch.randn(5, generator=g, dtype=f64)
        d, s = orient(v, grad)
        assert float(d @ grad) <= 0 and torch.equal(d, s * v)
    d, s = orient(v, torch.zeros(5, dtype=f64))
    assert s == 1.0 and torch.equal(d, v)
    # without acceptance the step is applied as is; zero length is a no-op
    p = point(1.0, 2.0)
    out = take_nc_step([p], torch.tensor([0.0, 1.0], dtype=f64), 0.25)
    assert out.accepted and torch.equal(p.detach(), torch.tensor([1.0, 2.25], dtype=f64))
    out0 = take_nc_step([p], torch.tensor([0.0, 1.0], dtype=f64), 0.0)
    assert not out0.accepted and torch.equal(p.detach(), torch.tensor([1.0, 2.25], dtype=f64))


def test_searches_and_step_under_no_grad():
    """An optimizer's ``step`` runs under ``torch.no_grad()``."""
    p = point(0.0, 1.0)
    with torch.no_grad():
        op = HessianOperator(lambda: rosenbrock(p), [p])
        res = lanczos(op, max_hvps=2)
        nres = neon2(
            lambda: rosenbrock(p),
            [p],
            max_grads=10,
            eta=1e-3,
            generator=torch.Generator().manual_seed(0),
        )
        sres = vr_power(
            lambda n: lambda: rosenbrock(p), [p], generator=torch.Generator().manual_seed(0)
        )
        out = take_nc_step(
            [p], res.direction, 0.5, grad=op.grad, closure=lambda: rosenbrock(p), accept=True
        )
    assert res.lam == pytest.approx(-398.0) and out.accepted
    assert math.isfinite(nres.lam) and math.isfinite(sres.lam)
