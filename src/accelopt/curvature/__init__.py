"""Hessian-vector products, negative-curvature searches, NC step rules and spectral densities
(torch only)."""

from .buffers import call_keeping_buffers
from .density import SLQResult, density_on_grid, gauss_quadrature, lanczos_tridiagonal, slq
from .hvp import HessianOperator, flat_grad, flatten, trainable_mask, unflatten_like
from .power import vr_power
from .search import SearchResult, lanczos, lanczos_step, neon2
from .step import NCStep, orient, step_length, take_nc_step

__all__ = [
    "HessianOperator",
    "NCStep",
    "SLQResult",
    "SearchResult",
    "call_keeping_buffers",
    "density_on_grid",
    "flat_grad",
    "flatten",
    "gauss_quadrature",
    "lanczos",
    "lanczos_step",
    "lanczos_tridiagonal",
    "neon2",
    "orient",
    "vr_power",
    "slq",
    "step_length",
    "take_nc_step",
    "trainable_mask",
    "unflatten_like",
]
