"""Signum (Bernstein et al. 2018): SGD that steps along the sign of its momentum."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer


class Signum(Optimizer):
    """m ← β m + (1 − β) g;  θ ← θ − γ sign(m)   (m starts at 0; β = 0 is signSGD).

    Every coordinate moves by exactly γ (or 0 where m is 0) per step, whatever the gradient's
    scale. ``lr`` is γ > 0, ``momentum`` is β in [0, 1).
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, momentum: float = 0.9) -> None:
        if not lr > 0:
            raise ValueError(f"Signum lr={lr!r} is invalid: it must be > 0.")
        if not 0 <= momentum < 1:
            raise ValueError(f"Signum momentum={momentum!r} is invalid: it must be in [0, 1).")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:  # an average of gradients, as Adam's m (SGD's differs)
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                m.mul_(beta).add_(p.grad, alpha=1 - beta)
                p.add_(torch.sign(m), alpha=-group["lr"])
        return loss
