"""GOSE, ANCM and Combined: named settings of :class:`accelopt.optim.NCEscape`.

Each preset has two variants. ``variant="improved"`` (the default) is the project's method;
``variant="seed"`` reproduces the report's code (DESIGN.md §3's table, quirks included). A variant
only chooses defaults: any :class:`NCEscape` keyword given explicitly overrides them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor

from accelopt.optim.nc import NCEscape

__all__ = ["ANCM", "GOSE", "Combined", "VARIANTS"]

VARIANTS = ("improved", "seed")

# The report's check, search and NC step (DESIGN.md §3): the gradient norm averaged over 8 fresh
# batches of 128 below 1e-3; the variance-reduced power iteration (E = 2, m = 8, step 0.5,
# λ = 5, batches of 8; vᵀHv < 0); θ ← θ − 0.5·sign(⟨g₀, v⟩)·v with g₀ from 64 samples, momentum
# untouched, no acceptance test.
_SEED_COMMON: dict[str, Any] = {
    "momentum": 0.9,
    "check": "seed",
    "check_batches": 8,
    "check_batch_size": 128,
    "check_threshold": 1e-3,
    "search": "seed_power",
    "power_outer": 2,
    "power_inner": 8,
    "power_step": 0.5,
    "power_lam": 5.0,
    "power_batch": 8,
    "eps_h": 0.0,
    "nc_step": "fixed",
    "nc_length": 0.5,
    "sign_batch": 64,
    "accept": False,
    "backtracks": 0,
    "reset_momentum": False,
    "max_nc_steps": 1,
    "prox": 0.0,
}

# The project's defaults: the free noise-relative check, warm-started Lanczos on one probe batch of
# 64 with early exit (≤ 20 HVPs), a step of 2|λ|/L₂ (capped at the report's 0.5) with the
# acceptance test (and backtracking) on the search batch.
#
# Why these values (measured on real MNIST with the report's CNN, batch 128, lr 0.02; see
# docs/benchmarks.md, "NC optimizers (issue 4)"):
# - check_ratio 1: after the first ~25 steps SGD on MNIST is noise-dominated (the window's
#   ‖∇f‖² estimate is ≈ 0 or negative against a one-minibatch noise σ̂² ≈ 0.4–3), so the check
#   fires at almost every scheduled check: the cadence ``every`` is what sets the cost.
# - eps_h 0.2: Lanczos exits as soon as its Ritz value is ≤ −0.1. DESIGN.md §4a measured
#   |λ_min| ≈ 0.24–0.47 (batch 1,024, 1–6 epochs; more negative on 64-sample batches) against
#   λ_max ≈ 6.5–17, so −0.1 is a direction of real negative curvature (a fifth to a half of
#   |λ_min|), found from the warm start in 3–4 HVPs. The former 0.05 (exit at −0.025, 5–10 % of
#   |λ_min|) accepted nearly flat directions and took NC steps of 2|λ| ≈ 0.05–0.1.
# - max_length 0.5: early in training λ_min is −3 to −4 (§4a, steps 0–50) and 2|λ|/L₂ with the
#   unknown L₂ = 1 would step 6–8; the cap is the report's own NC step length.
_IMPROVED_COMMON: dict[str, Any] = {
    "momentum": 0.9,
    "check": "noise",
    "check_ratio": 1.0,
    "check_tol": 0.0,
    "search": "lanczos",
    "search_batch": 64,
    "max_hvps": 20,
    "eps_h": 0.2,
    "nc_step": "carmon",
    "l2": 1.0,
    "max_length": 0.5,
    "sign_batch": None,
    "accept": True,
    "backtracks": 3,
}


def _knobs(
    name: str, variant: str, table: dict[str, dict[str, Any]], given: dict[str, Any]
) -> dict[str, Any]:
    if variant not in table:
        raise ValueError(
            f"{name}: unknown variant={variant!r}; accepted: {', '.join(map(repr, VARIANTS))}"
        )
    return {**table[variant], **given}


class _Preset(NCEscape):
    """A named NCEscape setting: ``TABLE[variant]`` gives the knobs; explicit knobs override."""

    TABLE: dict[str, dict[str, Any]] = {}

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        *,
        variant: str = "improved",
        **knobs: Any,
    ) -> None:
        super().__init__(params, lr, **_knobs(type(self).__name__, variant, self.TABLE, knobs))
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
                v\rangle)\, v \ \text{ if } \lambda \le -\epsilon_H
        \end{aligned}

    - ``variant="seed"`` (the report): ``K = 16`` on the step index within the epoch (30 checks
      per MNIST epoch of 469 steps), the 8×128-sample gradient-norm check (< 1e-3),
      ``seed_power``, ``α = 0.5`` with ``g_S`` from 64 samples, momentum untouched.
    - ``variant="improved"`` (default): ``K = 50``, the free noise-relative check, warm-started
      Lanczos (≤ 20 HVPs on 64 samples, ``ε_H = 0.2``), ``α = min(2|λ|/L₂, 0.5)`` with the
      acceptance test. On MNIST (batch 128) about 9 searches per epoch of 3–4 HVPs each, ≈ 5 % of
      the training time.

    μ = ``momentum`` (0.9), γ = ``lr``. Every other :class:`NCEscape` keyword overrides the
    variant's value.
    """

    TABLE: dict[str, dict[str, Any]] = {
        "seed": {**_SEED_COMMON, "base": "heavyball", "timing": "after", "every": 16},
        "improved": {
            **_IMPROVED_COMMON,
            "base": "heavyball",
            "timing": "after",
            "every": 50,
            "max_nc_steps": 1,
            "reset_momentum": False,
            "prox": 0.0,
        },
    }


class Combined(GOSE):
    r"""GOSE's schedule on a Nesterov base (the report's "combined" GOSE + ANCM).

    .. math::
        \begin{aligned}
            &b_{t+1} = \mu b_t + g_t, \qquad
                \theta_{t+1} = \theta_t - \gamma (g_t + \mu b_{t+1})
                \qquad (\text{torch.optim.SGD}(\text{momentum}=\mu, \text{nesterov=True})) \\
            &\textbf{if } k \bmod K = 0: \text{check} \Rightarrow \text{search} \Rightarrow
                \text{NC step, exactly as } \text{GOSE}
        \end{aligned}

    Variants as :class:`GOSE` (``"seed"``: K = 16, the report's check / search / step;
    ``"improved"``: K = 50, noise check, Lanczos, curvature-scaled step with acceptance test).
    """

    TABLE: dict[str, dict[str, Any]] = {
        name: {**knobs, "base": "nesterov"} for name, knobs in GOSE.TABLE.items()
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
      ``K = 32`` steps, when the free noise-relative check fires, repeat warm-started Lanczos and
      ``min(2|λ|/L₂, 0.5)`` NC steps (acceptance-tested) until no direction is found, a step is
      rejected or the re-check before the next round fails (``n_NC ≤ 3``), reset
      the momentum if the parameters moved, then run Nesterov on the almost-convex objective
      ``f(θ) + γ_prox‖θ − θ̂‖²`` re-anchored at ``θ̂`` (``γ_prox = ε_H/4 = 0.05``: the smallest
      weight that makes it convex once no direction below ``−ε_H/2`` is left, since
      ``H + 2γ_prox I ⪰ 0`` iff ``λ_min ≥ −2γ_prox``). While the check
      does not fire there is no anchor and the update is plain Nesterov.
    - ``variant="seed"`` (the report): the 8×128-sample gradient-norm check before *every* step
      (``K = 1``), ``seed_power``, ``α = 0.5`` with ``g_S`` from 64 samples, no proximal term.
    """

    TABLE: dict[str, dict[str, Any]] = {
        "seed": {**_SEED_COMMON, "base": "nesterov", "timing": "before", "every": 1},
        "improved": {
            **_IMPROVED_COMMON,
            "base": "nesterov",
            "timing": "before",
            "every": 32,
            "max_nc_steps": 3,
            "reset_momentum": True,
            "prox": 0.05,
        },
    }
