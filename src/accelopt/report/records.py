"""Finding and loading the run records of a sweep folder (through :mod:`accelopt.run.record`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelopt.checks import is_number
from accelopt.run.record import NC_HELDOUT_KEYS, NC_KEYS, RECORD_NAME, RunRecord
from accelopt.run.record_check import RecordError
from accelopt.variant import identity_of, variant_hash, variant_identity

__all__ = ["ReportError", "Run", "Sweep", "load_run", "load_runs"]


class ReportError(Exception):
    """A sweep (or one run record) that cannot be reported; the message is for the user."""


@dataclass(eq=False)
class Run:
    """The report's view of one validated run record (a ``metrics.json``)."""

    path: Path
    job: str  # the run's folder relative to the sweep root ("." for the root itself)
    status: str
    dataset: str
    method: str
    lr: float
    seed: int
    error: str | None
    stopped_at_step: int | None
    epochs: list[dict[str, Any]]
    loss_steps: np.ndarray  # int64
    loss_values: np.ndarray  # float64, NaN where the record has null
    final: dict[str, Any]
    nc: dict[str, float | None] | None  # NC_KEYS, plus the held-out keys the record has
    duration_s: float | None
    curvature: list[dict[str, Any]] = field(default_factory=list)
    record: RunRecord | None = None
    # the run's config without the seed (dotted keys, :func:`accelopt.variant.variant_identity`)
    identity: dict[str, Any] = field(default_factory=dict)
    variant: str = ""  # its hash (the record's ``variant``, else computed from ``config``)
    choices: dict[str, Any] = field(default_factory=dict)  # the config-group choices
    evals: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""  # method + what differs from the rest of the sweep (set by summarise)
    setting: tuple[str, ...] = ()  # the label's parts outside the optimizer's config

    @property
    def key(self) -> tuple[str, str, float]:
        """The group key (dataset, label, lr): one variant per key (see ``summarise``)."""
        return (self.dataset, self.label or self.method, self.lr)

    @property
    def final_test_acc(self) -> float | None:
        """``final["test/acc"]``, else the last epoch's ``test/acc``."""
        value = self.final.get("test/acc")
        if value is None:
            accs = [e.get("test/acc") for e in self.epochs if e.get("test/acc") is not None]
            value = accs[-1] if accs else None
        return value

    @property
    def epoch_seconds(self) -> float | None:
        """``final["time/epoch_s"]``, else the mean of the epochs' ``time/epoch_s``."""
        value = self.final.get("time/epoch_s")
        if value is None:
            times = [e["time/epoch_s"] for e in self.epochs if e.get("time/epoch_s") is not None]
            value = float(np.mean(times)) if times else None
        return value

    @property
    def nc_share(self) -> float | None:
        """The share of the run's training time spent in NC work: ``nc.time_s`` / the sum of
        its epochs' ``time/epoch_s`` (one run's own clock, so machine load hardly moves it)."""
        total = sum(e["time/epoch_s"] for e in self.epochs if e.get("time/epoch_s") is not None)
        spent = (self.nc or {}).get("time_s")
        return None if spent is None or total <= 0 else spent / total


@dataclass(eq=False)
class Sweep:
    """Everything found under a sweep folder."""

    root: Path
    runs: list[Run]
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    incomplete: list[str] = field(default_factory=list)  # job folders without metrics.json


def _relative(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return rel.as_posix() or "."


def _number(x: Any) -> float | None:
    return x if is_number(x) else None


def _nc_view(nc: dict[str, Any] | None) -> dict[str, float | None] | None:
    if not nc:
        return None
    view = {k: _number(nc.get(k)) for k in NC_KEYS}
    view.update({k: _number(nc[k]) for k in NC_HELDOUT_KEYS if k in nc})
    return view


def run_from_record(rec: RunRecord, path: Path, root: Path) -> Run:
    """The report's :class:`Run` view of a validated record read from ``path``."""
    steps, values = rec.train_loss["step"], rec.train_loss["value"]
    ident = identity_of(rec.config)
    return Run(
        path=path,
        job=_relative(path.parent, root),
        status=rec.status,
        dataset=rec.dataset,
        method=rec.method,
        lr=rec.lr,
        seed=rec.seed,
        error=rec.error,
        stopped_at_step=rec.stopped_at_step,
        epochs=rec.epochs,
        loss_steps=np.asarray(steps, dtype=np.int64),
        loss_values=np.asarray([np.nan if v is None else v for v in values], dtype=np.float64),
        final=rec.final,
        nc=_nc_view(rec.nc),
        duration_s=rec.duration_s,
        curvature=rec.curvature,
        record=rec,
        identity=variant_identity(ident),
        variant=rec.variant or variant_hash(ident),
        choices=dict(rec.config_groups),
        evals=rec.evals,
        targets=rec.targets,
    )


def load_run(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Run:
    """Read and validate one ``metrics.json``; raise :class:`ReportError` saying what is wrong."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        rec = RunRecord.read(path)
    except RecordError as exc:
        raise ReportError(exc.reason) from exc
    return run_from_record(rec, path, root)


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def _incomplete(root: Path, running: list[str]) -> list[str]:
    """Job folders (with a ``.hydra`` folder) lacking a record, plus jobs still ``running``."""
    missing = {
        _relative(h.parent, root)
        for h in root.rglob(".hydra")
        if h.is_dir() and not (h.parent / RECORD_NAME).exists()
    }
    return sorted(missing.union(running), key=lambda s: _natural_key(Path(s)))


def load_runs(path: str | os.PathLike[str], *, strict: bool = True) -> Sweep:
    """Find and validate every ``metrics.json`` under ``path``.

    Raises :class:`ReportError` if ``path`` is not a folder, if no record is readable, or (with
    ``strict``) if any record is corrupt. Without ``strict`` corrupt records go to
    ``Sweep.unreadable``. Job folders (with a ``.hydra`` folder) lacking a record, and records
    with status ``running``, go to ``Sweep.incomplete``.
    """
    root = Path(path)
    if not root.exists():
        raise ReportError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (give the sweep folder)")
    runs: list[Run] = []
    running: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for f in sorted(root.rglob(RECORD_NAME), key=_natural_key):
        try:
            run = load_run(f, root)
        except ReportError as exc:
            unreadable.append((_relative(f, root), str(exc)))
            continue
        if run.status == "running":  # a provisional record: the job is not finished
            running.append(run.job)
        else:
            runs.append(run)
    incomplete = _incomplete(root, running)
    if unreadable and strict:
        lines = "\n".join(f"  {p}: {why}" for p, why in unreadable)
        raise ReportError(
            f"{len(unreadable)} corrupt or invalid metrics.json under {root}:\n{lines}\n"
            "nothing written; fix or remove them, or pass --skip-bad to report the rest"
        )
    if not runs:
        why = f"no metrics.json under {root}"
        if unreadable:
            why = f"no readable metrics.json under {root} ({len(unreadable)} unreadable)"
        elif running:
            why = f"no finished run under {root}"
        if incomplete:
            why += (
                f"; {len(running)} job(s) still running, "
                f"{len(incomplete) - len(running)} job folder(s) without a record yet"
            )
        raise ReportError(why + "; nothing written")
    return Sweep(root=root, runs=runs, unreadable=unreadable, incomplete=incomplete)
