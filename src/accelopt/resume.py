"""Resuming a run: which checkpoint, is it readable, and is it the same run.

A checkpoint carries the run's *identity*: the resolved config minus the keys that may change
between a run and its resumption (:data:`MAY_CHANGE`). :func:`resolve_checkpoint` finds and reads
the checkpoint before any work starts and refuses, with one line per problem, a file that is
missing or unreadable, or whose identity differs from the current config (each differing key named
with both values). Nothing is written by a refused resume.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from accelopt.config import ConfigError
from accelopt.variant import MAY_CHANGE, identity_of

__all__ = ["MAY_CHANGE", "identity", "identity_diff", "resolve_checkpoint", "ResumePoint"]

IDENTITY_KEY = "accelopt_identity"


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
    return ckpt


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
                f"{', '.join(MAY_CHANGE[2:])} may change), or start a new run in another folder."
            )
    return point
