"""Assembling an NC optimizer: the base optimizer by name, and flat knobs routed to components.

``NCEscape(params, every=10, eps_h=0.1, threshold=1e9)`` is shorthand for changing those knobs
on the components in use: each flat keyword goes to every component (schedule, cadence, check,
search, step rule) that has a knob of that name (``hvp_method``: the search's and the schedule's,
i.e. the judgements'), and the component is rebuilt (and re-validated) with it. A knob that no
component in use has is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from accelopt.checks import choice, is_momentum, positive
from accelopt.optim.component import Component

__all__ = ["BASES", "make_base", "route_knobs"]

BASES = ("sgd", "heavyball", "nesterov", "adam")


def make_base(
    base: str | type[Optimizer] | Callable[..., Optimizer] | Optimizer,
    params: Iterable[Tensor] | Iterable[dict[str, Any]] | None,
    lr: float,
    *,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    base_kwargs: dict[str, Any] | None = None,
) -> Optimizer:
    """The base optimizer: a built one (kept), a class / factory ``f(params, lr=lr,
    **base_kwargs)``, or a name: ``"sgd"``, ``"heavyball"`` (``SGD(momentum)``), ``"nesterov"``
    (``SGD(momentum, nesterov=True)``), ``"adam"``."""
    if isinstance(base, Optimizer):
        return base
    if params is None:
        raise ValueError("NCEscape: params=None needs base=<an already built torch optimizer>")
    positive("NCEscape", "lr", lr)
    kwargs = dict(base_kwargs or {})
    if not isinstance(base, str):
        if not callable(base):
            raise ValueError(
                f"NCEscape: invalid base={base!r}; accepted: {', '.join(map(repr, BASES))}, "
                "a torch.optim.Optimizer (built, or a class / factory)"
            )
        return base(params, lr=lr, **kwargs)
    choice("NCEscape", "base", base, BASES)
    positive("NCEscape", "weight_decay", weight_decay, allow_zero=True)
    if base in ("heavyball", "nesterov"):
        if not is_momentum(momentum):
            raise ValueError(
                f"NCEscape: invalid momentum={momentum!r}; accepted: a number with 0 <= momentum < 1"
            )
        kwargs = {
            "momentum": momentum,
            "nesterov": base == "nesterov",
            "weight_decay": weight_decay,
            **kwargs,
        }
        return torch.optim.SGD(params, lr=lr, **kwargs)
    if base == "sgd":
        return torch.optim.SGD(params, lr=lr, **{"weight_decay": weight_decay, **kwargs})
    kwargs = {"betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, **kwargs}
    return torch.optim.Adam(params, lr=lr, **kwargs)


def route_knobs(components: dict[str, Component], knobs: dict[str, Any]) -> dict[str, Component]:
    """``components`` (by kind) with each flat knob applied to every one that has it."""
    per_kind: dict[str, dict[str, Any]] = {kind: {} for kind in components}
    for key, value in knobs.items():
        owners = [k for k in components if key in components[k].knobs()]
        if not owners:
            accepted = sorted({n for c in components.values() for n in c.knobs()})
            in_use = ", ".join(type(c).__name__ for c in components.values())
            raise ValueError(
                f"NCEscape: unknown knob {key}={value!r} for the components in use ({in_use}); "
                f"accepted: {', '.join(accepted)}"
            )
        for owner in owners:
            per_kind[owner][key] = value
    return {
        kind: comp.replace(**per_kind[kind]) if per_kind[kind] else comp
        for kind, comp in components.items()
    }
