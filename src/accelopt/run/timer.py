"""The training-only epoch timer: how long each epoch's training took, wall and CPU.

:class:`EpochTimer` logs ``time/epoch_s``: training time only (evaluation and the measurements
of callbacks that declare ``excluded_time_s``, e.g. the curvature monitor, are excluded), and
``time/epoch_cpu_s``: the process's CPU seconds over the same span. The run recorder copies both
into each epoch row of the run record.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch


def _sync(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)


# (logged key, clock, the cumulative seconds other callbacks ask to exclude)
CLOCKS = (
    ("time/epoch_s", time.perf_counter, "excluded_time_s"),
    ("time/epoch_cpu_s", time.process_time, "excluded_cpu_s"),
)


def _excluded(trainer: L.Trainer, attr: str) -> float:
    return sum(float(getattr(cb, attr, 0.0)) for cb in trainer.callbacks)


class EpochTimer(L.Callback):
    """Logs ``time/epoch_s`` (wall) and ``time/epoch_cpu_s`` (CPU) of each epoch's training part.

    The clocks run from the start of the training epoch and pause while validation runs inside
    it (Lightning validates before ``on_train_epoch_end``); the seconds other callbacks report in
    ``excluded_time_s`` / ``excluded_cpu_s`` (cumulative) during the epoch are subtracted. An
    epoch resumed mid-way counts only its part after the restart. ``time/epoch_cpu_s`` is
    ``time.process_time`` (every thread of this process): other jobs on a shared machine barely
    move it, so it is the steadier number for comparing methods run at different times with the
    same thread count; it is not wall time (with k busy threads it is up to k× larger).
    """

    def __init__(self) -> None:
        self._start: list[float] | None = None
        self._elapsed = [0.0] * len(CLOCKS)
        self._excluded_at_start = [0.0] * len(CLOCKS)
        self._in_epoch = False
        self.last = {key: math.nan for key, _, _ in CLOCKS}

    @property
    def last_epoch_s(self) -> float:
        return self.last["time/epoch_s"]

    def _now(self) -> list[float]:
        return [clock() for _, clock, _ in CLOCKS]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self._elapsed, self._start, self._in_epoch = [0.0] * len(CLOCKS), self._now(), True
        self._excluded_at_start = [_excluded(trainer, attr) for _, _, attr in CLOCKS]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *a: Any
    ) -> None:
        if not self._in_epoch:  # resumed mid-epoch: Lightning does not restart the epoch
            self.on_train_epoch_start(trainer, pl_module)

    def _pause(self, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            _sync(pl_module)
            self._elapsed = [
                e + now - t
                for e, now, t in zip(self._elapsed, self._now(), self._start, strict=True)
            ]
            self._start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._in_epoch:
            self._start = self._now()

    def so_far(self, trainer: L.Trainer) -> list[float]:
        """The current epoch's training seconds so far (wall, CPU), as ``time/epoch_s`` and
        ``time/epoch_cpu_s`` count them; call while the clocks are paused (in validation)."""
        return [
            max(e - (_excluded(trainer, attr) - at), 0.0)
            for e, (_, _, attr), at in zip(
                self._elapsed, CLOCKS, self._excluded_at_start, strict=True
            )
        ]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)
        self._in_epoch = False
        for i, (key, _, attr) in enumerate(CLOCKS):
            excluded = _excluded(trainer, attr) - self._excluded_at_start[i]
            self.last[key] = max(self._elapsed[i] - excluded, 0.0)
            pl_module.log(key, self.last[key], on_step=False, on_epoch=True)
