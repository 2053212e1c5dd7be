"""Lightning callbacks: the training-only epoch timer and the recorder behind ``metrics.json``."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import lightning as L
import torch


def _sync(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)


class EpochTimer(L.Callback):
    """Logs ``time/epoch_s``: wall time of the training part of each epoch.

    The clock runs from the start of the training epoch and pauses while validation runs inside
    it (Lightning validates before ``on_train_epoch_end``), so evaluation is excluded.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._elapsed = 0.0
        self._in_epoch = False
        self.last_epoch_s = math.nan

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(pl_module)
        self._elapsed, self._start, self._in_epoch = 0.0, time.perf_counter(), True

    def _pause(self, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            _sync(pl_module)
            self._elapsed += time.perf_counter() - self._start
            self._start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._in_epoch:
            self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause(pl_module)
        self._in_epoch = False
        self.last_epoch_s = self._elapsed
        pl_module.log("time/epoch_s", self._elapsed, on_step=False, on_epoch=True)


EPOCH_KEYS = ("val/loss", "val/acc", "test/loss", "test/acc")


class RunRecorder(L.Callback):
    """Collects what ``metrics.json`` holds: per-step training loss and per-epoch metrics.

    Reads the module's per-step losses (``pl_module.step_losses``), the evaluation metrics
    Lightning gathered, the epoch timer and, for NC optimizers, the optimizer's counters.
    Its state is saved in checkpoints (the buffered step losses are flushed first, so a
    mid-epoch checkpoint holds every step up to it), so a resumed run keeps its history.
    Under DDP it also gathers a SHA-256 digest of every rank's parameters at the end of
    training (``param_digests``, one per rank): equal digests mean the ranks stayed in sync.
    """

    def __init__(self, timer: EpochTimer) -> None:
        self.timer = timer
        self.epochs: list[dict[str, Any]] = []
        self.loss_steps: list[int] = []
        self.loss_values: list[float | None] = []
        self.param_digests: list[str] = []
        self._trainer: L.Trainer | None = None
        self._module: L.LightningModule | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module

    def flush_steps(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[float]:
        """Move the module's buffered step losses into the record; return them."""
        if not pl_module.step_losses:
            return []
        values = torch.stack(pl_module.step_losses).float().cpu().tolist()
        pl_module.step_losses.clear()
        start = trainer.global_step - len(values)
        self.loss_steps.extend(range(start, start + len(values)))
        self.loss_values.extend(v if math.isfinite(v) else None for v in values)
        return values

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush_steps(trainer, pl_module)
        # this epoch's steps: those after the previous epoch's last one (flushes may have
        # happened mid-epoch, at checkpoints, and the epoch may have been resumed)
        since = self.epochs[-1]["step"] if self.epochs else 0
        values = [
            v
            for s, v in zip(self.loss_steps, self.loss_values, strict=True)
            if s >= since and v is not None
        ]
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train/loss": sum(values) / len(values) if values else None,
            "time/epoch_s": self.timer.last_epoch_s,
        }
        metrics = trainer.callback_metrics
        for key in EPOCH_KEYS:
            if key in metrics:
                row[key] = float(metrics[key])
        row.update({f"nc/{k}": v for k, v in nc_counters(trainer).items()})
        self.epochs.append(row)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            import torch.distributed as dist

            digest = param_digest(pl_module)
            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, digest)
            self.param_digests = [str(d) for d in gathered]

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is not None and self._module is not None:
            self.flush_steps(self._trainer, self._module)
        return {
            "epochs": self.epochs,
            "loss_steps": self.loss_steps,
            "loss_values": self.loss_values,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
        self.loss_steps = list(state_dict["loss_steps"])
        self.loss_values = list(state_dict["loss_values"])


def param_digest(module: torch.nn.Module) -> str:
    """SHA-256 of the module's parameters (their bytes, in order): equal iff bitwise equal."""
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def nc_counters(trainer: L.Trainer) -> dict[str, float]:
    """The NC optimizer's counters (empty for optimizers without them)."""
    if not trainer.optimizers:
        return {}
    counters = getattr(trainer.optimizers[0], "counters", None)
    return {k: float(v) for k, v in counters.items()} if counters else {}
