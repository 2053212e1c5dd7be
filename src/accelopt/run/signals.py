"""Ctrl+C during a run: stop at the next batch boundary, save, and record ``interrupted``.

- :class:`GracefulStop` turns SIGINT (Ctrl+C) into Lightning's SIGTERM stop: training ends at the
  next batch boundary, a checkpoint is saved and the record says ``interrupted``. A second SIGINT
  interrupts at once.
- :func:`quiet_after_fit` ignores Ctrl+C from the end of fit until the record is written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class GracefulStop(L.Callback):
    """SIGINT stops training at the next batch boundary, as SIGTERM does (see the module docstring)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None:  # second Ctrl+C: stop now
                raise KeyboardInterrupt
            self.signal = signum
            # hand it to Lightning's own SIGTERM handler (public: whatever is installed for
            # SIGTERM): training stops at the next batch boundary and a checkpoint is saved
            on_term = signal.getsignal(signal.SIGTERM)
            if not callable(on_term):  # no graceful SIGTERM handling here: stop now
                raise KeyboardInterrupt
            on_term(signal.SIGTERM, frame)

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave SIGINT alone
            self._previous = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


@contextlib.contextmanager
def quiet_after_fit() -> Iterator[Callable[[], None]]:
    """Yields ``fit_ended``: from its call to the block's end, Ctrl+C is ignored.

    During fit Lightning and :class:`GracefulStop` handle SIGINT (an interrupted fit can end with
    GracefulStop's handler still set); after it, a second Ctrl+C would break the writing of the
    record and the loggers' hyper-parameters with a traceback, while the run is ending anyway.
    """
    main = threading.current_thread() is threading.main_thread()  # else: SIGINT left alone
    previous = signal.getsignal(signal.SIGINT) if main else None

    def fit_ended() -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        yield fit_ended
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def interruption(exc: SystemExit, stop: GracefulStop) -> tuple[str, int]:
    """The record's error line and the exit status of a fit ended by ``exc``: SIGTERM (Lightning's
    ``SIGTERMException``), SIGINT through :class:`GracefulStop`, or a second Ctrl+C."""
    sig = stop.signal or (signal.SIGTERM if isinstance(exc, SIGTERMException) else signal.SIGINT)
    return f"interrupted by {signal.Signals(sig).name}", 128 + sig
