"""The one source of every preset value: the report's (``original``) and ours (``improved``).

Torch-free constants, imported by the components whose defaults are the report's values
(:class:`~accelopt.optim.check.GradNormCheck`, :class:`~accelopt.optim.search.VRPower`,
:class:`~accelopt.optim.step.FixedStep`) and by the named compositions
(:mod:`accelopt.optim.methods`: ``GOSE``, ``ANCM``, ``Combined``, their variants and the
random-direction control). The Hydra yamls only select a preset and its variant.

The report: Zhiping (Patricia) Xiao, "Accelerated Optimization Methods on Convolutional Neural
Networks", ECE236C course project report, UCLA, June 2019; code: GitHub
PatriciaXiao/AcceleratedSGDMethods. The improved values were chosen on held-out data with the
report's CNN on real MNIST, batch 128, lr 0.02 (docs/benchmarks.md, "Is the negative curvature
real?"): Lanczos directions of 64-sample batches had positive held-out curvature in 13 of 16
cases, those of 256-sample batches negative in 16 of 16; 10 HVPs did as well as 20; α = 0.5
raised the held-out loss, α ≤ 0.3 lowered it (b = 256: 4 of 4 reps at steps 200 and 1,000). Each
direction is verified on an independent 256-sample batch. Such a phase costs about 45 training
steps, hence the cadence of 500 (one phase per MNIST epoch of 469 steps).
"""

from __future__ import annotations

__all__ = [
    "IMPROVED_ANCM",
    "IMPROVED_EVERY",
    "IMPROVED_SEARCH",
    "IMPROVED_STEP",
    "IMPROVED_VERIFY",
    "MOMENTUM",
    "REPORT_CHECK",
    "REPORT_EVERY",
    "REPORT_POWER",
    "REPORT_STEP",
]

MOMENTUM = 0.9  # every preset's base (heavy ball or Nesterov)

# -- the report's code (variant "original") ----------------------------------------------------
# the check: ‖mean of 8 probe gradients of 128 samples‖ < 1e-3 (GradNormCheck)
REPORT_CHECK = {"batches": 8, "batch_size": 128, "threshold": 1e-3}
# the variance-reduced power iteration: E = 2, m = 8, step 0.5, λ = 5, batches of 8 (VRPower)
REPORT_POWER = {"outer": 2, "inner": 8, "step": 0.5, "lam": 5.0, "batch": 8}
# θ ← θ − 0.5·sign(⟨g₀, v⟩)·v with g₀ from 64 samples, no acceptance test (FixedStep)
REPORT_STEP = {"length": 0.5, "sign_batch": 64}
# the cadence on the step index within the epoch: GOSE / Combined every 16, ANCM every step
REPORT_EVERY = {"gose": 16, "combined": 16, "ancm": 1}

# -- the project's method (variant "improved"; its random control reuses these) ---------------
IMPROVED_SEARCH = {"search_batch": 256, "max_hvps": 10, "eps_h": 0.2}  # Lanczos
IMPROVED_STEP = {"max_length": 0.3}  # CarmonStep: α = min(2|λ|, 0.3), acceptance test
IMPROVED_EVERY = 500
IMPROVED_VERIFY = 256  # Schedule.verify_batch
# ANCM: ≤ 2 rounds, momentum reset, γ_prox = 0.01 (chosen on validation accuracy: with ε_H/4 =
# 0.05 the pull towards θ̂ cost 0.5 validation points against Nesterov on MNIST in 2 of 2 seeds)
IMPROVED_ANCM = {"max_nc_steps": 2, "reset_momentum": True, "prox": 0.01}
