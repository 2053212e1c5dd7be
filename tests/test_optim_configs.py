"""The NC optimizer configs, by behaviour: composed with the real config, instantiated, stepped.

A preset yaml selects a preset of accelopt/optim/presets.py; the nested groups
``optimizer/check``, ``optimizer/search``, ``optimizer/step`` replace one component.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from accelopt.config import ConfigError, check_config
from accelopt.optim import (
    ANCM,
    GOSE,
    Always,
    Combined,
    FixedStep,
    GradNormCheck,
    Lanczos,
    NCEscape,
    Neon2,
    NoiseCheck,
    RandomDirection,
    VRPower,
)
from accelopt.optim_protocol import uses_closure

from .conftest import FAST, run_cli

PRESETS = {
    "gose": (GOSE, "improved"),
    "gose_original": (GOSE, "original"),
    "ancm": (ANCM, "improved"),
    "ancm_original": (ANCM, "original"),
    "combined": (Combined, "improved"),
    "combined_original": (Combined, "original"),
}


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def run(opt_factory: Callable[..., NCEscape], steps: int = 6) -> tuple[NCEscape, list[float]]:
    """A few steps on fixed data, every probe drawn from its own seeded generator."""
    net = tiny()
    opt = opt_factory(net.parameters())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 4, generator=g), torch.randint(0, 3, (256,), generator=g)
    pg = torch.Generator().manual_seed(2)

    def over(idx: Tensor) -> Callable[[], Tensor]:
        return lambda: nn.functional.cross_entropy(net(x[idx]), y[idx])

    def probe(n: int) -> Callable[[], Tensor]:
        return over(torch.randint(0, 256, (n,), generator=pg))

    losses = [
        float(opt.step(over(torch.arange(16 * k, 16 * k + 16)), probe, k)) for k in range(steps)
    ]
    return opt, losses


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_config_builds_the_python_preset(
    name: str, make_cfg: Callable[..., DictConfig]
) -> None:
    # the config adds nothing to the preset: same class, components and trajectory
    cls, variant = PRESETS[name]
    cfg = make_cfg(f"optimizer={name}", "seed=5", "optimizer.every=2", "optimizer.check=always")
    factory = instantiate(cfg.optimizer)
    assert uses_closure(factory) and cfg.optimizer.lr == 0.02
    opt, losses = run(factory)
    ref, ref_losses = run(
        lambda p: cls(p, lr=0.02, variant=variant, seed=5, every=2, check="always")
    )
    assert type(opt) is cls and opt.variant == variant and opt.seed == 5
    assert type(opt.search) is type(ref.search) and type(opt.step_rule) is type(ref.step_rule)
    assert opt.counters["searches"] > 0
    assert losses == ref_losses


@pytest.mark.parametrize("name", ["gose", "combined", "ancm"])
def test_random_control_is_the_preset_with_random_directions(
    name: str, make_cfg: Callable[..., DictConfig]
) -> None:
    """``<preset>_random``: the preset's class, base, check and schedule; only the direction (and
    the step rule that goes with a random one) differ."""
    common = ("seed=5", "optimizer.every=2", "optimizer.check=always")
    opt, losses = run(instantiate(make_cfg(f"optimizer={name}_random", *common).optimizer))
    ref, ref_losses = run(instantiate(make_cfg(f"optimizer={name}", *common).optimizer))
    assert type(opt) is type(ref) and (opt.variant, ref.variant) == ("random", "improved")
    assert type(opt.base) is type(ref.base) and type(opt.check) is type(ref.check)
    assert opt.base.defaults["nesterov"] == ref.base.defaults["nesterov"]
    assert opt.schedule.every == 2 and opt.schedule.timing == ref.schedule.timing
    assert opt.schedule.max_nc_steps == ref.schedule.max_nc_steps
    assert opt.anchor.prox == ref.anchor.prox
    assert ref.schedule.verify_batch is not None and opt.schedule.verify_batch is None
    # the control's values are the preset's own (one source: accelopt/optim/presets.py)
    size = ref.search.search_batch
    assert isinstance(opt.search, RandomDirection) and opt.search.search_batch == size
    step, ref_step = opt.step_rule, ref.step_rule
    assert isinstance(step, FixedStep) and step.length == ref_step.max_length
    assert (step.accept, step.backtracks) == (ref_step.accept, ref_step.backtracks)
    assert step.sign_batch == step.accept_batch == size
    assert opt.counters["searches"] > 0 and opt.counters["steps"] > 0
    assert opt.counters["hvps"] == opt.counters["searches"]  # one HVP per random direction
    assert losses != ref_losses
    if ref.schedule.timing == "after":  # the first phase comes after the first step
        assert losses[0] == ref_losses[0]


def test_search_group_replaces_the_search(make_cfg: Callable[..., DictConfig]) -> None:
    common = (
        "optimizer=gose",
        "optimizer.every=2",
        "optimizer.check=always",
        "optimizer.verify_batch=0",
    )
    lanczos, base_losses = run(instantiate(make_cfg(*common).optimizer))
    neon2, losses = run(instantiate(make_cfg(*common, "optimizer/search=neon2").optimizer))
    assert isinstance(lanczos.search, Lanczos) and isinstance(neon2.search, Neon2)
    assert losses[0] == base_losses[0] and losses != base_losses
    tuned, _ = run(
        instantiate(
            make_cfg(*common, "optimizer/search=neon2", "+optimizer.search.max_grads=8").optimizer
        )
    )
    assert tuned.search.max_grads == 8
    # a Neon2 search is first-order: its one HVP is the curvature estimate of its direction
    assert tuned.counters["hvps"] == tuned.counters["searches"] > 0
    assert neon2.counters["hvps"] == neon2.counters["searches"] > 0


def test_check_and_step_groups_replace_their_components(
    make_cfg: Callable[..., DictConfig],
) -> None:
    cfg = make_cfg(
        "optimizer=gose",
        "optimizer.every=2",
        "optimizer/check=grad_norm",
        "+optimizer.check.threshold=1e9",  # passes: searches run
        "optimizer/step=fixed",
        "optimizer.verify_batch=0",  # off: one sign batch per step, no verification batch
    )
    opt, _ = run(instantiate(cfg.optimizer))
    assert isinstance(opt.check, GradNormCheck) and opt.check.threshold == 1e9
    assert isinstance(opt.step_rule, FixedStep) and opt.step_rule.sign_batch == 64
    c = opt.counters
    assert c["checks"] == 3 and c["searches"] == 3
    # 8 probe gradients per check, one sign batch per step taken
    assert c["grads"] == 3 * 8 + 3 + c["steps"]  # + the Lanczos reference batches


def test_original_preset_with_the_noise_check(make_cfg: Callable[..., DictConfig]) -> None:
    opt, _ = run(
        instantiate(make_cfg("optimizer=gose_original", "optimizer/check=noise").optimizer)
    )
    assert isinstance(opt.check, NoiseCheck) and isinstance(opt.search, VRPower)
    assert opt.counters["grads"] == 0  # the noise check is free, and at step 0 it cannot fire


def test_hvp_method_key_reaches_the_search(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("optimizer=ancm", "optimizer.hvp_method=forward_over_reverse")
    opt = instantiate(cfg.optimizer)(tiny().parameters())
    assert opt.search.hvp_method == "forward_over_reverse"


def test_string_check_slot_and_plain_optimizers(make_cfg: Callable[..., DictConfig]) -> None:
    opt = instantiate(make_cfg("optimizer=ancm_original", "optimizer.check=always").optimizer)(
        tiny().parameters()
    )
    assert isinstance(opt.check, Always) and opt.schedule.every == 1
    sgd = instantiate(make_cfg("optimizer=heavyball").optimizer)(tiny().parameters())
    assert type(sgd) is torch.optim.SGD and not uses_closure(sgd)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+optimizer.power_outer=3", "power_outer=3"),
        ("optimizer.every=0", "every=0"),
        ("+optimizer.momentum=1.0", "momentum=1.0"),
    ],
)
def test_bad_optimizer_values_are_config_errors(
    override: str, message: str, make_cfg: Callable[..., DictConfig]
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_config(make_cfg("optimizer=gose", override))


@pytest.mark.slow
def test_component_groups_from_the_command_line_in_a_multirun(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            *FAST,
            "trainer.limit_train_batches=4",
            "logger=none",
            "callbacks=none",
            "optimizer=gose",
            "optimizer.every=2",
            "optimizer.check=always",
            "optimizer/search=neon2,lanczos",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(records) == 2 and all(r["status"] == "completed" for r in records)
    targets = sorted(r["config"]["optimizer"]["search"]["_target_"] for r in records)
    assert targets == ["accelopt.optim.Lanczos", "accelopt.optim.Neon2"]
    assert all(r["nc"]["searches"] > 0 for r in records)


def test_forward_over_reverse_trains_through_lightning(make_cfg: Callable[..., DictConfig]) -> None:
    from accelopt.train import train

    cfg = make_cfg(
        "optimizer=gose",
        "optimizer.every=2",
        "optimizer.check=always",
        "optimizer.hvp_method=forward_over_reverse",
        "trainer.limit_train_batches=4",
        "logger=none",
        "callbacks=none",
    )
    record = train(cfg)
    assert record["status"] == "completed", record["error"]
    assert record["nc"]["searches"] > 0 and record["nc"]["hvps"] > 0
