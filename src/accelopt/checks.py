"""The value checks that types cannot express, in one place (standard library only).

Python counts ``True`` as the integer 1, so every check here refuses a bool where a number is
asked for: ``lr=true`` or ``every=false`` is a mistake, not 1 or 0.

- Predicates (:func:`is_int`, :func:`is_number`, :func:`is_finite`, :func:`is_momentum`, ...)
  answer whether a value is acceptable; the caller raises its own one-line error naming the
  config key (:class:`accelopt.errors.ConfigError` before a run starts).
- Knob checkers (:func:`positive`, :func:`count`, :func:`choice`, :func:`flag`) raise
  ``ValueError("<owner>: invalid <knob>=<value>; accepted: ...")``, as the constructors of the
  optimizers, their components and the callbacks do.

Importable from every layer, ``accelopt.optim`` and ``accelopt.curvature`` included (no torch).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MEMORY_FORMATS",
    "choice",
    "count",
    "flag",
    "is_finite",
    "is_instance",
    "is_int",
    "is_momentum",
    "is_number",
    "positive",
]

# the tensor layouts a run may train in (``hardware.memory_format``)
MEMORY_FORMATS = ("contiguous", "channels_last")


def is_instance(x: Any, kinds: type | tuple[type, ...]) -> bool:
    """``isinstance(x, kinds)``, except that a bool is never an int (nor a number)."""
    return isinstance(x, kinds) and not isinstance(x, bool)


def is_int(x: Any) -> bool:
    """An integer, not a bool."""
    return is_instance(x, int)


def is_number(x: Any) -> bool:
    """An int or a float (NaN and infinities included), not a bool."""
    return is_instance(x, (int, float))


def is_finite(x: Any) -> bool:
    """A finite int or float, not a bool."""
    return is_number(x) and math.isfinite(x)


def is_momentum(x: Any) -> bool:
    """A momentum coefficient: a number in [0, 1) (at 1 or more it never forgets a gradient)."""
    return is_number(x) and 0 <= x < 1


def positive(owner: str, name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number > 0 (>= 0 with ``allow_zero``)."""
    if not (is_finite(value) and (value >= 0 if allow_zero else value > 0)):
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}: invalid {name}={value!r}; accepted: a finite number {need}")


def count(owner: str, name: str, value: Any, *, minimum: int) -> None:
    """Refuse ``value`` unless it is an integer >= ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{owner}: invalid {name}={value!r}; accepted: an integer >= {minimum}")


def choice(owner: str, name: str, value: Any, accepted: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(
            f"{owner}: unknown {name}={value!r}; accepted: {', '.join(map(repr, accepted))}"
        )


def flag(owner: str, name: str, value: Any) -> None:
    """Refuse ``value`` unless it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: invalid {name}={value!r}; accepted: true or false")
