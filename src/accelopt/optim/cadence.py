"""When an NC phase is due, as a component of its own: :class:`Cadence` and :class:`Plateau`.

Without a cadence, :class:`~accelopt.optim.NCEscape` uses its schedule's (a phase at every step
``k`` with ``k % every == 0``). A cadence replaces that rule and nothing else: the schedule's
``timing``, rounds, judgements and anchor stay as they are. The optimizer calls
:meth:`Cadence.due` before every base step (``k``: the step index within the epoch, or the
optimizer's own count) and :meth:`Cadence.observe` after it with the minibatch loss. A new rule is
one subclass with a ``name`` (registered: ``NCEscape(cadence="<name>")``) plus one yaml in
``conf/optimizer/cadence/``; :class:`Plateau` is the worked example of docs/optimizers.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from accelopt.checks import count, positive
from accelopt.optim.component import Component, Context

__all__ = ["Cadence", "Plateau"]


class Cadence(Component):
    """When an NC phase is due (a component of ``NCEscape``)."""

    kind: ClassVar[str] = "cadence"

    def due(self, ctx: Context, k: int) -> bool:
        """Whether an NC phase runs at step ``k``."""
        raise NotImplementedError

    def observe(self, ctx: Context, loss: Tensor) -> None:
        """See the (detached) minibatch loss of every base step; the default ignores it."""


# --8<-- [start:plateau]
@dataclass
class Plateau(Cadence):
    """Due when the training loss has stopped falling: the mean minibatch loss of the last
    ``window`` steps is above ``rel`` times that of the ``window`` steps before them. After a
    phase it waits for two fresh windows."""

    name: ClassVar[str] = "plateau"
    window: int = 50
    rel: float = 0.99
    losses: list[float] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        count("Plateau", "window", self.window, minimum=1)
        positive("Plateau", "rel", self.rel)

    def observe(self, ctx: Context, loss: Tensor) -> None:
        self.losses = [*self.losses, float(loss)][-2 * self.window :]

    def due(self, ctx: Context, k: int) -> bool:
        if len(self.losses) < 2 * self.window:
            return False
        before, last = self.losses[: self.window], self.losses[self.window :]
        if sum(last) < self.rel * sum(before):
            return False  # still falling
        self.losses = []
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state: dict[str, Any], like: Tensor | None = None) -> None:
        self.losses = [float(x) for x in state["losses"]]


# --8<-- [end:plateau]
