"""conf/optimizer/{gose,ancm,combined}{,_seed}.yaml: composed with the real config, instantiated."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from accelopt.optim import ANCM, GOSE, Combined, NCEscape

CONFIGS = {
    "gose": (GOSE, "improved"),
    "gose_seed": (GOSE, "seed"),
    "ancm": (ANCM, "improved"),
    "ancm_seed": (ANCM, "seed"),
    "combined": (Combined, "improved"),
    "combined_seed": (Combined, "seed"),
}
# NCEscape keywords a config need not list (callables, Adam-only, or set by the trainer).
NOT_IN_CONFIG = {"self", "params", "reduce", "base_kwargs", "betas", "eps"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_instantiates_its_preset_with_every_knob(
    name: str, make_cfg: Callable[..., DictConfig]
) -> None:
    cls, variant = CONFIGS[name]
    cfg = make_cfg(f"optimizer={name}", "seed=5")
    knobs = OmegaConf.to_container(cfg.optimizer, resolve=True)
    assert knobs["lr"] == 0.02 and knobs["variant"] == variant and knobs["seed"] == 5
    # every knob of NCEscape is a config value, and the config says what the variant says
    names = set(inspect.signature(NCEscape.__init__).parameters) - NOT_IN_CONFIG
    assert names <= set(knobs)
    for key, value in cls.TABLE[variant].items():
        assert knobs[key] == value, key

    model = torch.nn.Linear(3, 1)
    opt = instantiate(cfg.optimizer)(model.parameters())
    assert type(opt) is cls and opt.variant == variant and opt.needs_hvp
    assert opt.param_groups[0]["lr"] == 0.02


def test_sweeps_override_the_learning_rate(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("optimizer=gose", "optimizer.lr=0.002")
    opt = instantiate(cfg.optimizer)(torch.nn.Linear(3, 1).parameters())
    assert opt.param_groups[0]["lr"] == 0.002
