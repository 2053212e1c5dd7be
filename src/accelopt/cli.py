"""A config that does not fit its schema, at the command line: one line, exit status 2, before any
work starts (``python -m accelopt.train`` and ``accelopt.eval``; a single run, and every point of a
``-m`` sweep before its first job).

Hydra reports an error in composing a config itself (several lines, exit status 1), unless the
environment variable ``HYDRA_FULL_ERROR=1`` asks it to raise the error instead (Hydra's documented
switch). :func:`refuse_bad_config`, a decorator over ``@hydra.main``, sets it while Hydra composes,
turns a schema error (a wrong type, an unknown key: :func:`refusal`) into one line and exit status
2, and reports any other error as Hydra would. :class:`ComposeCheck`, a Hydra callback
(``hydra.callbacks.compose_check`` in ``conf/train.yaml`` and ``conf/eval.yaml``), runs once the
config is composed: it puts ``HYDRA_FULL_ERROR`` back as it was (a job's errors are reported as
Hydra reports them), runs :func:`accelopt.schema.check_composed`, and for ``-m`` composes one job
per value of every enumerable sweep (the other sweeps at their first value: each is a job of the
sweep) before Hydra starts the first.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import CompactHydraException, ConfigCompositionException, HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from accelopt.schema import SchemaError, check_composed, invalid_value

__all__ = ["ComposeCheck", "refusal", "refuse_bad_config", "sweep_points"]

FULL_ERROR = "HYDRA_FULL_ERROR"
_saved: list[str | None] = []  # the user's HYDRA_FULL_ERROR while refuse_bad_config runs Hydra
F = TypeVar("F", bound=Callable[..., Any])


def refusal(err: BaseException) -> str | None:
    """The one line for a config that does not fit its schema (``err`` raised by Hydra's compose
    or :func:`~accelopt.schema.check_composed`), or None for any other error."""
    if isinstance(err, SchemaError):
        return str(err)
    cause = err.__cause__ if isinstance(err, ConfigCompositionException) else None
    if isinstance(cause, ValidationError):
        return invalid_value(cause)
    if isinstance(cause, ConfigKeyError | ConfigAttributeError):
        return _unknown_key(cause)
    return None


def _unknown_key(err: ConfigKeyError | ConfigAttributeError) -> str:
    key = str(err.full_key)
    parent = key.rsplit(".", 1)[0] if "." in key else None
    node = err.parent_node
    known = [str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(str(err.key), known, n=1)
    where = f"of {parent}" if parent else "of the config"
    if close:
        near = f"{parent}.{close[0]}" if parent else close[0]
        return f"{key} is not a key {where} (did you mean {near}?)."
    keys = f"its keys: {', '.join(known)}; " if known else ""
    return f"{key} is not a key {where} ({keys}a new key is added with +{key}=<value>)."


def _exit(prog: str, line: str) -> NoReturn:
    print(f"{prog}: error: {line}", file=sys.stderr, flush=True)
    sys.exit(2)


def _report_as_hydra(err: BaseException) -> NoReturn:
    """Print a Hydra error as Hydra does without HYDRA_FULL_ERROR (its message and OmegaConf's
    cause) and exit with Hydra's status 1."""
    sys.stderr.write(str(err) + os.linesep)
    if isinstance(err.__cause__, OmegaConfBaseException):
        sys.stderr.write(str(err.__cause__) + os.linesep)
    sys.exit(1)


def restore_hydra_errors() -> None:
    """Put ``HYDRA_FULL_ERROR`` back as the user had it (once the config is composed)."""
    while _saved:
        value = _saved.pop()
        if value is None:
            os.environ.pop(FULL_ERROR, None)
        else:
            os.environ[FULL_ERROR] = value


def refuse_bad_config(prog: str) -> Callable[[F], F]:
    """Decorate a ``@hydra.main`` function: a config that does not fit its schema is one line,
    ``<prog>: error: ...``, and exit status 2 (see the module docstring)."""

    def decorate(hydra_main: F) -> F:
        @functools.wraps(hydra_main)
        def main(*args: Any, **kwargs: Any) -> Any:
            if args or kwargs:  # called with a config: Hydra runs the function as it is
                return hydra_main(*args, **kwargs)
            user = os.environ.get(FULL_ERROR)
            _saved.append(user)
            os.environ[FULL_ERROR] = "1"
            try:
                return hydra_main()
            except Exception as err:  # noqa: BLE001 - raised by Hydra only while composing
                line = refusal(err)
                if line is not None:
                    _exit(prog, line)
                if user == "1" or not isinstance(err, CompactHydraException):
                    raise
                _report_as_hydra(err)
            finally:
                restore_hydra_errors()

        return main  # type: ignore[return-value]

    return decorate


def sweep_points(config: DictConfig) -> list[list[str]]:
    """The overrides of the sweep's jobs that, together, give every value of every enumerable
    sweep (``hydra.sweeper.params``, then the command line's: the later one wins, as Hydra's basic
    sweeper does): the first values of all, then each other value with the rest at their first.
    Intervals (Optuna's ``interval(...)``) are left out. Empty without a sweep."""
    hydra = GlobalHydra.instance()
    loader = hydra.config_loader() if hydra.is_initialized() else None  # for glob(...) sweeps
    parser = OverridesParser.create(config_loader=loader)
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    fixed: dict[str, str] = {}
    sweeps: dict[str, list[str]] = {}
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        fixed.pop(key, None)
        sweeps.pop(key, None)
        if not override.is_sweep_override():
            fixed[key] = f"{key}={override.get_value_element_as_str()}"
        elif override.is_discrete_sweep():
            sweeps[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
    if not sweeps:
        return []
    first = {k: v[0] for k, v in sweeps.items() if v}
    points = [[*fixed.values(), *first.values()]]
    for key, values in sweeps.items():
        for value in values[1:]:
            points.append([*fixed.values(), *{**first, key: value}.values()])
    return points


class ComposeCheck(Callback):
    """Hydra callback: the checks of a composed config that Hydra's merge cannot do, and for
    ``-m`` every sweep value composed before the first job (see the module docstring)."""

    def __init__(self, prog: str = "accelopt") -> None:
        self.prog = prog

    def _check(self, cfg: DictConfig) -> None:
        try:
            check_composed(cfg)
        except SchemaError as err:
            _exit(self.prog, str(err))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        restore_hydra_errors()
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        restore_hydra_errors()
        self._check(config)
        try:
            points = sweep_points(config)
        except HydraException:  # a sweep Hydra's own sweeper will refuse with its message
            return
        name = config.hydra.job.config_name
        for overrides in points:
            try:
                job = compose(name, overrides=overrides)
            except Exception as err:  # noqa: BLE001 - the error this job would meet
                line = refusal(err)
                if line is not None:
                    _exit(self.prog, line)
                if isinstance(err, CompactHydraException):
                    _report_as_hydra(err)
                return  # not Hydra's: the job meets it and reports it
            self._check(job)
