"""Hessian-vector products against torch.func.hessian (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from accelopt.curvature import HessianOperator, flat_grad, flatten, unflatten_like

METHODS = ["double_backward", "forward_over_reverse"]


def tiny_conv(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 4),
    ).double()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    return net, x, y


def mlp(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 7), nn.Softplus(), nn.Linear(7, 3)).double()
    x = torch.randn(10, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    return net, x, y


def dense_hessian(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    names = [n for n, _ in net.named_parameters()]
    params = list(net.parameters())

    def f(theta: torch.Tensor) -> torch.Tensor:
        ps = dict(zip(names, unflatten_like(theta, params), strict=True))
        return F.cross_entropy(torch.func.functional_call(net, ps, (x,)), y)

    return torch.func.hessian(f)(flatten([p.detach() for p in params]))


@pytest.mark.parametrize("make", [tiny_conv, mlp], ids=["conv", "mlp"])
@pytest.mark.parametrize("method", METHODS)
def test_hvp_matches_dense_hessian(make, method):
    net, x, y = make()
    params = list(net.parameters())
    H = dense_hessian(net, x, y)
    op = HessianOperator(lambda: F.cross_entropy(net(x), y), params, method=method, module=net)
    assert op.dim == H.shape[0]
    assert op.dtype == torch.float64
    g = torch.Generator().manual_seed(1)
    for k in range(3):
        v = torch.randn(op.dim, generator=g, dtype=torch.float64)
        hv = op.matvec(v)
        assert not hv.requires_grad
        torch.testing.assert_close(hv, H @ v, rtol=0, atol=1e-10)
        torch.testing.assert_close(op @ v, H @ v, rtol=0, atol=1e-10)
        assert op.n_products == 2 * (k + 1)
    # loss and gradient at the point of construction
    loss, grad = flat_grad(lambda: F.cross_entropy(net(x), y), params)
    torch.testing.assert_close(op.loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(op.grad, grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [tiny_conv, mlp], ids=["conv", "mlp"])
def test_both_paths_agree(make):
    net, x, y = make(3)
    params = list(net.parameters())

    def clo():
        return F.cross_entropy(net(x), y)

    a = HessianOperator(clo, params)
    b = HessianOperator(clo, params, method="forward_over_reverse", module=net)
    v = torch.randn(a.dim, dtype=torch.float64)
    torch.testing.assert_close(a.matvec(v), b.matvec(v), rtol=0, atol=1e-10)


def test_reduce_applied_to_gradient_and_products():
    net, x, y = mlp()
    params = list(net.parameters())
    calls = []

    def reduce(t):
        calls.append(t.shape)
        return 3.0 * t

    plain = HessianOperator(lambda: F.cross_entropy(net(x), y), params)
    red = HessianOperator(lambda: F.cross_entropy(net(x), y), params, reduce=reduce)
    v = torch.randn(plain.dim, dtype=torch.float64)
    torch.testing.assert_close(red.grad, 3.0 * plain.grad)
    torch.testing.assert_close(red.matvec(v), 3.0 * plain.matvec(v))
    assert len(calls) == 2
    _, g = flat_grad(lambda: F.cross_entropy(net(x), y), params, reduce=reduce)
    torch.testing.assert_close(g, red.grad)


@pytest.mark.parametrize("method", METHODS)
def test_frozen_parameters_are_constants(method):
    net, x, y = mlp()
    params = list(net.parameters())
    H = dense_hessian(net, x, y)
    params[0].requires_grad_(False)  # first weight matrix frozen
    n0 = params[0].numel()
    op = HessianOperator(lambda: F.cross_entropy(net(x), y), params, method=method, module=net)
    v = torch.randn(op.dim, dtype=torch.float64)
    hv = op.matvec(v)
    assert torch.all(hv[:n0] == 0) and torch.all(op.grad[:n0] == 0)
    expected = H[n0:, n0:] @ v[n0:]
    torch.testing.assert_close(hv[n0:], expected, rtol=0, atol=1e-10)


def test_all_frozen_and_constant_and_linear_losses_give_zeros():
    w = torch.randn(4, dtype=torch.float64)  # no requires_grad
    op = HessianOperator(lambda: (w**2).sum(), [w])
    assert torch.all(op.grad == 0) and torch.all(op.matvec(torch.ones(4, dtype=torch.float64)) == 0)

    p = torch.randn(4, dtype=torch.float64, requires_grad=True)
    const = HessianOperator(lambda: torch.tensor(2.0, dtype=torch.float64), [p])
    assert torch.all(const.grad == 0)
    assert torch.all(const.matvec(torch.ones(4, dtype=torch.float64)) == 0)

    lin = HessianOperator(lambda: (3.0 * p).sum(), [p])
    torch.testing.assert_close(lin.grad, torch.full((4,), 3.0, dtype=torch.float64))
    hv = lin.matvec(torch.ones(4, dtype=torch.float64))
    assert torch.all(hv == 0) and torch.isfinite(hv).all()

    # zero gradient, zero Hessian: f = x^3 at 0
    q = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    cub = HessianOperator(lambda: (q**3).sum(), [q])
    assert torch.all(cub.grad == 0)
    assert torch.all(cub.matvec(torch.ones(3, dtype=torch.float64)) == 0)


def test_graph_is_reused_not_rebuilt():
    net, x, y = mlp()
    calls = 0

    def clo():
        nonlocal calls
        calls += 1
        return F.cross_entropy(net(x), y)

    op = HessianOperator(clo, list(net.parameters()))
    for _ in range(5):
        op.matvec(torch.randn(op.dim, dtype=torch.float64))
    assert calls == 1 and op.n_products == 5
    assert all(p.grad is None for p in net.parameters())  # never leaves graphs in .grad


def test_forward_over_reverse_needs_module():
    net, x, y = mlp()
    with pytest.raises(ValueError, match="module"):
        HessianOperator(
            lambda: F.cross_entropy(net(x), y),
            list(net.parameters()),
            method="forward_over_reverse",
        )
    other = nn.Linear(2, 2).double()
    with pytest.raises(ValueError, match="not parameters"):
        HessianOperator(
            lambda: F.cross_entropy(net(x), y),
            list(net.parameters()),
            method="forward_over_reverse",
            module=other,
        )


def test_flatten_roundtrip_and_shape_check():
    ts = [torch.randn(2, 3), torch.randn(4), torch.randn(1, 1, 2)]
    flat = flatten(ts)
    assert flat.shape == (12,)
    back = unflatten_like(flat, ts)
    for a, b in zip(ts, back, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        unflatten_like(torch.zeros(11), ts)


def test_float32_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    op = HessianOperator(lambda: F.cross_entropy(net(x), y), list(net.parameters()))
    v64 = torch.randn(op.dim, dtype=torch.float64)
    hv = op.matvec(v64)  # cast to the parameters' dtype
    assert hv.dtype == torch.float32 and torch.isfinite(hv).all()


@pytest.mark.parametrize("method", METHODS)
def test_works_inside_no_grad(method):
    """Optimizers run ``step`` under ``torch.no_grad()``; products must still be exact."""
    net, x, y = mlp(4)
    params = list(net.parameters())
    H = dense_hessian(net, x, y)
    v = torch.randn(H.shape[0], dtype=torch.float64)
    with torch.no_grad():
        op = HessianOperator(lambda: F.cross_entropy(net(x), y), params, method=method, module=net)
        hv = op.matvec(v)
        _, g = flat_grad(lambda: F.cross_entropy(net(x), y), params)
    torch.testing.assert_close(hv, H @ v, rtol=0, atol=1e-10)
    assert float(g.norm()) > 0
