"""Each HVP method inside the NC optimizer: the search's λ against a dense float64 Hessian."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from accelopt.optim import (
    GOSE,
    Always,
    CarmonStep,
    FixedStep,
    Lanczos,
    NCEscape,
    Schedule,
    VRPower,
)

DT = torch.float64
METHODS = ["double_backward", "forward_over_reverse"]


def problem() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, generator=g, dtype=DT)
    y = torch.randint(0, 2, (20,), generator=g)
    return net, x, y


def dense_lambda_min(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """Smallest eigenvalue of the full-batch loss Hessian, dense, float64."""
    params = list(net.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def loss_of(v: Tensor) -> Tensor:
        chunks, i = {}, 0
        for name, p in net.named_parameters():
            chunks[name] = v[i : i + p.numel()].view_as(p)
            i += p.numel()
        out = torch.func.functional_call(net, chunks, (x,))
        return nn.functional.cross_entropy(out, y)

    hess = torch.autograd.functional.hessian(loss_of, flat)
    return float(torch.linalg.eigvalsh(hess)[0])


def one_phase(opt: NCEscape, net: nn.Module, x: Tensor, y: Tensor) -> None:
    closure = lambda: nn.functional.cross_entropy(net(x), y)  # noqa: E731
    opt.step(closure, probe=lambda n: closure, batch_idx=0)  # the full batch is every probe


@pytest.mark.parametrize("method", METHODS)
def test_lanczos_in_the_optimizer_finds_the_dense_lambda_min(method: str) -> None:
    net, x, y = problem()
    expected = dense_lambda_min(net, x, y)
    dim = sum(p.numel() for p in net.parameters())
    opt = NCEscape(
        net.parameters(),
        lr=1e-3,
        check=Always(),
        search=Lanczos(search_batch=20, max_hvps=dim, eps_h=0.0, hvp_method=method),
        step=CarmonStep(),
        schedule=Schedule(every=1, timing="before"),
        module=net,
    )
    one_phase(opt, net, x, y)
    assert opt.counters["searches"] == 1 and opt.counters["hvps"] == dim
    assert opt.counters["lambda_min"] == pytest.approx(expected, abs=1e-9)
    assert expected < 0  # the test means something: there is negative curvature to find


def test_vr_power_gives_the_same_search_with_either_method() -> None:
    lams = []
    for method in METHODS:
        net, x, y = problem()
        opt = NCEscape(
            net.parameters(),
            lr=1e-3,
            check=Always(),
            search=VRPower(hvp_method=method),
            step=FixedStep(sign_batch=20),
            schedule=Schedule(every=1, timing="before"),
            module=net,
            seed=4,
        )
        one_phase(opt, net, x, y)
        assert opt.counters["hvps"] == 48
        lams.append(opt.counters["lambda_min"])
    assert lams[0] == pytest.approx(lams[1], rel=1e-9, abs=1e-12)


def test_forward_over_reverse_without_the_model_is_a_clear_error() -> None:
    net, x, y = problem()
    opt = GOSE(net.parameters(), every=1, check="always", hvp_method="forward_over_reverse")
    with pytest.raises(ValueError, match="forward_over_reverse.*module="):
        one_phase(opt, net, x, y)
    opt.module = net  # settable after construction, as the Lightning module does
    one_phase(opt, net, x, y)
    assert opt.counters["searches"] == 1
