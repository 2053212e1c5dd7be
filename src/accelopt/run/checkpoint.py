"""Checkpoints that match the docs: atomic files, ``last.ckpt`` at every epoch's end and every N steps.

:class:`AtomicCheckpointIO`. Lightning's ``TorchCheckpointIO`` writes through an fsspec
transaction (a temporary file in the *system* temp folder, then ``shutil.move``: across file
systems a copy into the final path, so a kill mid-copy leaves a truncated ``last.ckpt``, and
nothing is fsync-ed). Here the checkpoint is serialised to memory and written with
:func:`accelopt.fileio.atomic_write` (same folder, fsync, ``os.replace``): readers see the old
file or the new one, never a partial one.

:class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` keeping only ``last.ckpt``:

- at the end of every training epoch, *after* that epoch's evaluation and run-record row (Lightning
  2.6 writes ``last`` at epoch ends only when a top-k save happened, i.e. never with
  ``save_top_k=0``);
- every ``every_n_train_steps`` steps when asked, except at an epoch's last batch: a checkpoint
  there would resume into the next epoch and skip this epoch's evaluation, so the epoch-end save
  (moments later) stands for it;
- when the run is interrupted (SIGTERM, SIGINT; see :mod:`accelopt.run.recorder`) at a batch
  boundary, so a resubmitted job continues from where it stopped, not from the last save.
"""

from __future__ import annotations

import io
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from accelopt.checks import is_int
from accelopt.fileio import atomic_write

__all__ = ["AtomicCheckpointIO", "RunCheckpoint", "atomic_torch_save"]


def atomic_torch_save(obj: Any, path: Any) -> None:
    """``torch.save(obj, path)`` through :func:`accelopt.fileio.atomic_write`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialisation errors happen before any file is touched
    atomic_write(path, buffer.getbuffer())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (see the module docstring).

    Paths with a URL scheme (``s3://`` and the like) go to Lightning's own implementation.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint does not take storage_options, "
                f"got {storage_options!r}"
            )
        atomic_torch_save(checkpoint, path)


def _epoch_training_done(trainer: L.Trainer) -> bool:
    """True between an epoch's last training batch and its end (evaluation not yet recorded)."""
    loop = trainer.fit_loop.epoch_loop
    return bool(loop.batch_progress.is_last_batch) or loop.done


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` only: each epoch's end, every N steps if asked, and on interruption."""

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None) -> None:
        n = every_n_train_steps
        if n is not None and (not is_int(n) or n < 1):
            raise ValueError(
                f"callbacks.checkpoint.every_n_train_steps={n!r} is invalid; accepted: an "
                "integer >= 1 or null (epoch ends only)"
            )
        super().__init__(
            dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False
        )
        self.step_cadence = n or 0

    def _save_last(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        n = self.step_cadence
        due = n and trainer.global_step % n == 0 and not _epoch_training_done(trainer)
        if due and self._last_global_step_saved != trainer.global_step:
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # saving happens at the epoch's end, after the run record has its row

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step:
            self._save_last(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # SIGINT is turned into Lightning's SIGTERM stop (accelopt.run.recorder.GracefulStop), so
        # both arrive here as SIGTERMException at a batch boundary; other errors may be mid-step
        if not isinstance(exception, SIGTERMException) or _epoch_training_done(trainer):
            return  # a crash mid-step, or mid-evaluation: keep the last consistent save
        if self._last_global_step_saved != trainer.global_step and trainer.global_step > 0:
            self._save_last(trainer)
