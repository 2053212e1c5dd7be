"""The run record, ``metrics.json``: filled, finalised, written and read (stdlib only).

Training fills a :class:`RunRecord` (step losses, epoch rows, curvature measurements), sets the
final status with :meth:`RunRecord.finalize` and writes it atomically with :meth:`RunRecord.write`;
the sweep report reads it back with :meth:`RunRecord.read`, which validates every field
(:mod:`accelopt.run.record_check`) and raises ``RecordError`` naming the file and the bad key. The
schema is documented in ``docs/architecture.md`` ("The run record"). Version 1 and 2 files (older
runs) still load; a loaded record is upgraded in memory to the current version and written in it.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelopt.checks import is_int
from accelopt.fileio import atomic_write
from accelopt.run.record_check import FINAL_STATUSES, SCHEMA_VERSION, RecordError, checked_fields

__all__ = ["NC_HELDOUT_KEYS", "NC_KEYS", "RECORD_NAME", "RunRecord", "json_safe"]

RECORD_NAME = "metrics.json"
# the NC counters every NC run's ``nc`` holds (extras may follow), and the optional held-out ones
NC_KEYS = ("checks", "searches", "steps", "rejected", "hvps", "lambda_min", "time_s")
NC_HELDOUT_KEYS = ("heldout_curvature", "heldout_loss_change")


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None, recursively (tuples become lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- the record


@dataclass
class RunRecord:
    """One run's record: identity, status, config, per-epoch and per-step metrics, NC numbers.

    ``train_loss["value"][i]`` is None where the loss was non-finite; steps are kept in
    increasing order. ``stopped_at_step`` may be None in version-1 files that lacked it.
    """

    method: str
    dataset: str
    lr: float
    seed: int
    status: str = "running"
    error: str | None = None
    traceback: str | None = None
    stopped_at_step: int | None = 0
    config_groups: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    output_dir: str = ""
    epochs: list[dict[str, Any]] = field(default_factory=list)
    train_loss: dict[str, list[Any]] = field(default_factory=lambda: {"step": [], "value": []})
    final: dict[str, Any] = field(default_factory=dict)
    nc: dict[str, Any] | None = None
    curvature: list[dict[str, Any]] = field(default_factory=list)
    nc_steps: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float | None = None
    world_size: int = 1
    resumed_from: str | None = None
    param_digests: list[str] = field(default_factory=list)
    variant: str | None = None
    env: dict[str, Any] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None
    train_scalars: dict[str, list[Any]] = field(default_factory=lambda: {"step": []})
    schema: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ filling

    def add_step_loss(self, step: int, value: float | None) -> None:
        """Record one step's loss (non-finite → None); a step already present is replaced."""
        steps, values = self.train_loss["step"], self.train_loss["value"]
        step = int(step)
        v = None if value is None else float(value)
        v = v if v is not None and math.isfinite(v) else None
        if not steps or step > steps[-1]:  # the usual case: O(1)
            steps.append(step)
            values.append(v)
            return
        i = bisect.bisect_left(steps, step)
        if i < len(steps) and steps[i] == step:
            values[i] = v
        else:
            steps.insert(i, step)
            values.insert(i, v)

    def add_epoch(self, row: dict[str, Any]) -> None:
        """Append one finished epoch's row; a row with the same ``epoch`` is replaced."""
        epoch = row.get("epoch")
        if not is_int(epoch):
            raise ValueError(f"add_epoch: row['epoch'] must be an integer, got {epoch!r}")
        row = json_safe(dict(row))
        for i in range(len(self.epochs) - 1, -1, -1):
            if self.epochs[i].get("epoch") == epoch:
                self.epochs[i] = row
                return
        self.epochs.append(row)

    def add_eval(self, row: dict[str, Any]) -> None:
        """Append one evaluation's row (``step`` required); a row with the same step is replaced."""
        if not is_int(row.get("step")):
            raise ValueError(f"add_eval: row['step'] must be an integer, got {row.get('step')!r}")
        row = json_safe(dict(row))
        self.evals = [e for e in self.evals if e.get("step") != row["step"]] + [row]
        self.evals.sort(key=lambda e: e["step"])

    def add_train_scalars(self, step: int, values: dict[str, float | None]) -> None:
        """Record the on-step ``train/*`` scalars of one step (names new so far: null before)."""
        ts = self.train_scalars
        if ts["step"] and step <= ts["step"][-1]:
            return  # already recorded (a resumed run replays no step twice)
        n = len(ts["step"])
        ts["step"].append(int(step))
        for name in values:
            ts.setdefault(name, [None] * n)
        for name in ts:
            if name != "step":
                v = values.get(name)
                ts[name].append(v if v is not None and math.isfinite(v) else None)

    def finalize(
        self,
        status: str,
        *,
        stopped_at_step: int,
        error: str | None = None,
        traceback: str | None = None,
    ) -> None:
        """Set the final status and compute ``final`` from the epochs.

        ``final`` holds the last epoch's ``x/y`` metrics except ``nc/*``, and ``time/epoch_s`` (and
        ``time/epoch_cpu_s``, when the epochs have it) = the mean over the epochs that have one
        (None if none).
        """
        if status not in FINAL_STATUSES:
            raise ValueError(
                f"finalize: status must be one of {', '.join(FINAL_STATUSES)}, got {status!r}"
            )
        self.status, self.error, self.traceback = status, error, traceback
        self.stopped_at_step = int(stopped_at_step)
        last = self.epochs[-1] if self.epochs else {}
        final = {k: v for k, v in last.items() if "/" in k and not k.startswith("nc/")}
        for key in ("time/epoch_s", "time/epoch_cpu_s"):
            times = [e[key] for e in self.epochs if e.get(key) is not None]
            if times or key == "time/epoch_s":
                final[key] = sum(times) / len(times) if times else None
        self.final = final

    # ------------------------------------------------------------------ (de)serialising

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe dict written to ``metrics.json`` (NaN/inf → None, recursively)."""
        return json_safe({name: getattr(self, name) for name in _KEYS})

    def write(self, folder_or_file: str | os.PathLike[str]) -> Path:
        """Write atomically; a folder (or a path without ``.json``) means ``<it>/metrics.json``.

        The JSON text is built before anything is written: an unserialisable value leaves an
        existing file untouched.
        """
        path = Path(folder_or_file)
        if path.is_dir() or path.suffix != ".json":
            path = path / RECORD_NAME
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        atomic_write(path, text + "\n")
        return path

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "<dict>") -> RunRecord:
        """Validate ``d`` (schema 1, 2 or 3) → a record; :class:`RecordError` names source and key."""
        return cls(**checked_fields(d, source=source))

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> RunRecord:
        """Read and validate ``path`` (a ``metrics.json``, or a folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / RECORD_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"cannot read: {exc}", source=str(path)) from exc
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"not valid JSON ({exc})", source=str(path)) from exc
        return cls.from_dict(d, source=str(path))


# the order of metrics.json's keys: status and identity first, then the config, then the numbers
_FIRST = ("schema", "status", "error", "traceback", "stopped_at_step")
_KEYS = (*_FIRST, *(f.name for f in dataclasses.fields(RunRecord) if f.name not in _FIRST))
