"""Resuming a run: which checkpoint, is it readable, and is it the same run.

A checkpoint carries the run's *identity*: the resolved config minus the keys that may change
between a run and its resumption (:data:`MAY_CHANGE`). :func:`resolve_checkpoint` finds and reads
the checkpoint before any work starts and refuses, with one line per problem, a file that is
missing or unreadable, written by older code (record schema 1, or an NC optimizer state of another
version: the line names it), or whose identity differs from the current config (each differing key
named with both values). Nothing is written by a refused resume.

:func:`check_start` decides what a run does with the record already in its folder: a finished
(completed or diverged) run is left as it was by a resubmission with ``ckpt_path=last``, and a
fresh run over it, or a resume to fewer epochs than were done, is refused.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from accelopt.errors import ConfigError
from accelopt.optim.nc import STATE_VERSION, state_version
from accelopt.run.record import RunRecord
from accelopt.variant import MAY_CHANGE, identity_of

__all__ = [
    "MAY_CHANGE",
    "ResumePoint",
    "check_start",
    "checkpoint_dir",
    "identity",
    "identity_diff",
    "resolve_checkpoint",
]

IDENTITY_KEY = "accelopt_identity"
RECORDER_KEY = "RunRecorder"  # the run recorder's state in a checkpoint (its Lightning state_key)


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The dotted keys and values of ``cfg`` that define the run (resolved; JSON/torch-safe)."""
    return identity_of(OmegaConf.to_container(cfg, resolve=True))


def identity_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One ``key: checkpoint X, now Y`` line per key whose value differs."""
    missing = object()
    lines = []
    keys = sorted(set(saved) | set(current))
    # a different class (``_target_``) makes its other keys noise: name only the class
    swapped = [k[: -len("_target_")] for k in keys if k.endswith("._target_")]
    swapped = [p for p in swapped if saved.get(p + "_target_") != current.get(p + "_target_")]
    for key in keys:
        if any(key.startswith(p) and not key.endswith("._target_") for p in swapped):
            continue
        a, b = saved.get(key, missing), current.get(key, missing)
        if a != b:
            fa = "(absent)" if a is missing else repr(a)
            fb = "(absent)" if b is missing else repr(b)
            lines.append(f"{key}: checkpoint {fa}, now {fb}")
    return lines


class ResumePoint:
    """A readable checkpoint to resume from: its path, global step and saved identity."""

    def __init__(self, path: Path, checkpoint: dict[str, Any]) -> None:
        self.path = path
        self.global_step = int(checkpoint.get("global_step", 0))
        self.epoch = int(checkpoint.get("epoch", 0))
        # the epochs Lightning counts as done on restoring (its current_epoch after the restore)
        loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        done = ((loop.get("epoch_progress") or {}).get("current") or {}).get("completed")
        self.epochs_done = int(done) if isinstance(done, int) else self.epoch
        self.identity: dict[str, Any] | None = checkpoint.get(IDENTITY_KEY)


def _newest(paths: list[Path]) -> Path | None:
    found = [p for p in paths if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _on_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def _read(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        what = "empty" if path.stat().st_size == 0 else f"unreadable ({type(err).__name__})"
        raise ConfigError(
            f"checkpoint {str(path)!r} is {what}: delete it to start this run from scratch, or "
            "give another file with ckpt_path=/path/to/file.ckpt."
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(
            f"checkpoint {str(path)!r} is not a Lightning checkpoint (no 'state_dict'): give a "
            "file written by accelopt.train, or ckpt_path=last."
        )
    _check_versions(path, ckpt)
    return ckpt


def _check_versions(path: Path, ckpt: dict[str, Any]) -> None:
    """Refuse (one line) a checkpoint whose run record or NC optimizer state is of older code."""
    old = None
    recorder = (ckpt.get("callbacks") or {}).get(RECORDER_KEY)
    if isinstance(recorder, dict) and "train_loss" not in recorder:
        old = "record schema 1; this version reads schema 2 and later"
    for state in ckpt.get("optimizer_states") or []:
        nc = state.get("nc") if isinstance(state, dict) else None
        if isinstance(nc, dict) and state_version(nc) != STATE_VERSION:
            old = f"NC optimizer state version {state_version(nc)}; this version reads {STATE_VERSION}"
    if old is not None:
        raise ConfigError(
            f"checkpoint {str(path)!r} was written by accelopt's {old}: start a new run in "
            "another folder (hydra.run.dir=...)."
        )


def checkpoint_dir(cfg: DictConfig, out: Path) -> Path:
    """Where the run's checkpoint callback writes (``<out>/checkpoints`` unless configured)."""
    node = (cfg.get("callbacks") or {}).get("checkpoint")
    return (
        Path(str(node.dirpath)) if node is not None and node.get("dirpath") else out / "checkpoints"
    )


def resolve_checkpoint(cfg: DictConfig, ckpt_dir: Path, run_dir: Path) -> ResumePoint | None:
    """The checkpoint ``cfg.ckpt_path`` names, read and checked against ``cfg``; None = fresh run.

    ``last`` is the newest ``last*.ckpt`` in ``ckpt_dir`` (none there: a fresh run, so
    ``ckpt_path=last`` can be set on every (re)submission of a job); anything else must be an
    existing file. Under SLURM, Lightning's requeue checkpoints (``hpc_ckpt_<n>.ckpt`` in the run
    folder) count too, with ``ckpt_path=last`` or none: a requeued job resumes from the newest.
    """
    spec = cfg.get("ckpt_path")
    hpc = list(run_dir.glob("hpc_ckpt_*.ckpt")) if _on_slurm() else []
    if spec is None and not hpc:
        return None
    if spec is None or str(spec) == "last":
        last = list(ckpt_dir.glob("last*.ckpt")) if spec is not None else []
        path = _newest(last + hpc)
        if path is None:
            return None
    else:
        path = Path(str(spec)).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path={str(spec)!r} is not a file (resolved from {str(Path.cwd())!r}); give "
                "a checkpoint's path, or ckpt_path=last to resume from this run folder's "
                "last.ckpt."
            )
    point = ResumePoint(path.resolve(), _read(path))
    if point.identity is not None:
        diff = identity_diff(point.identity, identity(cfg))
        if diff:
            raise ConfigError(
                f"cannot resume from {str(point.path)!r}: the config differs from the run that "
                f"wrote it ({'; '.join(diff)}). Resume with the run's own settings (only "
                f"{', '.join(MAY_CHANGE[2:])} may change; not the length of a run whose "
                "learning-rate schedule spans it), or start a new run in another folder."
            )
    return point


FINISHED = ("completed", "diverged")


def _nothing_more(cfg: DictConfig, record: RunRecord, point: ResumePoint | None) -> bool:
    """Whether resuming a completed run from ``point`` would train nothing more."""
    if point is None or record.stopped_at_step != point.global_step:
        return point is None  # no checkpoint to continue from
    epochs, steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps") or -1
    more_epochs = epochs is not None and (epochs == -1 or epochs > len(record.epochs))
    return not (more_epochs or steps > point.global_step)


def check_start(
    cfg: DictConfig, point: ResumePoint | None, earlier: RunRecord | None, out: Path
) -> str | None:
    """Why the run in ``out`` is left as it was (its record is ``earlier``), or None to train.

    Raises :class:`ConfigError` for a fresh run (no checkpoint) over a completed or diverged
    run, and for a resume with ``trainer.max_epochs`` below the epochs its checkpoint has done.
    """
    status = earlier.status if earlier is not None else None
    resubmitted = cfg.get("ckpt_path") is not None
    if status == "diverged" and resubmitted:
        n = earlier.stopped_at_step
        return f"diverged at step {n} (a resume would diverge again: change lr or seed in a new folder)"
    if status == "completed" and resubmitted and _nothing_more(cfg, earlier, point):
        n = earlier.stopped_at_step
        if point is None:
            return f"already completed at step {n} (no checkpoint to continue from)"
        return f"already completed at step {n} (raise trainer.max_epochs to continue it)"
    if status in FINISHED and point is None:
        raise ConfigError(
            f"run folder {str(out)!r} holds a {status} run (metrics.json, step "
            f"{earlier.stopped_at_step}) that a fresh run would replace: resume it with "
            "ckpt_path=last, or start the fresh run in a new folder (hydra.run.dir=...)."
        )
    epochs = cfg.trainer.get("max_epochs")
    if point is not None and isinstance(epochs, int) and 0 <= epochs < point.epochs_done:
        raise ConfigError(
            f"trainer.max_epochs={epochs} is below the {point.epochs_done} epochs already done "
            f"by {str(point.path)!r}: resume with trainer.max_epochs >= {point.epochs_done}, or "
            "start a new run in another folder."
        )
    return None
