"""NC steps judged on fresh data: verification before the step, the held-out record after it.

Two data sources with known Hessians: the search batch (size ``SEARCH``) comes from source A,
every other probe batch from the population P = (A + B)/2. A quadratic f_X(θ) = ½θᵀH_Xθ + b_Xᵀθ
per source, so every curvature and loss change has a closed form, checked against dense float64
Hessians (``torch.autograd.functional.hessian``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from accelopt.optim import GOSE, CarmonStep, FixedStep, Lanczos, NCEscape, Schedule
from accelopt.optim.judge import verify

DT = torch.float64
D, SEARCH, VERIFY, SIGN, ACCEPT, HELDOUT = 6, 5, 16, 8, 9, 32


def rotation() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=DT))
    return q


Q = rotation()
REST = [1.0, 2.0, 3.0, 4.0, 5.0]


def hess(first: float) -> torch.Tensor:
    return Q @ torch.diag(torch.tensor([first, *REST], dtype=DT)) @ Q.T


def problem(a_first: float, b_first: float, **schedule_knobs):
    """θ, the optimizer and the probe; H_A has ``a_first`` along Q e₁, H_B ``b_first``."""
    h = {"A": hess(a_first), "B": hess(b_first)}
    h["P"] = (h["A"] + h["B"]) / 2
    b = {"A": 0.1 * Q[:, 1], "B": 0.3 * Q[:, 2]}
    b["P"] = (b["A"] + b["B"]) / 2
    theta = (0.05 * Q[:, 0] + 0.02 * Q[:, 3]).clone().requires_grad_(True)
    calls: list[int] = []

    def f(src: str, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x @ h[src] @ x + b[src] @ x

    def probe(n: int):
        calls.append(n)
        src = "A" if n == SEARCH else "P"
        return lambda: f(src, theta)

    opt = NCEscape(
        [theta],
        lr=0.1,
        base="sgd",
        check="always",
        search=Lanczos(search_batch=SEARCH, max_hvps=D, eps_h=0.2),
        step=CarmonStep(max_length=0.5, **schedule_knobs.pop("step", {})),
        schedule=Schedule(every=1, **schedule_knobs),
    )
    return theta, opt, probe, calls, h, f


def dense_curvature(f, src: str, at: torch.Tensor, v: torch.Tensor) -> float:
    hd = torch.autograd.functional.hessian(lambda x: f(src, x), at.detach().clone())
    u = v / v.norm()
    return float(u @ hd @ u)


def test_a_search_batch_only_direction_is_refused_by_verification() -> None:
    # H_A has −1 along Q e₁, H_B +3: the population's curvature there is +1
    theta, opt, probe, calls, h, f = problem(-1.0, 3.0, verify_batch=VERIFY)
    before = theta.detach().clone()
    opt.phase.run(opt, probe)
    c = opt.counters
    assert c["searches"] == 1 and c["lambda_min"] <= -0.1  # found on the search batch
    assert c["unverified"] == 1 and c["steps"] == 0 and opt.nc_log == []
    assert torch.equal(theta.detach(), before)  # no step
    assert calls == [SEARCH, VERIFY]  # nothing drawn after the refusal
    ok, curvature = verify(opt, probe(VERIFY), opt.direction, 0.2)  # type: ignore[arg-type]
    assert not ok
    assert curvature == pytest.approx(dense_curvature(f, "P", theta, opt.direction), abs=1e-10)
    assert curvature > 0  # H_P = H_A + 2·e₁e₁ᵀ in the Q basis: vᵀH_Pv ≥ λ + 2c₁² > 0


def test_without_verification_the_search_batch_accepts_it_and_the_heldout_record_shows_it() -> None:
    # the old behaviour: sign and acceptance on the search batch, where the curvature is −1
    theta, opt, probe, calls, h, f = problem(-1.0, 3.0, heldout_batch=HELDOUT)
    theta0 = theta.detach().clone()
    opt.phase.run(opt, probe)
    assert opt.counters["steps"] == 1 and opt.counters["unverified"] == 0
    (entry,) = opt.nc_log
    assert entry["search_loss_change"] < 0  # the search batch's loss fell ...
    v = theta.detach() - theta0
    assert entry["heldout_curvature"] == pytest.approx(
        dense_curvature(f, "P", theta0, v), abs=1e-10
    )
    assert entry["heldout_curvature"] > 0  # ... on positive population curvature
    change = float(f("P", theta.detach()) - f("P", theta0))
    assert entry["heldout_loss_change"] == pytest.approx(change, abs=1e-12)
    assert entry["alpha"] == pytest.approx(float(v.norm()), abs=1e-12)
    assert calls == [SEARCH, HELDOUT]


def test_a_real_direction_is_verified_and_taken_on_independent_batches() -> None:
    # H_A: −1, H_B: −0.9 along Q e₁: the population has −0.95 there, H_P = H_A + 0.05·e₁e₁ᵀ
    theta, opt, probe, calls, h, f = problem(
        -1.0,
        -0.9,
        verify_batch=VERIFY,
        heldout_batch=HELDOUT,
        step={"sign_batch": SIGN, "accept_batch": ACCEPT},
    )
    theta0 = theta.detach().clone()
    opt.phase.run(opt, probe)
    c = opt.counters
    assert c["steps"] == 1 and c["unverified"] == 0
    assert calls == [SEARCH, VERIFY, SIGN, ACCEPT, HELDOUT]  # five independent batches
    (entry,) = opt.nc_log
    d = theta.detach() - theta0
    assert entry["verify_curvature"] == pytest.approx(dense_curvature(f, "P", theta0, d), abs=1e-10)
    assert entry["verify_curvature"] < -0.1  # below −ε_H/2 on the population
    lam = entry["lambda"]
    assert lam <= entry["verify_curvature"] <= lam + 0.05  # vᵀH_Pv = λ + 0.05c₁²
    assert entry["heldout_curvature"] == pytest.approx(entry["verify_curvature"], abs=1e-12)
    g_pop = h["P"] @ theta0 + 0.5 * (0.1 * Q[:, 1] + 0.3 * Q[:, 2])
    assert float(d @ g_pop) <= 0  # the sign: a descent direction of the population
    change = float(f("P", theta.detach()) - f("P", theta0))
    assert entry["heldout_loss_change"] == pytest.approx(change, abs=1e-12) and change < 0
    assert c["heldout_steps"] == 1 and c["heldout_down"] == 1
    assert c["heldout_curvature"] == entry["heldout_curvature"]
    assert c["heldout_loss_change"] == entry["heldout_loss_change"]


def test_verification_draws_fresh_sign_and_acceptance_batches_by_default() -> None:
    theta, opt, probe, calls, *_ = problem(-1.0, -0.9, verify_batch=VERIFY)
    opt.phase.run(opt, probe)
    # search, verify, sign (search batch's size, fresh), acceptance (fresh): 4 distinct draws
    assert calls == [SEARCH, VERIFY, SEARCH, SEARCH]


def test_the_judgements_cost_is_counted() -> None:
    knobs = {"step": {"sign_batch": SIGN, "accept_batch": ACCEPT}}
    _, plain, probe, *_ = problem(-1.0, -0.9, **knobs)
    plain.phase.run(plain, probe)
    _, judged, probe2, *_ = problem(-1.0, -0.9, verify_batch=VERIFY, heldout_batch=HELDOUT, **knobs)
    judged.phase.run(judged, probe2)
    a, b = plain.counters, judged.counters
    assert a["steps"] == b["steps"] == 1
    assert b["grads"] - a["grads"] == 2 and b["hvps"] - a["hvps"] == 2  # verify + held-out
    assert math.isnan(a["heldout_curvature"]) and a["heldout_steps"] == 0


# ---------------------------------------------------------------- on a small net, over a run
def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.1)
    return net


def _train(heldout: int | None, steps: int = 30):
    """GOSE (improved, every 5) on synthetic data; held-out batches (size 37) come from their
    own generator, so the run with them sees the same training and search batches."""
    net = _net()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 1, 8, 8, generator=g), torch.randint(0, 10, (256,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    gens = {"probe": torch.Generator().manual_seed(2), "held": torch.Generator().manual_seed(5)}

    def probe(n: int):
        idx = torch.randint(0, 256, (n,), generator=gens["held" if n == 37 else "probe"])
        return lambda: loss_fn(net(x[idx]), y[idx])

    knobs = {} if heldout is None else {"heldout_batch": heldout}
    opt = GOSE(net.parameters(), lr=0.05, every=5, check="always", **knobs)
    losses = [float(opt.step(probe(32), probe=probe)) for _ in range(steps)]
    return net, opt, losses


def test_the_heldout_record_leaves_the_trajectory_bit_identical() -> None:
    net_a, plain, losses_a = _train(None)
    net_b, judged, losses_b = _train(37)
    assert losses_a == losses_b
    for p, q in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(p, q)
    n = judged.counters["steps"]
    assert n > 0 and n == plain.counters["steps"] == judged.counters["heldout_steps"]
    assert judged.counters["hvps"] - plain.counters["hvps"] == n
    assert judged.counters["grads"] - plain.counters["grads"] == n
    log = judged.nc_log
    assert len(log) == n and len(plain.nc_log) == n
    assert all(e["heldout_curvature"] is None for e in plain.nc_log)
    mean = sum(e["heldout_curvature"] for e in log) / n
    assert judged.counters["heldout_curvature"] == pytest.approx(mean, rel=1e-12)
    mean = sum(e["heldout_loss_change"] for e in log) / n
    assert judged.counters["heldout_loss_change"] == pytest.approx(mean, rel=1e-12)
    assert judged.counters["heldout_down"] == sum(e["heldout_loss_change"] < 0 for e in log)
    assert [e["step"] for e in log] == sorted({e["step"] for e in log})
    assert all(e["step"] % 5 == 0 for e in log)
    json.dumps(log)  # plain numbers: metrics.json can hold it


def test_the_log_survives_a_state_dict_round_trip() -> None:
    net, opt, _ = _train(37, steps=11)
    sd = opt.state_dict()
    fresh = GOSE(net.parameters(), lr=0.05, every=5, check="always", heldout_batch=37)
    fresh.load_state_dict(sd)
    assert fresh.nc_log == opt.nc_log and len(fresh.nc_log) > 0
    assert fresh.counters == pytest.approx(opt.counters, nan_ok=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Schedule(verify_batch=0), "verify_batch=0"),
        (lambda: Schedule(heldout_batch=2.5), "heldout_batch=2.5"),
        (lambda: CarmonStep(accept_batch=-1), "accept_batch=-1"),
        (lambda: FixedStep(accept_batch=True), "accept_batch=True"),
    ],
)
def test_bad_knobs_are_one_clear_error(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_flat_knobs_reach_the_schedule_and_step_rule() -> None:
    opt = GOSE(nn.Linear(2, 2).parameters(), verify_batch=256, heldout_batch=128, accept_batch=64)
    assert opt.schedule.verify_batch == 256 and opt.schedule.heldout_batch == 128
    assert opt.step_rule.accept_batch == 64


def test_the_judgements_go_through_reduce() -> None:
    # a DDP all-reduce stand-in: the identity, counting its calls
    def counting(knobs: dict) -> int:
        theta, opt, probe, *_ = problem(-1.0, -0.9, **knobs)
        calls: list[int] = []
        opt.reduce = lambda t: (calls.append(t.numel()), t)[1]
        opt.phase.run(opt, probe)
        assert opt.counters["steps"] == 1
        return len(calls)

    step = {"step": {"sign_batch": SIGN, "accept_batch": ACCEPT}}
    plain = counting(dict(step))
    # verification: its gradient and HVP; held-out: loss after, gradient, HVP, loss before
    assert counting({"verify_batch": VERIFY, **step}) - plain == 2
    assert counting({"heldout_batch": HELDOUT, **step}) - plain == 4
