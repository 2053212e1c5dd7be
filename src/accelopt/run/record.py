"""The run record, ``metrics.json``: its schema, written and read in one place (stdlib only).

Training fills a :class:`RunRecord` (step losses, epoch rows, curvature measurements), sets the
final status with :meth:`RunRecord.finalize` and writes it atomically with :meth:`RunRecord.write`;
the sweep report reads it back with :meth:`RunRecord.read`, which validates every field and
raises :class:`RecordError` naming the file and the bad key. The schema is documented in
``docs/architecture.md`` ("The run record"). Version 1 and 2 files (older runs) still load; a loaded
record is upgraded in memory to :data:`SCHEMA_VERSION` and written in that version.
"""

from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelopt.fileio import atomic_write

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMAS",
    "STATUSES",
    "FINAL_STATUSES",
    "RECORD_NAME",
    "NC_KEYS",
    "NC_HELDOUT_KEYS",
    "RecordError",
    "RunRecord",
    "json_safe",
]

SCHEMA_VERSION = 3
SUPPORTED_SCHEMAS = (1, 2, 3)
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")
FINAL_STATUSES = ("completed", "diverged", "failed", "interrupted")
RECORD_NAME = "metrics.json"
# the NC counters every NC run's ``nc`` holds (extras may follow), and the optional held-out ones
NC_KEYS = ("checks", "searches", "steps", "rejected", "hvps", "lambda_min", "time_s")
NC_HELDOUT_KEYS = ("heldout_curvature", "heldout_loss_change")


class RecordError(ValueError):
    """A run record that cannot be read or is not valid; the message names the file and key."""

    def __init__(self, reason: str, *, source: str = "<dict>", key: str | None = None) -> None:
        self.reason, self.source, self.key = reason, source, key
        super().__init__(f"{source}: {reason}")


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None, recursively (tuples become lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# --------------------------------------------------------------------------- validation


class _Check:
    """Field checks of one record dict; every failure names ``source`` and the key."""

    def __init__(self, d: dict[str, Any], source: str) -> None:
        self.d, self.source = d, source

    def fail(self, key: str, why: str) -> RecordError:
        return RecordError(why, source=self.source, key=key)

    def required(self, key: str, kind: str) -> Any:
        if key not in self.d:
            raise self.fail(key, f"missing field {key!r}")
        value = self.d[key]
        ok = {
            "str": isinstance(value, str) and value != "",
            "int": _is_int(value),
            "positive number": _is_number(value) and math.isfinite(value) and value > 0,
        }[kind]
        if not ok:
            raise self.fail(key, f"field {key!r} must be a {kind}, got {value!r}")
        return value

    def number(self, value: Any, what: str) -> float | None:
        if value is None:
            return None
        if not _is_number(value):
            raise self.fail(what, f"{what} must be a number or null, got {value!r}")
        return value if math.isfinite(value) else None  # ints stay ints

    def typed(self, key: str, kinds: type | tuple[type, ...], default: Any, what: str) -> Any:
        """``d[key]`` if of type ``kinds``; ``default`` (a fresh copy) if missing or null."""
        value = self.d.get(key)
        if value is None:
            return default() if callable(default) else default
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise self.fail(key, f"field {key!r} must be {what}, got {value!r}")
        return value

    def metrics(self, d: Any, what: str) -> dict[str, Any]:
        """A dict of metric name → number/null (non-numeric extras such as strings are kept)."""
        if d is None:
            return {}
        if not isinstance(d, dict):
            raise self.fail(what, f"{what} must be an object, got {type(d).__name__}")
        return {k: self.number(v, f"{what}[{k!r}]") if _is_number(v) else v for k, v in d.items()}

    def rows(self, key: str, need: str | None) -> list[dict[str, Any]]:
        """A list of metric dicts, each with an integer-valued ``need`` key (if given)."""
        raw = self.typed(key, list, list, "a list")
        out = [self.metrics(row, f"{key}[{i}]") for i, row in enumerate(raw)]
        for i, row in enumerate(out):
            value = row.get(need) if need is not None else 0
            if not _is_number(value) or value != int(value):
                raise self.fail(key, f"{key}[{i}] has no numeric {need!r}")
        return out

    def train_loss(self) -> dict[str, list[Any]]:
        tl = self.d.get("train_loss") or {"step": [], "value": []}
        if not isinstance(tl, dict) or not isinstance(tl.get("step"), list):
            raise self.fail(
                "train_loss", "field 'train_loss' must be an object with lists 'step' and 'value'"
            )
        steps, values = tl["step"], tl.get("value")
        if not isinstance(values, list) or len(steps) != len(values):
            raise self.fail(
                "train_loss", "train_loss 'step' and 'value' must be lists of the same length"
            )
        if not all(_is_int(s) for s in steps):
            raise self.fail("train_loss", "train_loss 'step' must hold integers")
        return {
            "step": list(steps),
            "value": [self.number(v, "train_loss value") for v in values],
        }

    def train_scalars(self) -> dict[str, list[Any]]:
        """``{"step": [int...], name: [number|null...]...}``, every list as long as ``step``."""
        ts = self.typed("train_scalars", dict, dict, "an object of lists")
        if not ts:
            return {"step": []}
        steps = ts.get("step")
        if not isinstance(steps, list) or not all(_is_int(s) for s in steps):
            raise self.fail("train_scalars", "train_scalars 'step' must be a list of integers")
        out: dict[str, list[Any]] = {"step": list(steps)}
        for name, values in ts.items():
            if name == "step":
                continue
            if not isinstance(values, list) or len(values) != len(steps):
                raise self.fail(
                    "train_scalars", f"train_scalars[{name!r}] must be a list as long as 'step'"
                )
            out[name] = [self.number(v, f"train_scalars[{name!r}]") for v in values]
        return out

    def targets(self) -> list[dict[str, Any]]:
        """Time-to-target entries: ``metric`` (str), ``threshold`` (number), and step, epoch,
        seconds of the first evaluation that reached it (all null if none did)."""
        raw = self.typed("targets", list, list, "a list")
        out = []
        for i, entry in enumerate(raw):
            what = f"targets[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
                raise self.fail("targets", f"{what} must be an object with a string 'metric'")
            if not _is_number(entry.get("threshold")):
                raise self.fail("targets", f"{what} has no numeric 'threshold'")
            row = self.metrics(entry, what)
            for key in ("step", "epoch"):
                if row.get(key) is not None and not _is_int(row[key]):
                    raise self.fail("targets", f"{what}[{key!r}] must be an integer or null")
            out.append(row)
        return out

    def env(self) -> dict[str, Any]:
        """The machine the run trained on: string/number/null values only."""
        env = dict(self.typed("env", dict, dict, "an object"))
        for k, v in env.items():
            if v is not None and not isinstance(v, str | int | float):
                raise self.fail("env", f"env[{k!r}] must be a string, number or null, got {v!r}")
        return env

    def header(self) -> dict[str, Any]:
        """schema, status and the identifying fields, in the order they are checked."""
        schema = self.d.get("schema")
        if not _is_int(schema) or schema not in SUPPORTED_SCHEMAS:
            supported = " or ".join(map(str, SUPPORTED_SCHEMAS))
            raise self.fail("schema", f"unsupported schema {schema!r} (expected {supported})")
        status = self.d.get("status")
        if status not in STATUSES:
            raise self.fail(
                "status", f"field 'status' must be one of {', '.join(STATUSES)}, got {status!r}"
            )
        if status == "failed":  # a run refused for a bad lr or seed records the bad value
            lr, seed = self.d.get("lr"), self.d.get("seed")
            return {
                "status": status,
                "dataset": self.required("dataset", "str"),
                "method": self.required("method", "str"),
                "lr": float(lr) if _is_number(lr) else math.nan,
                "seed": seed if _is_int(seed) else -1,
            }
        return {
            "status": status,
            "dataset": self.required("dataset", "str"),
            "method": self.required("method", "str"),
            "lr": float(self.required("lr", "positive number")),
            "seed": self.required("seed", "int"),
        }

    def optional_text(self, key: str) -> str | None:
        value = self.d.get(key)
        return None if value is None else value if isinstance(value, str) else str(value)


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
        if not _is_int(epoch):
            raise ValueError(f"add_epoch: row['epoch'] must be an integer, got {epoch!r}")
        row = json_safe(dict(row))
        for i in range(len(self.epochs) - 1, -1, -1):
            if self.epochs[i].get("epoch") == epoch:
                self.epochs[i] = row
                return
        self.epochs.append(row)

    def truncate(self, step: int) -> None:
        """Forget what happened from global step ``step`` on (a run resumed from there).

        Drops step losses with step ≥ ``step``, epochs and evaluations whose ``"step"`` >
        ``step`` and train scalars with step > ``step``.
        """
        steps, values = self.train_loss["step"], self.train_loss["value"]
        keep = [i for i, s in enumerate(steps) if s < step]
        self.train_loss = {"step": [steps[i] for i in keep], "value": [values[i] for i in keep]}
        self.epochs = [e for e in self.epochs if (e.get("step") or 0) <= step]
        self.evals = [e for e in self.evals if (e.get("step") or 0) <= step]
        keep = [i for i, s in enumerate(self.train_scalars["step"]) if s <= step]
        self.train_scalars = {k: [v[i] for i in keep] for k, v in self.train_scalars.items()}

    def add_eval(self, row: dict[str, Any]) -> None:
        """Append one evaluation's row (``step`` required); a row with the same step is replaced."""
        if not _is_int(row.get("step")):
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
        if not isinstance(d, dict):
            raise RecordError("not a JSON object", source=source)
        c = _Check(d, source)
        head = c.header()
        stopped = d.get("stopped_at_step")
        if stopped is not None and not _is_int(stopped):
            raise c.fail(
                "stopped_at_step",
                f"field 'stopped_at_step' must be an integer or null, got {stopped!r}",
            )
        nc_raw = d.get("nc")
        world = c.typed("world_size", int, 1, "a positive integer")
        if world < 1:
            raise c.fail(
                "world_size", f"field 'world_size' must be a positive integer, got {world}"
            )
        digests = c.typed("param_digests", list, list, "a list of strings")
        if not all(isinstance(x, str) for x in digests):
            raise c.fail("param_digests", "field 'param_digests' must be a list of strings")
        return cls(
            **head,
            error=c.optional_text("error"),
            traceback=c.optional_text("traceback"),
            stopped_at_step=stopped,
            config_groups=dict(c.typed("config_groups", dict, dict, "an object")),
            overrides=list(c.typed("overrides", list, list, "a list")),
            config=dict(c.typed("config", dict, dict, "an object")),
            output_dir=c.typed("output_dir", str, "", "a string"),
            epochs=c.rows("epochs", need="epoch"),
            train_loss=c.train_loss(),
            final=c.metrics(d.get("final"), "final"),
            nc=c.metrics(nc_raw, "nc") if nc_raw else None,
            curvature=c.rows("curvature", need="step"),
            nc_steps=c.rows("nc_steps", need=None),
            duration_s=c.number(d.get("duration_s"), "duration_s"),
            world_size=world,
            resumed_from=c.optional_text("resumed_from"),
            param_digests=list(digests),
            variant=c.optional_text("variant"),
            env=c.env(),
            evals=c.rows("evals", need="step"),
            targets=c.targets(),
            stop_reason=c.optional_text("stop_reason"),
            train_scalars=c.train_scalars(),
        )

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


_KEYS = (
    "schema",
    "status",
    "error",
    "traceback",
    "stopped_at_step",
    "method",
    "dataset",
    "lr",
    "seed",
    "config_groups",
    "overrides",
    "config",
    "output_dir",
    "epochs",
    "train_loss",
    "final",
    "nc",
    "curvature",
    "nc_steps",
    "duration_s",
    "world_size",
    "resumed_from",
    "param_digests",
    "variant",
    "env",
    "evals",
    "targets",
    "stop_reason",
    "train_scalars",
)
