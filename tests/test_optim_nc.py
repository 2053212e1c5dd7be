"""NCEscape and its presets, through the optimizer API only (float64, CPU, seconds)."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from accelopt.optim import ANCM, GOSE, Combined, NCEscape, NoiseCheck

DT = torch.float64
PRESETS = {"gose": GOSE, "ancm": ANCM, "combined": Combined}


# ------------------------------------------------------------------------------------ helpers
class Source:
    """A fixed synthetic regression/classification data set; batches drawn by its own generator."""

    def __init__(self, n: int = 256, d: int = 6, seed: int = 0, offset: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g, dtype=DT)
        w = torch.randn(d, 1, generator=g, dtype=DT)
        self.y = self.x @ w + 0.1 * torch.randn(n, 1, generator=g, dtype=DT) + offset
        self.gen = torch.Generator().manual_seed(seed + 1)

    def batch(self, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.randint(0, self.x.shape[0], (n,), generator=self.gen)
        return self.x[idx], self.y[idx]


def closure_on(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    return lambda: nn.functional.mse_loss(model(x), y)


def probe_for(model: nn.Module, src: Source) -> Callable[[int], Callable[[], Tensor]]:
    def probe(n: int) -> Callable[[], Tensor]:
        return closure_on(model, *src.batch(n))

    return probe


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)


# ------------------------------------------------------------ equal to the base when idle
REFERENCES = {
    ("gose", "improved"): lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
    ("gose", "original"): lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
    ("combined", "improved"): lambda ps, lr: torch.optim.SGD(
        ps, lr=lr, momentum=0.9, nesterov=True
    ),
    ("combined", "original"): lambda ps, lr: torch.optim.SGD(
        ps, lr=lr, momentum=0.9, nesterov=True
    ),
    ("ancm", "improved"): lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True),
    ("ancm", "original"): lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize(("name", "variant"), sorted(REFERENCES))
def test_iterates_equal_base_when_the_check_does_not_fire(name: str, variant: str) -> None:
    # Linear regression far from its minimum (targets offset by 20): the full-batch gradient is
    # large and nearly constant, so neither the report's check (‖g‖ < 1e-3) nor the noise check
    # (‖∇f‖² ≤ noise) fires. The test asserts that, then compares the iterates bit for bit.
    src = Source(offset=20.0)
    a = nn.Linear(6, 1).to(DT)
    b = copy.deepcopy(a)
    lr = 0.002
    opt = PRESETS[name](a.parameters(), lr=lr, variant=variant, every=4)
    ref = REFERENCES[(name, variant)](b.parameters(), lr)
    probe = probe_for(a, src)
    for t in range(30):
        opt.step(closure_on(a, src.x, src.y), probe=probe, batch_idx=t)
        ref.zero_grad()
        nn.functional.mse_loss(b(src.x), src.y).backward()
        ref.step()
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q), f"step {t}"
    assert opt.counters["checks"] > 0
    assert opt.counters["searches"] == 0


def test_adam_base_iterates_equal_torch_adam() -> None:
    src = Source(offset=20.0)
    a = nn.Linear(6, 1).to(DT)
    b = copy.deepcopy(a)
    opt = GOSE(a.parameters(), lr=0.01, base="adam", every=4)
    ref = torch.optim.Adam(b.parameters(), lr=0.01)
    for t in range(30):
        opt.step(closure_on(a, src.x, src.y), probe=probe_for(a, src))
        ref.zero_grad()
        nn.functional.mse_loss(b(src.x), src.y).backward()
        ref.step()
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q), f"step {t}"
    assert opt.counters["checks"] > 0 and opt.counters["searches"] == 0


# ------------------------------------------------------------------------- saddle escapes
def quartic(p: Tensor) -> Tensor:
    """f = ½x² − ½y² + ¼y⁴: a strict saddle at 0 (λ = −1 along e_y), minima f = −¼ at y = ±1."""
    return 0.5 * p[0] ** 2 - 0.5 * p[1] ** 2 + 0.25 * p[1] ** 4


def factorisation(p: Tensor) -> Tensor:
    """f = ½(ab − 1)²: a saddle at 0 with eigenvalues ±1 (λ = −1 along (1, 1)/√2), f* = 0."""
    return 0.5 * (p[0] * p[1] - 1) ** 2


def run_deterministic(
    opt_factory: Callable, f: Callable[[Tensor], Tensor], steps: int
) -> tuple[Tensor, object]:
    p = torch.zeros(2, dtype=DT, requires_grad=True)
    opt = opt_factory([p])

    def closure() -> Tensor:
        return f(p)

    for _ in range(steps):
        if isinstance(opt, NCEscape):
            opt.step(closure, probe=lambda n: closure)
        else:
            opt.zero_grad()
            closure().backward()
            opt.step()
    return p.detach(), opt


@pytest.mark.parametrize("cls", [GOSE, Combined])
def test_gose_escapes_the_quartic_saddle_where_its_base_stays(cls: type[NCEscape]) -> None:
    base_p, _ = run_deterministic(
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), quartic, 100
    )
    assert torch.equal(base_p, torch.zeros(2, dtype=DT))  # a gradient method cannot leave 0
    p, opt = run_deterministic(lambda ps: cls(ps, lr=0.1, every=5), quartic, 200)
    assert float(quartic(p)) == pytest.approx(-0.25, abs=1e-6)
    assert abs(float(p[1])) == pytest.approx(1.0, abs=1e-3)
    assert opt.counters["steps"] >= 1
    assert opt.counters["loss_change"] < 0


def test_ancm_escapes_the_factorisation_saddle_where_nesterov_stays() -> None:
    nesterov = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True)  # noqa: E731
    base_p, _ = run_deterministic(nesterov, factorisation, 100)
    assert float(factorisation(base_p)) == 0.5
    p, opt = run_deterministic(lambda ps: ANCM(ps, lr=0.1, every=5), factorisation, 100)
    assert float(factorisation(p)) < 1e-8
    assert opt.counters["steps"] >= 1
    # the first NC step left the saddle along (1, 1)/√2 or −(1, 1)/√2: a·b > 0 at the end
    assert float(p[0] * p[1]) == pytest.approx(1.0, abs=1e-4)


def test_original_gose_escapes_with_its_fixed_half_step() -> None:
    # The report's check fires at the exact saddle (g = 0); its power iteration on 1.5 − 0.1H
    # favours λ = −1 (|1.6| > |1.4|) on this 2-D problem, and θ moves by 0.5 along ±e_y.
    p, opt = run_deterministic(lambda ps: GOSE(ps, lr=0.1, variant="original", seed=3), quartic, 50)
    assert opt.counters["searches"] >= 1 and opt.counters["steps"] >= 1
    assert float(quartic(p)) < -0.2


# --------------------------------------------------------------------------------- counters
def test_original_gose_makes_30_checks_in_a_469_step_epoch() -> None:
    src = Source()
    model = nn.Linear(6, 1).to(DT)
    opt = GOSE(model.parameters(), lr=0.01, variant="original")
    probe = probe_for(model, src)
    for batch_idx in range(469):
        opt.step(closure_on(model, *src.batch(16)), probe=probe, batch_idx=batch_idx)
    assert opt.counters["checks"] == 30
    assert opt.counters["grads"] == 30 * 8  # each check: 8 probe gradients
    assert opt.counters["searches"] <= opt.counters["checks"]


def test_original_ancm_checks_before_every_step() -> None:
    src = Source()
    model = nn.Linear(6, 1).to(DT)
    opt = ANCM(model.parameters(), lr=0.01, variant="original")
    for batch_idx in range(25):
        opt.step(
            closure_on(model, *src.batch(16)), probe=probe_for(model, src), batch_idx=batch_idx
        )
    assert opt.counters["checks"] == 25


def test_without_batch_idx_the_internal_step_count_sets_the_cadence() -> None:
    src = Source()
    model = nn.Linear(6, 1).to(DT)
    opt = GOSE(model.parameters(), lr=0.01, every=10)
    for _ in range(35):
        opt.step(closure_on(model, *src.batch(16)), probe=probe_for(model, src))
    assert opt.counters["checks"] == 4  # steps 0, 10, 20, 30


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("variant", ["improved", "original"])
def test_counters_add_up_when_searches_run(name: str, variant: str) -> None:
    src = Source()
    model = mlp()
    opt = PRESETS[name](model.parameters(), lr=0.05, variant=variant, every=3, check="always")
    for t in range(24):
        opt.step(closure_on(model, *src.batch(32)), probe=probe_for(model, src), batch_idx=t)
    c = opt.counters
    assert set(c) >= {"checks", "searches", "steps", "rejected", "hvps", "lambda_min", "time_s"}
    assert c["checks"] - c["rechecks"] == 8  # the schedule's checks
    assert c["searches"] > 0
    assert c["searches"] <= c["checks"]  # every search is preceded by a check or a re-check
    assert c["steps"] + c["rejected"] <= c["searches"]
    assert c["hvps"] > 0 and math.isfinite(c["lambda_min"])
    assert c["time_s"] >= c["check_time_s"]
    if opt.schedule.max_nc_steps == 1:
        assert c["rechecks"] == 0


def test_lambda_min_is_nan_before_any_search() -> None:
    model = mlp()
    assert math.isnan(GOSE(model.parameters()).counters["lambda_min"])


# ------------------------------------------------------------------------------ state dict
@pytest.mark.parametrize(
    ("name", "variant", "knobs"),
    [
        ("gose", "improved", {"check": "always"}),
        # the noise check's window must round-trip: with this ratio it fires iff it holds >= 2
        # gradients, and the first check after loading (step 20) sees 1 saved + 1 new gradient
        ("gose", "improved", {"check": "noise", "ratio": 1e12, "every": 2}),
        ("ancm", "improved", {"check": "always"}),
        ("combined", "improved", {"check": "always", "search": "neon2"}),
        ("gose", "original", {"check": "always"}),
    ],
)
def test_state_dict_round_trip_gives_identical_next_20_steps(
    name: str, variant: str, knobs: dict
) -> None:
    def make(model: nn.Module) -> NCEscape:
        return PRESETS[name](
            model.parameters(), lr=0.05, variant=variant, seed=7, **{"every": 3, **knobs}
        )

    src = Source()
    model = mlp()
    opt = make(model)

    def run(m: nn.Module, o: NCEscape, s: Source, steps: range) -> list[Tensor]:
        out = []
        for t in steps:
            o.step(closure_on(m, *s.batch(32)), probe=probe_for(m, s), batch_idx=t)
            out.append(torch.cat([p.detach().reshape(-1) for p in m.parameters()]).clone())
        return out

    run(model, opt, src, range(20))
    assert opt.counters["searches"] > 0
    if name == "ancm":
        assert opt.anchor.point is not None  # the anchor is part of what must round-trip
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)  # as a Lightning checkpoint would
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)

    model2 = copy.deepcopy(model)
    src2 = copy.deepcopy(src)
    opt2 = make(model2)
    opt2.load_state_dict(saved)
    assert opt2.param_groups is opt2.base.param_groups

    a = run(model, opt, src, range(20, 40))
    b = run(model2, opt2, src2, range(20, 40))
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"step {20 + t}"
    for key in ("checks", "searches", "steps", "rejected", "hvps", "grads"):
        assert opt.counters[key] == opt2.counters[key]
    assert opt.counters["searches"] > 0


# ------------------------------------------------------------------------ wiring and errors
def test_param_groups_are_the_base_optimizers() -> None:
    model = mlp()
    opt = GOSE(model.parameters(), lr=0.1)
    assert opt.param_groups is opt.base.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    src = Source()
    opt.step(closure_on(model, *src.batch(8)), probe=probe_for(model, src))
    sched.step()
    assert opt.base.param_groups[0]["lr"] == pytest.approx(0.05)
    assert GOSE.uses_closure and ANCM.uses_closure and Combined.uses_closure


def test_no_graph_left_in_grad_and_loss_returned() -> None:
    model = mlp()
    src = Source()
    x, y = src.batch(16)
    opt = GOSE(model.parameters(), lr=0.1)
    with torch.no_grad():
        expected = float(nn.functional.mse_loss(model(x), y))
    loss = opt.step(closure_on(model, x, y), probe=probe_for(model, src))
    assert float(loss) == expected and not loss.requires_grad
    assert all(p.grad is not None and p.grad.grad_fn is None for p in model.parameters())


def test_reduce_is_applied_to_gradients_and_curvature() -> None:
    calls = []

    def reduce(t: Tensor) -> Tensor:
        calls.append(t.numel())
        return t

    model = mlp()
    src = Source()
    opt = GOSE(model.parameters(), lr=0.05, every=2, check="always")
    opt.reduce = reduce
    for t in range(3):
        opt.step(closure_on(model, *src.batch(16)), probe=probe_for(model, src), batch_idx=t)
    n = sum(p.numel() for p in model.parameters())
    assert calls.count(n) >= 3 + opt.counters["hvps"]  # minibatch gradients, every HVP
    if opt.counters["steps"] + opt.counters["rejected"] > 0:
        assert 1 in calls  # acceptance-test losses


def test_missing_probe_or_closure_is_a_clear_error() -> None:
    model = mlp()
    src = Source()
    opt = GOSE(model.parameters(), every=2)
    with pytest.raises(ValueError, match="no probe"):
        opt.step(closure_on(model, *src.batch(8)), batch_idx=0)
    opt.step(closure_on(model, *src.batch(8)), batch_idx=1)  # no check due: fine
    with pytest.raises(ValueError, match="needs a loss closure"):
        opt.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "lr=0.0"),
        ({"lr": -1.0}, "lr=-1.0"),
        ({"variant": "fancy"}, "variant='fancy'.*'improved', 'original'"),
        ({"check": "grad"}, "check='grad'.*'noise'"),
        ({"search": "arnoldi"}, "search='arnoldi'.*'lanczos'"),
        ({"every": 0}, "every=0"),
        ({"base": "rmsprop"}, "base='rmsprop'.*'heavyball'"),
        ({"timing": "during"}, "timing='during'"),
        ({"step": "curvature"}, "step='curvature'.*'carmon'"),
        ({"momentum": 1.0}, "momentum=1.0.*0 <= momentum < 1"),
        ({"momentum": -0.1}, "momentum=-0.1"),
        ({"power_outer": 2}, "knob power_outer=2.*accepted: .*max_hvps"),
        ({"hvp_method": "finite_difference"}, "hvp_method='finite_difference'.*'double_backward'"),
        ({"accept": "yes"}, "accept='yes'"),
        ({"eps_h": -0.1}, "eps_h=-0.1"),
        ({"search": "vr_power", "sign_batch": None}, "sign_batch=None"),
        ({"search": "neon2", "max_grads": 2}, "max_grads=2"),
    ],
)
def test_bad_input_is_refused_in_the_constructor(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GOSE(mlp().parameters(), **kwargs)


# ------------------------------------------------------------------- re-checks (issue 4)
def test_ancm_rechecks_after_an_nc_step_and_stops_when_the_gradient_grew() -> None:
    # f = ½(ab − 1)² from the saddle 0: Nesterov stays at 0, so at step 5 the noise check's window
    # holds five zero gradients (‖∇f‖² = σ̂² = 0) and fires. The first round finds λ = −1 and
    # steps to a point where ‖∇f‖ > 0; the re-check (margin 0 on a noiseless problem) refuses a
    # second search although max_nc_steps > 1.
    p = torch.zeros(2, dtype=DT, requires_grad=True)
    opt = ANCM([p], lr=0.1, every=5)
    assert opt.schedule.max_nc_steps > 1 and isinstance(opt.check, NoiseCheck)

    def closure() -> Tensor:
        return factorisation(p)

    for t in range(6):
        opt.step(closure, probe=lambda n: closure, batch_idx=t)
    c = opt.counters
    assert (c["checks"], c["rechecks"], c["searches"], c["steps"]) == (3, 1, 1, 1)
    assert float(factorisation(p.detach())) < 0.5


def test_rechecks_pass_while_the_gradient_stays_within_the_noise_margin() -> None:
    # A huge ratio makes the margin (ρσ̂² − ‖∇f‖²^) dwarf any change of ‖g_S‖²: every re-check
    # passes and a phase runs up to max_nc_steps searches, each preceded by a (re-)check.
    src = Source()
    model = mlp()
    opt = ANCM(model.parameters(), lr=0.05, every=4, ratio=1e12, max_nc_steps=3)
    for t in range(16):
        opt.step(closure_on(model, *src.batch(32)), probe=probe_for(model, src), batch_idx=t)
    c = opt.counters
    assert c["checks"] - c["rechecks"] == 4
    assert c["rechecks"] > 0
    assert c["searches"] > c["checks"] - c["rechecks"]  # more searches than scheduled checks
    assert c["searches"] <= c["checks"]
    assert c["steps"] + c["rejected"] <= c["searches"]


@pytest.mark.parametrize("search", ["neon2", "vr_power"])
def test_rechecks_work_with_the_other_searches(search: str) -> None:
    src = Source()
    model = mlp()
    knobs = {"sign_batch": 16} if search == "vr_power" else {"max_grads": 12}
    opt = ANCM(
        model.parameters(),
        lr=0.05,
        every=4,
        ratio=1e12,
        max_nc_steps=3,
        search=search,
        eps_h=0.0,
        **knobs,
    )
    for t in range(16):
        opt.step(closure_on(model, *src.batch(32)), probe=probe_for(model, src), batch_idx=t)
    c = opt.counters
    assert c["checks"] - c["rechecks"] == 4 and c["searches"] > 0
    assert c["searches"] <= c["checks"]
    assert c["steps"] + c["rejected"] <= c["searches"]
