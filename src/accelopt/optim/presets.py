"""GOSE, ANCM and Combined: named compositions of :class:`accelopt.optim.NCEscape`.

This module is the one source of the preset values (the Hydra yamls only select a preset and,
optionally, replace a component). Each preset has two variants: ``variant="improved"`` (the
default) is the project's method; ``variant="seed"`` reproduces the code of the 2019 study
(Zhiping (Patricia) Xiao, "Accelerated Optimization Methods on Convolutional Neural Networks",
ECE236C course project report, UCLA, June 2019; code: GitHub PatriciaXiao/AcceleratedSGDMethods),
quirks included. A variant only chooses defaults: any :class:`NCEscape` keyword (a component,
``schedule``, or a flat knob such as ``every=10``) overrides them.

The report's components (the ``seed`` variants): the gradient norm averaged over 8 fresh batches
of 128 below 1e-3 (:class:`SeedCheck`); the variance-reduced power iteration (E = 2, m = 8,
step 0.5, λ = 5, batches of 8; found iff vᵀHv < 0: :class:`SeedPower`); θ ← θ − 0.5·sign(⟨g₀,
v⟩)·v with g₀ from 64 samples, no acceptance test (:class:`FixedStep`); momentum untouched.

The project's components (the ``improved`` variants; chosen on held-out data with the report's
CNN on real MNIST, batch 128, lr 0.02; docs/benchmarks.md):

- :class:`NoiseCheck` (ratio 1): after the first ~25 steps SGD on MNIST is noise-dominated, so
  the check fires at almost every scheduled check: the cadence ``every`` sets the cost.
- :class:`Lanczos` warm-started on one probe batch of **256**, ≤ **10** HVPs, ``eps_h = 0.2`` (exit
  at a Ritz value ≤ −0.1): directions of 64-sample batches had positive held-out curvature in 13
  of 16 cases, those of 256-sample batches negative in 16 of 16; 20 HVPs did no better than 10.
- Verification (``Schedule.verify_batch = 256``): a direction is used only if vᵀHv < −ε_H/2 on an
  independent batch; its sign and the acceptance test come from further fresh batches.
- :class:`CarmonStep`: α = min(2|λ|/L₂, **0.3**) with L₂ = 1 and the acceptance test (3 halvings):
  α = 0.5 raised the held-out loss, α ≤ 0.3 lowered it (4 of 4 reps at b = 256).
- ``every = 500``: such a phase costs about 45 training steps; at MNIST's 469 steps per epoch this
  is one phase per epoch: 5.9–9.6 % of the training time measured (MNIST grid, seed 2, all four
  learning rates; docs/results.md, "Cost, now").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from accelopt.optim.check import NoiseCheck, SeedCheck
from accelopt.optim.nc import NCEscape
from accelopt.optim.schedule import Schedule
from accelopt.optim.search import Lanczos, SeedPower
from accelopt.optim.step import CarmonStep, FixedStep

__all__ = ["ANCM", "GOSE", "VARIANTS", "Combined"]

VARIANTS = ("improved", "seed")
# keywords for which None means "the variant's value" (the Hydra yamls' override slots)
SLOTS = (
    "check",
    "search",
    "step",
    "schedule",
    "every",
    "hvp_method",
    "heldout_batch",
    "verify_batch",
)
# slots that 0 turns off (None keeps the variant's value), e.g. optimizer.verify_batch=0
OFF_AT_ZERO = ("verify_batch", "heldout_batch")
Table = dict[str, Callable[[], dict[str, Any]]]


def _seed(base: str, every: int, timing: str) -> dict[str, Any]:
    return {
        "base": base,
        "momentum": 0.9,
        "check": SeedCheck(),
        "search": SeedPower(),
        "step": FixedStep(),
        "schedule": Schedule(every=every, timing=timing),
    }


# The improved variants' search and step, chosen on held-out data (docs/benchmarks.md, "Is the
# negative curvature real?"): Lanczos directions of 64-sample batches had positive held-out
# curvature in 13 of 16 cases, those of 256-sample batches negative in 16 of 16; 10 HVPs did as well
# as 20; α = 0.5 raised the held-out loss, α ≤ 0.3 lowered it (b = 256: 4 of 4 reps at steps 200 and
# 1,000). Each direction is verified on an independent 256-sample batch (sign and acceptance test
# on fresh batches too). Such a phase costs about 45 training steps, hence the cadence of 500.
IMPROVED_SEARCH = {"search_batch": 256, "max_hvps": 10, "eps_h": 0.2}
IMPROVED_STEP = {"max_length": 0.3}
IMPROVED_EVERY = 500
IMPROVED_VERIFY = 256


def _improved(base: str, schedule: Schedule) -> dict[str, Any]:
    return {
        "base": base,
        "momentum": 0.9,
        "check": NoiseCheck(),
        "search": Lanczos(**IMPROVED_SEARCH),
        "step": CarmonStep(**IMPROVED_STEP),
        "schedule": schedule,
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

    - ``variant="seed"`` (the report): ``K = 16`` on the step index within the epoch (30 checks
      per MNIST epoch of 469 steps), ``SeedCheck``, ``SeedPower``, ``FixedStep`` (α = 0.5, ``g_S``
      from 64 samples), momentum untouched.
    - ``variant="improved"`` (default): ``K = 500``, ``NoiseCheck``, ``Lanczos`` (≤ 10 HVPs on 256
      samples, ``ε_H = 0.2``) verified on 256 fresh samples, ``CarmonStep``
      (``α = min(2|λ|/L₂, 0.3)``, acceptance test on a fresh batch). On
      MNIST (batch 128) one phase per epoch, 5.9–9.6 % of the training time (6-epoch grid; ≈ 3–5 %
      in the 2-epoch validation runs); in 2 epochs × 2 seeds
      its one direction per run failed verification (no NC step: the trajectory of heavy ball).

    μ = ``momentum`` (0.9), γ = ``lr``.
    """

    TABLE: Table = {
        "seed": lambda: _seed("heavyball", 16, "after"),
        "improved": lambda: _improved(
            "heavyball",
            Schedule(every=IMPROVED_EVERY, timing="after", verify_batch=IMPROVED_VERIFY),
        ),
    }


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

    TABLE: Table = {
        "seed": lambda: _seed("nesterov", 16, "after"),
        "improved": lambda: _improved(
            "nesterov",
            Schedule(every=IMPROVED_EVERY, timing="after", verify_batch=IMPROVED_VERIFY),
        ),
    }


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
    - ``variant="seed"`` (the report): the seed check before *every* step (``K = 1``),
      ``SeedPower``, ``FixedStep``, no proximal term.
    """

    TABLE: Table = {
        "seed": lambda: _seed("nesterov", 1, "before"),
        "improved": lambda: _improved(
            "nesterov",
            Schedule(
                every=IMPROVED_EVERY,
                timing="before",
                max_nc_steps=2,
                reset_momentum=True,
                prox=0.01,
                verify_batch=IMPROVED_VERIFY,
            ),
        ),
    }
