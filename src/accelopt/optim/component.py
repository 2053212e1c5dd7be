"""What the NC components share: a registry by kind and name, the context.

The NC-escape optimizer (:class:`accelopt.optim.NCEscape`) composes components of five kinds,
each a small class that owns and validates its own knobs:

- a **check** (:class:`accelopt.optim.check.Check`): is the iterate in the small-gradient region?
- a **search** (:class:`accelopt.optim.search.Search`): a direction of negative curvature;
- a **step rule** (:class:`accelopt.optim.step.StepRule`): how far to go along it, with which
  sign, and whether to keep the step;
- the **schedule** (:class:`accelopt.optim.schedule.Schedule`): when a phase runs, and its knobs;
- optionally a **cadence** (:class:`accelopt.optim.cadence.Cadence`): a phase rule of its own.

Subclassing a kind's base class with a ``name`` registers the class under that name, so a new
check or search is one class; ``NCEscape(check="mine")`` and the ``**knobs`` keywords then find
it without any edit to the wrapper. Components are dataclasses: their fields are their knobs and
``__post_init__`` validates them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from accelopt.curvature.hvp import HessianOperator

__all__ = ["HVP_METHODS", "Batch", "Component", "Context", "Probe", "Reduce", "registry"]

HVP_METHODS = ("double_backward", "forward_over_reverse")  # accelopt.curvature.hvp's methods

Closure = Callable[[], Tensor]
Probe = Callable[[int], Closure]
Reduce = Callable[[Tensor], Tensor] | None

_REGISTRY: dict[str, dict[str, type[Component]]] = {}


class Context(Protocol):
    """What components see of the optimizer (the :class:`~accelopt.optim.NCEscape` itself).

    The only door between the components and the optimizer: a component reads and writes these
    public members and nothing else of the optimizer or of another component. ``direction`` is
    the warm start of the next search (the vector behind the last λ); ``n_steps`` the number of
    base steps taken; ``nc_log`` one dict per NC step kept.
    """

    reduce: Reduce
    module: torch.nn.Module | None
    counters: dict[str, float]
    direction: Tensor | None
    generator: torch.Generator
    nc_log: list[dict[str, Any]]
    n_steps: int

    def params(self) -> list[Tensor]: ...

    def flat_params(self) -> Tensor: ...

    def zero_momentum(self) -> None: ...


@dataclass
class Batch:
    """A reference batch at the current θ: its closure, loss, gradient and (Lanczos) operator."""

    closure: Closure
    loss: Tensor
    grad: Tensor
    op: HessianOperator | None = None


class Component:
    """Base of every component kind; subclasses with a ``name`` are registered under ``kind``."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name and "name" in cls.__dict__:
            _REGISTRY.setdefault(cls.kind, {})[cls.name] = cls

    def knobs(self) -> tuple[str, ...]:
        """The names of this component's knobs (its dataclass fields)."""
        return (
            tuple(f.name for f in dataclasses.fields(self))
            if dataclasses.is_dataclass(self)
            else ()
        )

    def replace(self, **knobs: Any) -> Component:
        """A copy with some knobs changed (validated again)."""
        return dataclasses.replace(self, **knobs)  # type: ignore[type-var]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], like: Tensor | None = None) -> None:
        del state, like


def registry(kind: str) -> dict[str, type[Component]]:
    """The registered components of ``kind`` (``"check"``, ``"search"``, ``"step"``,
    ``"schedule"``, ``"cadence"``) by name."""
    return dict(_REGISTRY.get(kind, {}))


def build(kind: str, spec: Any, base: type) -> Component:
    """A component from an instance (kept) or a registered name (built with its defaults)."""
    if isinstance(spec, base):
        return spec  # type: ignore[return-value]
    names = registry(kind)
    if isinstance(spec, str) and spec in names:
        return names[spec]()
    raise ValueError(
        f"unknown {kind}={spec!r}; accepted: {', '.join(map(repr, sorted(names)))} "
        f"or a {base.__name__} instance"
    )
