"""GOSE, ANCM and Combined: named compositions of :class:`accelopt.optim.NCEscape`.

Each has three variants, all with their values from :mod:`accelopt.optim.presets` (the one
source): ``variant="improved"`` (the default) is the project's method; ``variant="original"``
reproduces the code of the 2019 study, quirks included; ``variant="random"`` is the improved
preset's random-direction control. A variant only chooses defaults: any :class:`NCEscape`
keyword (a component, ``schedule``, or a flat knob such as ``every=10``) overrides them.

The report's components (``original``): the gradient norm averaged over 8 fresh batches of 128 below
1e-3 (:class:`GradNormCheck`); the variance-reduced power iteration (E = 2, m = 8, step 0.5, λ = 5,
batches of 8; found iff vᵀHv < 0: :class:`VRPower`); θ ← θ − 0.5·sign(⟨g₀, v⟩)·v with g₀ from
64 samples, no acceptance test (:class:`FixedStep`); momentum untouched.

The project's components (``improved``; docs/benchmarks.md):

- :class:`NoiseCheck` (ratio 1): after the first ~25 steps SGD on MNIST is noise-dominated, so
  the check fires at almost every scheduled check: the cadence ``every`` sets the cost.
- :class:`Lanczos` warm-started on one probe batch of **256**, ≤ **10** HVPs, ``eps_h = 0.2``.
- Verification (``Schedule.verify_batch = 256``): a direction is used only if vᵀHv < −ε_H/2 on an
  independent batch; its sign and the acceptance test come from further fresh batches.
- :class:`CarmonStep`: α = min(2|λ|/L₂, **0.3**) with L₂ = 1 and the acceptance test (3 halvings).
- ``every = 500``: one phase per MNIST epoch: 5.9–9.6 % of the training time measured (MNIST
  grid, seed 2, all four learning rates; docs/results.md, "Cost, now").

The control (``random``): the improved preset's base, check and schedule without verification (a
random direction's curvature is ≈ 0), :class:`RandomDirection` on the search batch's size, and a
:class:`FixedStep` of the improved cap (0.3, reached whenever λ ≤ −0.15) with the improved step
rule's sign rule and acceptance test (its halvings) on fresh batches of the search batch's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from accelopt.optim.check import GradNormCheck, NoiseCheck
from accelopt.optim.nc import NCEscape
from accelopt.optim.presets import (
    IMPROVED_ANCM,
    IMPROVED_EVERY,
    IMPROVED_SEARCH,
    IMPROVED_STEP,
    IMPROVED_VERIFY,
    MOMENTUM,
    REPORT_EVERY,
)
from accelopt.optim.schedule import Schedule
from accelopt.optim.search import Lanczos, RandomDirection, VRPower
from accelopt.optim.step import CarmonStep, FixedStep

__all__ = ["ANCM", "GOSE", "VARIANTS", "Combined"]

VARIANTS = ("improved", "original", "random")
# keywords for which None means "the variant's value" (the Hydra yamls' override slots)
SLOTS = (
    "check",
    "search",
    "step",
    "schedule",
    "cadence",
    "every",
    "hvp_method",
    "heldout_batch",
    "verify_batch",
)
# slots that 0 turns off (None keeps the variant's value), e.g. optimizer.verify_batch=0
OFF_AT_ZERO = ("verify_batch", "heldout_batch")
Table = dict[str, Callable[[], dict[str, Any]]]


def _original(base: str, method: str, timing: str) -> dict[str, Any]:
    return {
        "base": base,
        "momentum": MOMENTUM,
        "check": GradNormCheck(),
        "search": VRPower(),
        "step": FixedStep(),
        "schedule": Schedule(every=REPORT_EVERY[method], timing=timing),
    }


def _improved(base: str, timing: str, **schedule: Any) -> dict[str, Any]:
    return {
        "base": base,
        "momentum": MOMENTUM,
        "check": NoiseCheck(),
        "search": Lanczos(**IMPROVED_SEARCH),
        "step": CarmonStep(**IMPROVED_STEP),
        "schedule": Schedule(
            every=IMPROVED_EVERY, timing=timing, verify_batch=IMPROVED_VERIFY, **schedule
        ),
    }


def _random(base: str, timing: str, **schedule: Any) -> dict[str, Any]:
    """The improved preset with a random direction, stepped like the improved preset's steps."""
    out = _improved(base, timing, **schedule)
    improved_step, size = out["step"], IMPROVED_SEARCH["search_batch"]
    out["search"] = RandomDirection(search_batch=size)
    out["step"] = FixedStep(
        length=improved_step.max_length,
        sign_batch=size,
        accept=improved_step.accept,
        backtracks=improved_step.backtracks,
        accept_batch=size,
    )
    out["schedule"] = dataclasses.replace(out["schedule"], verify_batch=None)
    return out


def _table(base: str, method: str, timing: str, **schedule: Any) -> Table:
    return {
        "original": lambda: _original(base, method, timing),
        "improved": lambda: _improved(base, timing, **schedule),
        "random": lambda: _random(base, timing, **schedule),
    }


class _Preset(NCEscape):
    """A named NCEscape composition: ``TABLE[variant]()`` gives the keywords; explicit ones win."""

    TABLE: Table = {}

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | None = None,
        lr: float = 0.02,
        *,
        variant: str = "improved",
        **overrides: Any,
    ) -> None:
        if variant not in self.TABLE:
            raise ValueError(
                f"{type(self).__name__}: unknown variant={variant!r}; accepted: "
                f"{', '.join(map(repr, VARIANTS))}"
            )
        given = {
            k: None if (k in OFF_AT_ZERO and v == 0) else v
            for k, v in overrides.items()
            if not (v is None and k in SLOTS)
        }
        super().__init__(params, lr, **{**self.TABLE[variant](), **given})
        self.variant = variant


class GOSE(_Preset):
    r"""GOSE: heavy-ball SGD with a negative-curvature escape checked every ``K`` steps.

    .. math::
        \begin{aligned}
            &b_{t+1} = \mu b_t + g_t, \qquad \theta_{t+1} = \theta_t - \gamma b_{t+1}
                \qquad (\text{torch.optim.SGD}(\text{momentum}=\mu)) \\
            &\textbf{if } k \bmod K = 0: \text{check}(\theta_{t+1}) \Rightarrow
                (\lambda, v) = \text{search}(\theta_{t+1}) \Rightarrow
                \theta_{t+1} \leftarrow \theta_{t+1} - \alpha\,\operatorname{sign}(\langle g_S,
                v\rangle)\, v \ \text{ if } \lambda \le -\epsilon_H/2
        \end{aligned}

    - ``variant="original"`` (the report): ``K = 16`` on the step index within the epoch (30 checks
      per MNIST epoch of 469 steps), ``GradNormCheck``, ``VRPower``, ``FixedStep`` (α = 0.5, ``g_S``
      from 64 samples), momentum untouched.
    - ``variant="improved"`` (default): ``K = 500``, ``NoiseCheck``, ``Lanczos`` (≤ 10 HVPs on 256
      samples, ``ε_H = 0.2``) verified on 256 fresh samples, ``CarmonStep``
      (``α = min(2|λ|/L₂, 0.3)``, acceptance test on a fresh batch). On
      MNIST (batch 128) one phase per epoch, 5.9–9.6 % of the training time (6-epoch grid; ≈ 3–5 %
      in the 2-epoch validation runs); in 2 epochs × 2 seeds
      its one direction per run failed verification (no NC step: the trajectory of heavy ball).

    μ = ``momentum`` (0.9), γ = ``lr``.
    """

    TABLE: Table = _table("heavyball", "gose", "after")


class Combined(_Preset):
    r"""GOSE's schedule on a Nesterov base (the report's "combined" GOSE + ANCM).

    .. math::
        \begin{aligned}
            &b_{t+1} = \mu b_t + g_t, \qquad
                \theta_{t+1} = \theta_t - \gamma (g_t + \mu b_{t+1})
                \qquad (\text{torch.optim.SGD}(\text{momentum}=\mu, \text{nesterov=True})) \\
            &\textbf{if } k \bmod K = 0: \text{check} \Rightarrow \text{search} \Rightarrow
                \text{NC step, exactly as } \text{GOSE}
        \end{aligned}

    Variants as :class:`GOSE`.
    """

    TABLE: Table = _table("nesterov", "combined", "after")


class ANCM(_Preset):
    r"""ANCM: Nesterov's method with a negative-curvature phase *before* the step.

    .. math::
        \begin{aligned}
            &\textbf{if } k \bmod K = 0: \text{NC phase at } \theta_t
                \ (\text{repeat (re-)check, search, NC step while } \lambda \le -\epsilon_H/2,
                \text{ at most } n_{NC} \text{ times}),\ \hat\theta \leftarrow \theta_t \\
            &g_t = \nabla f_{B_t}(\theta_t) + 2\gamma_{\text{prox}}(\theta_t - \hat\theta) \\
            &b_{t+1} = \mu b_t + g_t, \qquad
                \theta_{t+1} = \theta_t - \gamma (g_t + \mu b_{t+1})
        \end{aligned}

    - ``variant="improved"`` (default; Carmon, Duchi, Hinder & Sidford's shape): every
      ``K = 500`` steps, when the noise check fires, repeat Lanczos and ``CarmonStep`` NC steps
      until no direction is found, a step is rejected or the re-check before the next round fails
      (``n_NC ≤ 2``), reset the momentum if the parameters moved, then run Nesterov on the
      almost-convex objective ``f(θ) + γ_prox‖θ − θ̂‖²`` re-anchored at ``θ̂``
      (``γ_prox = 0.01``: ``H + 2γ_prox I ⪰ 0`` iff ``λ_min ≥ −0.02``; chosen on validation
      accuracy: with the first value ε_H/4 = 0.05, which convexifies down to −ε_H/2, the pull
      towards θ̂ cost 0.5 validation points against Nesterov on MNIST in 2 of 2 seeds, with 0.01
      0.1–0.4). While the check does not fire there is no anchor and the update is plain Nesterov.
    - ``variant="original"`` (the report): the gradient-norm check before *every* step (``K = 1``),
      ``VRPower``, ``FixedStep``, no proximal term.
    """

    TABLE: Table = _table("nesterov", "ancm", "before", **IMPROVED_ANCM)
