r"""ANCM's proximal anchor: :class:`Anchor`.

With weight ``γ = prox`` and an anchor ``θ̂`` set at the end of an NC phase whose check fired,
the base step's gradient gets the pull of the proximal term ``γ‖θ − θ̂‖²``:

.. math:: g_t \leftarrow g_t + 2\gamma\,(\theta_t - \hat\theta)

(ANCM's almost-convex subproblem). A phase whose check does not fire drops the anchor; with
``prox = 0`` no anchor is ever set. The anchor is the only state, saved in the optimizer's
``state_dict``.
"""

from __future__ import annotations

from torch import Tensor

from accelopt.checks import positive
from accelopt.optim.component import Context

__all__ = ["Anchor"]


class Anchor:
    """The proximal anchor ``θ̂`` of weight ``prox`` (``>= 0``; 0: never set)."""

    def __init__(self, prox: float = 0.0) -> None:
        positive("Anchor", "prox", prox, allow_zero=True)
        self.prox = float(prox)
        self.point: Tensor | None = None

    def reanchor(self, ctx: Context) -> None:
        """``θ̂ ← θ`` (only when ``prox > 0``)."""
        if self.prox > 0:
            self.point = ctx.flat_params().clone()

    def drop(self) -> None:
        self.point = None

    def pull(self, ctx: Context, grad: Tensor) -> Tensor:
        """``grad + 2·prox·(θ − θ̂)`` while an anchor is set, else ``grad`` itself."""
        if self.point is None:
            return grad
        return grad + (2.0 * self.prox) * (ctx.flat_params() - self.point)

    def state(self) -> Tensor | None:
        return None if self.point is None else self.point.clone()

    def load(self, point: Tensor | None, like: Tensor) -> None:
        self.point = None if point is None else point.detach().clone().to(like)
