"""Optimizers: the NC-escape wrapper and its GOSE / ANCM / Combined presets (torch only).

``from accelopt.optim import GOSE`` and use it in a plain loop::

    opt = GOSE(model.parameters(), lr=0.02)
    for x, y in loader:
        loss = opt.step(lambda: loss_fn(model(x), y), probe=probe)

where ``probe(n)`` returns a loss closure over ``n`` fresh training samples.
"""

from accelopt.optim.check import NoiseCheck, seed_check
from accelopt.optim.nc import NCEscape
from accelopt.optim.presets import ANCM, GOSE, VARIANTS, Combined

__all__ = ["ANCM", "GOSE", "VARIANTS", "Combined", "NCEscape", "NoiseCheck", "seed_check"]
