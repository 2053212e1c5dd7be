"""Hessian-vector products, negative-curvature searches and NC step rules (torch only)."""

from .hvp import HessianOperator, flat_grad, flatten, trainable_mask, unflatten_like
from .search import SearchResult, lanczos, neon2, seed_power
from .step import NCStep, orient, step_length, take_nc_step

__all__ = [
    "HessianOperator",
    "NCStep",
    "SearchResult",
    "flat_grad",
    "flatten",
    "lanczos",
    "neon2",
    "orient",
    "seed_power",
    "step_length",
    "take_nc_step",
    "trainable_mask",
    "unflatten_like",
]
