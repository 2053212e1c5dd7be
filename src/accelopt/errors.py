"""The project's one error type for bad input, in a module of its own (standard library only), so
that every layer can raise it without importing :mod:`accelopt.config` (no import cycle)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A config value is invalid; the message names it and says what is accepted."""
