"""When an NC phase runs, and the knobs of what it does: :class:`Schedule`.

The schedule is the phase rule's configuration: its cadence (:meth:`Schedule.due`: at step ``k``,
the step index within the epoch or the optimizer's own count, a phase is due iff
``k % every == 0``; it runs ``"after"`` the base update (GOSE, Combined) or ``"before"`` it
(ANCM)), the rounds per phase, the momentum reset, the proximal weight of ANCM's anchor
(:mod:`accelopt.optim.anchor`) and the opt-in judgements on fresh batches
(:mod:`accelopt.optim.judge`). The phase itself is :mod:`accelopt.optim.phase`.

A new cadence is one subclass with a ``name`` (registered like the other components) that
overrides :meth:`Schedule.due` and, if it needs the loss, :meth:`Schedule.observe`; see
docs/optimizers.md ("Write your own phase rule").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from accelopt.checks import choice, count, flag, positive
from accelopt.optim.component import HVP_METHODS, Component, Context

__all__ = ["TIMINGS", "Schedule"]

TIMINGS = ("after", "before")


@dataclass
class Schedule(Component):
    """Cadence ``every`` and ``timing``; rounds per phase (``max_nc_steps``, each further one
    after a re-check); ``reset_momentum`` after a phase that moved; ``prox`` (γ of ANCM's anchor,
    0: none); the judgements on fresh probe batches: ``verify_batch`` (use a direction only if
    its curvature there is < −ε_H/2) and ``heldout_batch`` (record each NC step's curvature and
    loss change there), ``None`` turning each off, with ``hvp_method`` for their HVPs."""

    kind: ClassVar[str] = "schedule"
    name: ClassVar[str] = "every"
    every: int = 50
    timing: str = "after"
    max_nc_steps: int = 1
    reset_momentum: bool = False
    prox: float = 0.0
    verify_batch: int | None = None
    heldout_batch: int | None = None
    hvp_method: str = "double_backward"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        count(owner, "every", self.every, minimum=1)
        choice(owner, "timing", self.timing, TIMINGS)
        count(owner, "max_nc_steps", self.max_nc_steps, minimum=1)
        flag(owner, "reset_momentum", self.reset_momentum)
        positive(owner, "prox", self.prox, allow_zero=True)
        self.prox = float(self.prox)
        for name in ("verify_batch", "heldout_batch"):
            if getattr(self, name) is not None:
                count(owner, name, getattr(self, name), minimum=1)
        choice(owner, "hvp_method", self.hvp_method, HVP_METHODS)

    def due(self, ctx: Context, k: int) -> bool:
        """Whether an NC phase runs at step ``k``."""
        del ctx
        return k % self.every == 0

    def observe(self, ctx: Context, loss: Tensor) -> None:
        """See the (detached) minibatch loss of every base step, after the step; the default
        ignores it."""
        del ctx, loss
