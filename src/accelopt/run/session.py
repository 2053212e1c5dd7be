"""One run's life in its folder: its record, whether it may start, its fit and its end.

The entry point (:func:`accelopt.train.train`) strings these together: :func:`new_record` (the
run's identity, status ``running``), :func:`run_lock` (one run per folder), :func:`plan_start`
(every check before any work: config, targets, the checkpoint to resume from and its identity,
the record already in the folder), :func:`failure_recorded` (an error before fit is recorded as
``failed`` unless a run trained there) and :func:`fit` (fit, then finalise and write the record
whatever happened).
"""

from __future__ import annotations

import contextlib
import math
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from accelopt.checks import is_int, is_number
from accelopt.config import check_config
from accelopt.data.sources import DataSourceError
from accelopt.errors import ConfigError
from accelopt.models.module import ClassifierModule, Diverged
from accelopt.optim_protocol import method_label
from accelopt.run.folder import RunLock, check_writable
from accelopt.run.record import RECORD_NAME, RunRecord
from accelopt.run.record_check import RecordError
from accelopt.run.recorder import RunRecorder
from accelopt.run.resume import ResumePoint, check_start, checkpoint_dir, resolve_checkpoint
from accelopt.run.signals import GracefulStop, interruption, quiet_after_fit
from accelopt.run.summary import summarise
from accelopt.targets import Target, parse_targets

# records of runs that trained there (``running``: one killed after writing an epoch)
KEEP = ("completed", "diverged", "interrupted", "running")


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def config_dict(cfg: DictConfig) -> dict[str, Any]:
    """``cfg`` as a plain dict, resolved (an unresolvable interpolation: kept as written)."""
    try:
        return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - an unresolvable interpolation: keep it as written
        return dict(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]


def _hydra_choices() -> tuple[dict[str, Any], list[str]]:
    if not HydraConfig.initialized():
        return {}, []
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    return choices, list(hc.overrides.task)


def new_record(cfg: DictConfig, out: Path) -> RunRecord:
    """The record of a run about to start: identity, config, status ``running``."""
    choices, overrides = _hydra_choices()
    lr, seed = cfg.optimizer.get("lr"), cfg.get("seed")
    return RunRecord(
        method=method_label(cfg.optimizer, choices.get("optimizer")),
        dataset=str(cfg.dataset.get("name")),
        lr=float(lr) if is_number(lr) else math.nan,
        seed=seed if is_int(seed) else -1,
        config_groups=choices,
        overrides=overrides,
        config=config_dict(cfg),
        output_dir=str(out),
        env={"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")},
    )


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block (rank zero; refused: ConfigError, nothing written)."""
    if not is_rank_zero():
        yield
        return
    with RunLock(out):
        yield


def existing(out: Path) -> RunRecord | None:
    """The record already in ``out``, or None (none there, or unreadable)."""
    try:
        return RunRecord.read(out / RECORD_NAME)
    except (RecordError, OSError):
        return None


def _one_line(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def record_failure(record: RunRecord, out: Path, err: BaseException) -> None:
    """Write ``status: failed`` for a run that could not start, unless a run trained here."""
    earlier = existing(out)
    if earlier is not None and earlier.status in KEEP:
        print(f"[accelopt] {out / RECORD_NAME} (an earlier {earlier.status} run) left as it was")
        return
    user = isinstance(err, ConfigError | DataSourceError)
    tb = None if user else "".join(traceback.format_exception(err))
    message = str(err) if user else _one_line(err)
    record.finalize("failed", stopped_at_step=0, error=message, traceback=tb)
    record.write(out)


@contextlib.contextmanager
def failure_recorded(record: RunRecord, out: Path) -> Iterator[None]:
    """An error in the block is recorded (rank zero, :func:`record_failure`), then raised."""
    try:
        yield
    except Exception as err:
        if is_rank_zero():
            record_failure(record, out, err)
        raise


@dataclass
class Start:
    """What the checks before a run decided: its targets and checkpoint, or why it is left as is."""

    targets: list[Target]
    point: ResumePoint | None
    earlier: RunRecord | None = None
    reason: str | None = None

    @property
    def ckpt_path(self) -> str | None:
        return None if self.point is None else str(self.point.path)


def plan_start(cfg: DictConfig, out: Path) -> Start:
    """Check everything before any work: the config, targets, checkpoint and the earlier record."""
    check_config(cfg)
    targets = parse_targets(
        cfg.get("targets"), has_val=cfg.dataset.get("val_size", 1) != 0, stop=cfg.stop_at_target
    )
    ckpt_dir = checkpoint_dir(cfg, out)
    if (cfg.get("callbacks") or {}).get("checkpoint") is not None and "://" not in str(ckpt_dir):
        check_writable(ckpt_dir, "checkpoint folder")
    point = resolve_checkpoint(cfg, ckpt_dir, out)
    earlier = existing(out)
    reason = check_start(cfg, point, earlier, out)
    if reason is not None and earlier is not None:
        return Start(targets, point, earlier, reason)
    return Start(targets, point)


def left_as_is(start: Start, out: Path) -> dict[str, Any]:
    """Say why the earlier run's record stays, and return it."""
    earlier = start.earlier
    assert earlier is not None
    print(
        f"[accelopt] {earlier.method} on {earlier.dataset}: {start.reason}; "
        f"{out / RECORD_NAME} left as it was",
        flush=True,
    )
    return earlier.to_dict()


@dataclass
class Job:
    """A run ready to fit: its Lightning objects and the callbacks the end of fit reads."""

    trainer: L.Trainer
    module: ClassifierModule
    datamodule: L.LightningDataModule
    recorder: RunRecorder
    stop: GracefulStop
    ckpt: str | None


def fit(cfg: DictConfig, out: Path, record: RunRecord, job: Job) -> dict[str, Any]:
    """Fit, then finalise and write the record whatever happened; re-raise errors after."""
    trainer = job.trainer
    status, error, tb, stopped = "completed", None, None, None
    reraise: BaseException | None = None
    with quiet_after_fit() as fit_ended:
        try:
            trainer.fit(job.module, datamodule=job.datamodule, ckpt_path=job.ckpt)
        except Diverged as exc:
            status, error, stopped = "diverged", str(exc), exc.step
            record.add_step_loss(exc.step, None)  # the non-finite loss that stopped the run
        except SystemExit as exc:  # SIGTERM (Lightning's SIGTERMException), SIGINT, 2nd Ctrl+C
            fit_ended()
            error, code = interruption(exc, job.stop)
            status, reraise = "interrupted", SystemExit(code)
        except Exception as exc:  # recorded, then raised: other jobs of a sweep keep running
            status, error, tb, reraise = "failed", _one_line(exc), traceback.format_exc(), exc
        fit_ended()
        job.recorder.collect(trainer)  # duration_s: since fit started
        at = stopped if stopped is not None else trainer.global_step
        record.finalize(status, stopped_at_step=at, error=error, traceback=tb)
        result = record.to_dict()
        if trainer.is_global_zero:
            record.write(out)
            summarise(trainer, cfg, result, out)
    if reraise is not None:
        raise reraise
    return result
