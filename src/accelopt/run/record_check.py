"""Reading a run record back: every field of ``metrics.json`` checked, and its schema versions.

:func:`checked_fields` validates a record dict (as :meth:`accelopt.run.record.RunRecord.read`
loads it) field by field and raises :class:`RecordError` naming the file and the bad key. Version
1 and 2 files (older runs) still load; :data:`SCHEMA_VERSION` is the version written now.
"""

from __future__ import annotations

import math
from typing import Any

from accelopt.checks import is_finite, is_instance, is_int, is_number

__all__ = [
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "SUPPORTED_SCHEMAS",
    "RecordCheck",
    "RecordError",
    "checked_fields",
]

SCHEMA_VERSION = 3
SUPPORTED_SCHEMAS = (1, 2, 3)
STATUSES = ("running", "completed", "diverged", "failed", "interrupted")
FINAL_STATUSES = ("completed", "diverged", "failed", "interrupted")


class RecordError(ValueError):
    """A run record that cannot be read or is not valid; the message names the file and key."""

    def __init__(self, reason: str, *, source: str = "<dict>", key: str | None = None) -> None:
        self.reason, self.source, self.key = reason, source, key
        super().__init__(f"{source}: {reason}")


class RecordCheck:
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
            "int": is_int(value),
            "positive number": is_finite(value) and value > 0,
        }[kind]
        if not ok:
            raise self.fail(key, f"field {key!r} must be a {kind}, got {value!r}")
        return value

    def number(self, value: Any, what: str) -> float | None:
        if value is None:
            return None
        if not is_number(value):
            raise self.fail(what, f"{what} must be a number or null, got {value!r}")
        return value if math.isfinite(value) else None  # ints stay ints

    def typed(self, key: str, kinds: type | tuple[type, ...], default: Any, what: str) -> Any:
        """``d[key]`` if of type ``kinds``; ``default`` (a fresh copy) if missing or null."""
        value = self.d.get(key)
        if value is None:
            return default() if callable(default) else default
        if not is_instance(value, kinds):
            raise self.fail(key, f"field {key!r} must be {what}, got {value!r}")
        return value

    def metrics(self, d: Any, what: str) -> dict[str, Any]:
        """A dict of metric name → number/null (non-numeric extras such as strings are kept)."""
        if d is None:
            return {}
        if not isinstance(d, dict):
            raise self.fail(what, f"{what} must be an object, got {type(d).__name__}")
        return {k: self.number(v, f"{what}[{k!r}]") if is_number(v) else v for k, v in d.items()}

    def rows(self, key: str, need: str | None) -> list[dict[str, Any]]:
        """A list of metric dicts, each with an integer-valued ``need`` key (if given)."""
        raw = self.typed(key, list, list, "a list")
        out = [self.metrics(row, f"{key}[{i}]") for i, row in enumerate(raw)]
        for i, row in enumerate(out):
            value = row.get(need) if need is not None else 0
            if not is_number(value) or value != int(value):
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
        if not all(is_int(s) for s in steps):
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
        if not isinstance(steps, list) or not all(is_int(s) for s in steps):
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
            if not is_number(entry.get("threshold")):
                raise self.fail("targets", f"{what} has no numeric 'threshold'")
            row = self.metrics(entry, what)
            for key in ("step", "epoch"):
                if row.get(key) is not None and not is_int(row[key]):
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
        if not is_int(schema) or schema not in SUPPORTED_SCHEMAS:
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
                "lr": float(lr) if is_number(lr) else math.nan,
                "seed": seed if is_int(seed) else -1,
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


def checked_fields(d: Any, *, source: str = "<dict>") -> dict[str, Any]:
    """The fields of a record dict (schema 1, 2 or 3), validated: :class:`RecordError`
    names ``source`` and the first bad key."""
    if not isinstance(d, dict):
        raise RecordError("not a JSON object", source=source)
    c = RecordCheck(d, source)
    head = c.header()
    stopped = d.get("stopped_at_step")
    if stopped is not None and not is_int(stopped):
        raise c.fail(
            "stopped_at_step",
            f"field 'stopped_at_step' must be an integer or null, got {stopped!r}",
        )
    nc_raw = d.get("nc")
    world = c.typed("world_size", int, 1, "a positive integer")
    if world < 1:
        raise c.fail("world_size", f"field 'world_size' must be a positive integer, got {world}")
    digests = c.typed("param_digests", list, list, "a list of strings")
    if not all(isinstance(x, str) for x in digests):
        raise c.fail("param_digests", "field 'param_digests' must be a list of strings")
    return dict(
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
