"""The NC components on their own: knob validation, registry, flat-knob routing, a new search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from accelopt.curvature.search import SearchResult
from accelopt.optim import (
    GOSE,
    Always,
    CarmonStep,
    FixedStep,
    GradNormCheck,
    Lanczos,
    NCEscape,
    Neon2,
    RandomDirection,
    Schedule,
    Search,
    VRPower,
    registry,
)

from .conftest import CONF_DIR


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: GradNormCheck(batches=0),
            r"GradNormCheck: invalid batches=0; accepted: an integer >= 1",
        ),
        (lambda: GradNormCheck(threshold=-1.0), r"threshold=-1.0; accepted: a finite number > 0"),
        (lambda: Lanczos(max_hvps=0), r"Lanczos: invalid max_hvps=0"),
        (lambda: Lanczos(hvp_method="fd"), r"hvp_method='fd'; accepted: 'double_backward'"),
        (lambda: Neon2(max_grads=3), r"Neon2: invalid max_grads=3; accepted: an integer >= 4"),
        (lambda: VRPower(lam=0.0), r"VRPower: invalid lam=0.0"),
        (lambda: CarmonStep(l2=float("inf")), r"CarmonStep: invalid l2=inf"),
        (lambda: FixedStep(length=0), r"FixedStep: invalid length=0"),
        (lambda: FixedStep(backtracks=-1), r"backtracks=-1"),
        (lambda: Schedule(timing="during"), r"timing='during'; accepted: 'after', 'before'"),
        (lambda: Schedule(every=1.5), r"every=1.5"),
    ],
)
def test_each_component_validates_its_own_knobs(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_every_config_group_option_is_a_registered_component() -> None:
    groups = CONF_DIR / "optimizer"
    for kind in ("check", "search", "step", "cadence"):
        names = {f.stem for f in (groups / kind).glob("*.yaml")}
        assert names and names <= set(registry(kind)), kind
        for name in names:  # the yaml's target is the class registered under its file name
            target = (groups / kind / f"{name}.yaml").read_text().split("_target_: ")[1].split()[0]
            assert target == f"accelopt.optim.{registry(kind)[name].__name__}"


def test_flat_knobs_go_to_the_component_that_has_them() -> None:
    opt = GOSE(
        [nn.Parameter(torch.zeros(3))],
        variant="original",
        every=7,
        threshold=1e9,
        outer=3,
        length=0.25,
    )
    assert opt.schedule.every == 7 and opt.check.threshold == 1e9
    assert opt.search.outer == 3 and opt.step_rule.length == 0.25
    # the component the preset was given is not changed (copies)
    check = GradNormCheck()
    GOSE([nn.Parameter(torch.zeros(3))], check=check, threshold=5.0)
    assert check.threshold == 1e-3


@dataclass
class GradientDirection(Search):
    """A toy search (a test of extensibility): the normalised gradient, λ = vᵀHv by one HVP."""

    name: ClassVar[str] = "gradient_direction"
    needs_reference: ClassVar[bool] = True
    search_batch: int = 8
    eps_h: float = 0.0

    def reference(self, ctx, closure):
        return Lanczos(search_batch=self.search_batch).reference(ctx, closure)

    def run(self, ctx, probe, batch):
        v = batch.grad / batch.grad.norm()
        lam = float(v @ batch.op.matvec(v))
        found = lam < 0
        return SearchResult(lam, v if found else None, 1, candidate=v), batch.closure


def test_a_new_search_is_one_class_with_no_edit_to_the_wrapper() -> None:
    assert registry("search")["gradient_direction"] is GradientDirection
    # f(a, b) = a·b from (1, 0.5): the gradient (0.5, 1) has curvature 2·0.5/1.25 > 0, while
    # from (1, −1.5) the gradient (−1.5, 1) has vᵀHv = −3/3.25 < 0: an NC step is taken.
    for start, steps in (([1.0, 0.5], 0), ([1.0, -1.5], 1)):
        p = nn.Parameter(torch.tensor(start, dtype=torch.float64))
        opt = NCEscape(
            [p], lr=1e-3, check=Always(), search="gradient_direction", every=1, step=CarmonStep()
        )

        def closure(p: nn.Parameter = p) -> torch.Tensor:
            return p[0] * p[1]

        opt.step(closure, probe=lambda n: closure, batch_idx=0)
        assert opt.counters["searches"] == 1 and opt.counters["steps"] == steps


@pytest.mark.parametrize("search", [Lanczos(max_hvps=3, eps_h=0.0), VRPower()])
def test_lambda_min_reports_found_directions_only(search: Search) -> None:
    # f = ½‖p‖² (H = I): no negative curvature, so nothing is found: λ_last = 1, λ_min stays NaN
    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = NCEscape([p], lr=0.1, check=Always(), search=search, step=FixedStep(), every=1)

    def closure() -> torch.Tensor:
        return 0.5 * (p * p).sum()

    for k in range(2):
        opt.step(closure, probe=lambda n: closure, batch_idx=k)
    c = opt.counters
    assert c["searches"] == 2 and c["steps"] == 0
    assert c["lambda_last"] == pytest.approx(1.0) and c["lambda_min"] != c["lambda_min"]
    # extra gradients: Lanczos builds one operator per search; the power iteration one per
    # HVP batch (2 outer rounds × (8 + 8) batches); no sign batch without a direction
    assert c["grads"] == (2 if isinstance(search, Lanczos) else 2 * 32)


def test_a_state_of_this_version_loads_and_one_of_older_code_is_refused_naming_it() -> None:
    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = GOSE([p], every=100)
    for k in range(1, 4):
        opt.step(lambda: (p**3).sum(), probe=None, batch_idx=k)
    sd = opt.state_dict()
    fresh = GOSE([nn.Parameter(torch.ones(3, dtype=torch.float64))], every=100)
    fresh.load_state_dict(sd)
    assert fresh.check.count == 3 and torch.equal(fresh.check.total, opt.check.total)
    assert fresh.counters == pytest.approx(opt.counters, nan_ok=True)
    sd["nc"].pop("version")  # older code wrote no version entry
    with pytest.raises(
        ValueError, match=r"NC state version 1 was saved by older .* reads version 2$"
    ):
        fresh.load_state_dict(sd)


def test_random_direction_is_a_uniform_unit_vector_with_its_exact_curvature() -> None:
    """The control search: v uniform on the trainable unit sphere, λ = vᵀAv of the dense A."""
    torch.manual_seed(0)
    m = torch.randn(5, 5, dtype=torch.float64)
    a = m @ m.T + torch.eye(5, dtype=torch.float64)  # positive definite: no negative curvature
    p = nn.Parameter(torch.randn(5, dtype=torch.float64))
    frozen = nn.Parameter(torch.ones(2, dtype=torch.float64), requires_grad=False)

    def closure() -> torch.Tensor:
        return 0.5 * p @ a @ p + frozen.sum()

    opt = NCEscape([p, frozen], lr=0.1, check=Always(), search="random", every=1)
    search = opt.search
    assert isinstance(search, RandomDirection) and search.search_batch == 256
    seen = []
    for _ in range(3):
        result, used = search.run(opt, lambda n: closure, search.reference(opt, closure))
        v = result.direction
        assert used is closure and result.found and result.hvps == 1 and result.method == "random"
        assert torch.linalg.vector_norm(v).item() == pytest.approx(1.0, abs=1e-12)
        assert torch.all(v[5:] == 0)  # never along a frozen entry
        assert result.lam == pytest.approx(float(v[:5] @ a @ v[:5]), rel=1e-12)
        assert result.lam > 0  # returned although its curvature is positive
        seen.append(v)
    assert not torch.allclose(seen[0], seen[1])  # a fresh draw each time
    again = NCEscape([p, frozen], lr=0.1, check=Always(), search="random", every=1)
    first, _ = again.search.run(again, lambda n: closure, again.search.reference(again, closure))
    assert torch.equal(first.direction, seen[0])  # the optimizer's seeded generator
