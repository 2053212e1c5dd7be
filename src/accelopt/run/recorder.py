"""The run recorder: a Lightning callback that fills the run's record during fit.

:class:`RunRecorder` fills the run's :class:`~accelopt.run.record.RunRecord` through Lightning's
hooks: each step's loss from ``on_train_batch_end(outputs)``, one row per finished epoch, the NC
counters. Given the run folder, it writes the record so far there after every epoch, with status
``running``, so a run killed outright (SIGKILL, a lost node) still leaves the epochs it finished.
Its state (the record so far, and the run's identity) travels in every checkpoint, so a resumed
run keeps its history and a resume with a different config is refused (:mod:`accelopt.run.resume`).
The epoch times come from :class:`~accelopt.run.timer.EpochTimer`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from accelopt.run.record import RunRecord
from accelopt.run.resume import IDENTITY_KEY, RECORDER_KEY
from accelopt.run.timer import EpochTimer
from accelopt.targets import Target, all_reached, check_interval, time_to_target
from accelopt.variant import variant_hash

EPOCH_KEYS = ("val/loss", "val/acc", "test/loss", "test/acc")
# on-step ``train/*`` scalars not copied into ``train_scalars``: the loss has its own field
NOT_SCALARS = ("train/loss", "train/loss_step", "train/loss_epoch_mean")


def run_env() -> dict[str, Any]:
    """The machine a run trains on: host, platform, versions, threads, visible GPUs."""
    import os
    import platform
    import socket

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "num_threads": torch.get_num_threads(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _step_loss(outputs: Any) -> Tensor | None:
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    return outputs.detach() if isinstance(outputs, Tensor) else None


class RunRecorder(L.Callback):
    """Fills ``record`` (a :class:`~accelopt.run.record.RunRecord`) from Lightning's hooks.

    Step losses are kept as tensors until the epoch ends or a checkpoint is saved (no device sync
    per step), then moved into the record. ``identity`` (the run-defining config, see
    :func:`accelopt.run.resume.identity`) is written into every checkpoint. With ``out`` (the run
    folder), rank zero writes the record there (atomically, status ``running``, ``stopped_at_step``
    = the global step reached) after every epoch; the run's end replaces it with the final one.
    """

    def __init__(
        self,
        record: RunRecord,
        timer: EpochTimer,
        identity: dict[str, Any],
        out: Path | None = None,
        targets: list[Target] | None = None,
        stop_at_target: bool = False,
    ) -> None:
        self.record = record
        self.timer = timer
        self.identity = identity
        self.out = out
        self.targets = list(targets or [])
        self.stop_at_target = stop_at_target
        record.variant = variant_hash(identity)
        self._pending: list[tuple[int, Tensor]] = []
        self._t0 = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self.record.env = run_env()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        per_epoch = trainer.check_val_every_n_epoch is not None
        if trainer.val_check_batch is not None:  # None: a time-based val_check_interval
            check_interval(float(trainer.val_check_batch), trainer.num_training_batches, per_epoch)
        if self.stop_at_target and all_reached(self.record.evals, self.targets):
            trainer.should_stop = True  # resumed after its targets were reached: nothing to do

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One ``evals`` row per evaluation (validation metrics only: the test set's numbers
        stay in the epoch rows); with ``stop_at_target``, stop once every target is reached."""
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        wall, cpu = self.timer.so_far(trainer)
        rec, epoch = self.record, trainer.current_epoch
        before = [e.get("time/epoch_s") or 0.0 for e in rec.epochs if e["epoch"] < epoch]
        before_cpu = [e.get("time/epoch_cpu_s") or 0.0 for e in rec.epochs if e["epoch"] < epoch]
        row: dict[str, Any] = {
            "step": trainer.global_step,
            "epoch": epoch,
            "time/train_s": sum(before) + wall,
            "time/train_cpu_s": sum(before_cpu) + cpu,
        }
        metrics = trainer.callback_metrics
        row.update({k: float(v) for k, v in metrics.items() if k.startswith("val/")})
        rec.add_eval(row)
        if self.stop_at_target and all_reached(rec.evals, self.targets):
            last = self.targets[-1]
            rec.stop_reason = (
                f"stop_at_target: every target reached ({last.metric} {last.threshold:g} at "
                f"step {trainer.global_step})"
            )
            trainer.should_stop = True

    def collect(self, trainer: L.Trainer) -> None:
        """Bring the record up to date: step losses, NC counters and NC-step log, the records of
        callbacks that keep one (``record_field``: e.g. the curvature monitor's), time since fit."""
        self.flush()
        rec = self.record
        rec.nc = nc_counters(trainer) or None
        if trainer.optimizers:  # one row per NC step, judged on held-out data (NC optimizers)
            rec.nc_steps = list(getattr(trainer.optimizers[0], "nc_log", []))
        for cb in trainer.callbacks:
            field = getattr(cb, "record_field", None)
            if field:
                setattr(rec, field, list(getattr(cb, "records", [])))
        rec.duration_s = time.perf_counter() - self._t0
        rec.world_size = trainer.world_size
        rec.targets = time_to_target(rec.evals, self.targets)

    def flush(self) -> None:
        """Move the buffered step losses into the record."""
        if not self._pending:
            return
        steps = [s for s, _ in self._pending]
        values = torch.stack([v.reshape(()) for _, v in self._pending]).float().cpu().tolist()
        self._pending.clear()
        for s, v in zip(steps, values, strict=True):
            self.record.add_step_loss(s, v)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = _step_loss(outputs)
        if loss is not None:
            self._pending.append((trainer.global_step - 1, loss))
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._train_scalars(trainer)

    def _train_scalars(self, trainer: L.Trainer) -> None:
        """The on-step ``train/*`` scalars the module logged (except the loss), at the logger's
        cadence; keyed by the number of steps taken (``trainer.global_step``)."""
        values = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("train/") and k not in NOT_SCALARS and not k.endswith("_epoch")
        }
        if values:
            self.record.add_train_scalars(trainer.global_step, values)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush()
        rec = self.record
        since = rec.epochs[-1]["step"] if rec.epochs else 0
        values = [
            v
            for s, v in zip(rec.train_loss["step"], rec.train_loss["value"], strict=True)
            if s >= since and v is not None
        ]
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train/loss": sum(values) / len(values) if values else None,
            **self.timer.last,
        }
        metrics = trainer.callback_metrics
        row.update({k: float(metrics[k]) for k in EPOCH_KEYS if k in metrics})
        row.update({f"nc/{k}": v for k, v in nc_counters(trainer).items()})
        rec.add_epoch(row)
        if self.out is not None and trainer.is_global_zero:
            self.collect(trainer)
            rec.stopped_at_step = trainer.global_step
            rec.write(self.out)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush()
        if trainer.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * trainer.world_size
            dist.all_gather_object(gathered, param_digest(pl_module))
            self.record.param_digests = [str(d) for d in gathered]

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exc: Any) -> None:
        self.flush()

    @property
    def state_key(self) -> str:
        """Where its state lives in a checkpoint (``callbacks[...]``), as resume reads it."""
        return RECORDER_KEY

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[IDENTITY_KEY] = self.identity

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        rec = self.record
        return {
            "epochs": rec.epochs,
            "train_loss": rec.train_loss,
            "evals": rec.evals,
            "train_scalars": rec.train_scalars,
            "stop_reason": rec.stop_reason,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending.clear()
        loss = state_dict["train_loss"]  # record schema 1 states are refused before the run
        self.record.epochs = [dict(e) for e in state_dict["epochs"]]
        self.record.train_loss = {"step": list(loss["step"]), "value": list(loss["value"])}
        self.record.evals = [dict(e) for e in state_dict.get("evals", [])]
        scalars = state_dict.get("train_scalars") or {"step": []}
        self.record.train_scalars = {k: list(v) for k, v in scalars.items()}
        self.record.stop_reason = state_dict.get("stop_reason")


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
