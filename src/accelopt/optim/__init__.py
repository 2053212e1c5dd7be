"""Optimizers: the NC-escape wrapper, its components and its GOSE / ANCM / Combined presets.

Torch only. ``from accelopt.optim import GOSE`` and use it in a plain loop::

    opt = GOSE(model.parameters(), lr=0.02)                 # or variant="original": the report's
    for x, y in loader:
        loss = opt.step(lambda: loss_fn(model(x), y), probe=probe)

where ``probe(n)`` returns a loss closure over ``n`` fresh training samples. Compose your own::

    opt = NCEscape(model.parameters(), lr=0.02, base="nesterov", check=GradNormCheck(),
                   search=Neon2(max_grads=30), step=CarmonStep(), schedule=Schedule(every=20))
"""

from accelopt.optim.cadence import Cadence, Plateau
from accelopt.optim.check import (
    Always,
    Check,
    GradNormCheck,
    Never,
    NoiseCheck,
    PairCheck,
    mean_grad_norm,
    pair_estimate,
)
from accelopt.optim.component import Component, registry
from accelopt.optim.methods import ANCM, GOSE, VARIANTS, Combined
from accelopt.optim.nc import NCEscape
from accelopt.optim.schedule import Schedule
from accelopt.optim.search import Lanczos, Neon2, RandomDirection, Search, VRPower
from accelopt.optim.step import CarmonStep, FixedStep, StepRule

__all__ = [
    "ANCM",
    "GOSE",
    "VARIANTS",
    "Always",
    "Cadence",
    "CarmonStep",
    "Check",
    "Combined",
    "Component",
    "FixedStep",
    "Lanczos",
    "NCEscape",
    "Neon2",
    "Never",
    "NoiseCheck",
    "PairCheck",
    "Plateau",
    "RandomDirection",
    "Schedule",
    "Search",
    "GradNormCheck",
    "VRPower",
    "StepRule",
    "pair_estimate",
    "registry",
    "mean_grad_norm",
]
