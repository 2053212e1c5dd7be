"""Tests of the run record (``accelopt.run.record``) and the atomic-write helper (``accelopt.fileio``)."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from accelopt import fileio
from accelopt.run.record import RECORD_NAME, RunRecord
from accelopt.run.record_check import FINAL_STATUSES, SCHEMA_VERSION, STATUSES, RecordError

# a version-1 record exactly as docs/architecture.md documents it ("The run record")
V1 = {
    "schema": 1,
    "status": "completed",
    "error": None,
    "stopped_at_step": 2814,
    "method": "gose_original",
    "dataset": "mnist",
    "lr": 0.02,
    "seed": 1,
    "config_groups": {"optimizer": "gose_original", "dataset": "mnist", "model": "cnn"},
    "overrides": ["optimizer=gose_original", "seed=1"],
    "config": {"seed": 1, "optimizer": {"lr": 0.02}},
    "output_dir": "/abs/path/of/the/run",
    "epochs": [
        {
            "epoch": 0,
            "step": 469,
            "train/loss": 0.3,
            "val/loss": 0.1,
            "val/acc": 0.97,
            "test/acc": 0.97,
            "time/epoch_s": 8.1,
            "nc/checks": 30,
            "nc/searches": 0,
        }
    ],
    "train_loss": {"step": [0, 1, 2], "value": [2.30, 2.29, 2.27]},
    "final": {"test/acc": 0.99, "val/acc": 0.99, "val/loss": 0.03, "time/epoch_s": 8.0},
    "nc": {
        "checks": 180,
        "searches": 0,
        "steps": 0,
        "rejected": 0,
        "hvps": 0,
        "lambda_min": None,
        "time_s": 1.2,
    },
    "duration_s": 60.0,
    "world_size": 1,
    "resumed_from": None,
    "param_digests": ["abc", "abc"],
}


def filled() -> RunRecord:
    rec = RunRecord(method="gose", dataset="mnist", lr=0.05, seed=3, config={"a": [1, 2]})
    for step in range(6):
        rec.add_step_loss(step, 2.0 - 0.1 * step)
    for epoch in range(2):
        rec.add_epoch(
            {"epoch": epoch, "step": 3 * (epoch + 1), "test/acc": 0.5 + epoch / 10, "nc/steps": 1}
        )
    rec.curvature.append({"step": 3, "lambda_min": -0.5, "lambda_max": 12.0, "grad_norm": 0.1})
    rec.nc = {"checks": 6, "steps": 1, "lambda_min": -0.5}
    return rec


def test_round_trip(tmp_path: Path) -> None:
    rec = filled()
    rec.finalize("completed", stopped_at_step=6)
    path = rec.write(tmp_path / "run")
    assert path == tmp_path / "run" / RECORD_NAME
    back = RunRecord.read(path)
    assert back == rec
    assert back.to_dict() == json.loads(path.read_text())
    assert back.schema == SCHEMA_VERSION and back.epochs[0]["epoch"] == 0
    assert isinstance(back.epochs[0]["epoch"], int)
    assert RunRecord.read(tmp_path / "run") == rec  # a folder means folder/metrics.json
    assert rec.write(tmp_path / "x.json") == tmp_path / "x.json"


def test_non_finite_written_as_null(tmp_path: Path) -> None:
    rec = filled()
    rec.add_step_loss(6, float("nan"))
    rec.add_step_loss(7, float("inf"))
    rec.add_epoch({"epoch": 2, "step": 9, "val/loss": float("nan")})
    rec.nc = {"lambda_min": float("-inf"), "checks": 3}
    rec.curvature.append({"step": 9, "lambda_min": float("nan")})
    rec.finalize("diverged", stopped_at_step=7, error="loss is nan")
    text = rec.write(tmp_path).read_text()
    assert "NaN" not in text and "Infinity" not in text
    d = json.loads(text)
    assert d["train_loss"]["value"][-2:] == [None, None]
    assert d["epochs"][-1]["val/loss"] is None and d["final"]["val/loss"] is None
    assert d["nc"]["lambda_min"] is None and d["curvature"][-1]["lambda_min"] is None
    assert d["status"] == "diverged" and d["error"] == "loss is nan"


def test_v1_record_loads(tmp_path: Path) -> None:
    (tmp_path / RECORD_NAME).write_text(json.dumps(V1))
    rec = RunRecord.read(tmp_path / RECORD_NAME)
    assert (rec.method, rec.dataset, rec.lr, rec.seed, rec.status) == (
        "gose_original",
        "mnist",
        0.02,
        1,
        "completed",
    )
    assert rec.train_loss == V1["train_loss"] and rec.epochs == V1["epochs"]
    assert rec.nc == V1["nc"] and rec.final == V1["final"] and rec.param_digests == ["abc", "abc"]
    assert rec.curvature == [] and rec.nc_steps == [] and rec.traceback is None
    # the minimal v1 record the old report accepted: optional fields absent
    minimal = {k: V1[k] for k in ("schema", "status", "method", "dataset", "lr", "seed")}
    rec = RunRecord.from_dict(minimal)
    assert rec.stopped_at_step is None and rec.epochs == [] and rec.nc is None
    assert rec.train_loss == {"step": [], "value": []} and rec.world_size == 1
    # upgraded on write
    assert json.loads(rec.write(tmp_path / "new").read_text())["schema"] == SCHEMA_VERSION


BAD = [
    ({"schema": 4}, "schema", "unsupported schema 4"),
    ({"schema": None}, "schema", "unsupported schema None"),
    ({"status": "exploded"}, "status", "'exploded'"),
    ({"method": ""}, "method", "'method' must be a str"),
    ({"dataset": 5}, "dataset", "'dataset' must be a str"),
    ({"lr": -0.1}, "lr", "'lr' must be a positive number, got -0.1"),
    ({"lr": "0.1"}, "lr", "'lr' must be a positive number"),
    ({"seed": 1.5}, "seed", "'seed' must be a int, got 1.5"),
    ({"seed": True}, "seed", "'seed' must be a int"),
    ({"stopped_at_step": "x"}, "stopped_at_step", "'stopped_at_step' must be an integer"),
    ({"epochs": {"a": 1}}, "epochs", "'epochs' must be a list"),
    ({"epochs": [{"step": 1}]}, "epochs", "epochs[0] has no numeric 'epoch'"),
    ({"epochs": [3]}, "epochs[0]", "epochs[0] must be an object"),
    ({"train_loss": {"step": [0, 1], "value": [1.0]}}, "train_loss", "same length"),
    ({"train_loss": {"step": [0.5], "value": [1.0]}}, "train_loss", "must hold integers"),
    ({"train_loss": [1, 2]}, "train_loss", "must be an object"),
    ({"train_loss": {"step": [0], "value": ["a"]}}, "train_loss value", "'a'"),
    ({"final": [1]}, "final", "final must be an object"),
    ({"nc": {"steps": "many"}}, None, None),  # non-numeric extras are kept
    ({"duration_s": "long"}, "duration_s", "duration_s must be a number or null"),
    ({"world_size": 0}, "world_size", "'world_size' must be a positive integer, got 0"),
    ({"param_digests": [1]}, "param_digests", "list of strings"),
    ({"config": [1]}, "config", "'config' must be an object"),
    ({"curvature": [{"lambda_min": 1.0}]}, "curvature", "curvature[0] has no numeric 'step'"),
    ({"nc_steps": "x"}, "nc_steps", "'nc_steps' must be a list"),
    ({"evals": [{"val/acc": 0.9}]}, "evals", "evals[0] has no numeric 'step'"),
    ({"evals": [{"step": 1, "val/acc": [1]}]}, "evals[0]", None),  # kept: a non-number extra
    ({"targets": [{"metric": "val/acc"}]}, "targets", "targets[0] has no numeric 'threshold'"),
    ({"targets": [{"threshold": 0.9}]}, "targets", "string 'metric'"),
    ({"targets": [{"metric": "val/acc", "threshold": 0.9, "step": 1.5}]}, "targets", "'step'"),
    ({"train_scalars": {"step": [1, 2], "train/lr": [0.1]}}, "train_scalars", "as long as"),
    ({"train_scalars": {"step": ["a"]}}, "train_scalars", "list of integers"),
    ({"env": {"hostname": ["a"]}}, "env", "env['hostname'] must be a string"),
    ({"env": "host"}, "env", "'env' must be an object"),
    ({"variant": 5}, None, None),  # text fields are read as text
]


@pytest.mark.parametrize("change,key,words", BAD, ids=[str(b[0])[:40] for b in BAD])
def test_validation_errors_name_the_key(
    change: dict[str, Any], key: str | None, words: str
) -> None:
    d = {**V1, **change}
    if words is None:  # accepted as it is
        RunRecord.from_dict(d)
        return
    with pytest.raises(RecordError) as info:
        RunRecord.from_dict(d, source="runs/7/metrics.json")
    assert info.value.key == key
    assert str(info.value).startswith("runs/7/metrics.json: ")
    assert words in str(info.value)


@pytest.mark.parametrize("missing", ["schema", "status", "method", "dataset", "lr", "seed"])
def test_missing_required_field(missing: str) -> None:
    d = {k: v for k, v in V1.items() if k != missing}
    with pytest.raises(RecordError, match=missing):
        RunRecord.from_dict(d)


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / RECORD_NAME
    for text, words in [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("", "not valid JSON"),
    ]:
        path.write_text(text)
        with pytest.raises(RecordError, match=words) as info:
            RunRecord.read(path)
        assert str(path) in str(info.value)
    with pytest.raises(RecordError, match="cannot read"):
        RunRecord.read(tmp_path / "missing.json")
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(RecordError, match="cannot read"):
        RunRecord.read(path)


def test_statuses() -> None:
    assert set(FINAL_STATUSES) < set(STATUSES) and "running" not in FINAL_STATUSES
    for status in STATUSES:
        assert RunRecord.from_dict({**V1, "status": status}).status == status
    rec = filled()
    with pytest.raises(ValueError, match="'running'"):
        rec.finalize("running", stopped_at_step=0)
    rec.finalize("interrupted", stopped_at_step=4, error="KeyboardInterrupt", traceback="tb")
    assert (rec.status, rec.stopped_at_step, rec.traceback) == ("interrupted", 4, "tb")


def test_finalize_final_metrics() -> None:
    rec = RunRecord(method="m", dataset="d", lr=0.1, seed=1)
    rec.finalize("failed", stopped_at_step=0, error="boom")
    assert rec.final == {"time/epoch_s": None}
    rec.add_epoch({"epoch": 0, "step": 5, "test/acc": 0.5, "time/epoch_s": 2.0, "nc/steps": 1})
    rec.add_epoch({"epoch": 1, "step": 10, "test/acc": 0.7, "time/epoch_s": None, "lr": 3})
    rec.add_epoch({"epoch": 2, "step": 15, "test/acc": 0.8, "time/epoch_s": 4.0, "nc/steps": 2})
    rec.finalize("completed", stopped_at_step=15)
    assert rec.final == {"test/acc": 0.8, "time/epoch_s": 3.0}
    assert rec.error is None


def test_add_step_loss_and_add_epoch_idempotent_on_resume() -> None:
    rec = filled()
    before = rec.to_dict()
    # a resumed run re-logs steps 3..5 and epoch 1: replaced, not duplicated
    for step in range(3, 6):
        rec.add_step_loss(step, 2.0 - 0.1 * step)
    rec.add_epoch({"epoch": 1, "step": 6, "test/acc": 0.6, "nc/steps": 1})
    assert rec.to_dict() == before
    rec.add_step_loss(4, 9.0)
    assert rec.train_loss["step"] == [0, 1, 2, 3, 4, 5]
    assert rec.train_loss["value"][4] == 9.0
    rec.add_step_loss(10, 1.0)
    rec.add_step_loss(8, 1.5)  # out of order: inserted where it belongs
    assert rec.train_loss["step"] == [0, 1, 2, 3, 4, 5, 8, 10]
    rec.add_epoch({"epoch": 0, "step": 3, "test/acc": 0.1})
    assert [e["epoch"] for e in rec.epochs] == [0, 1] and rec.epochs[0]["test/acc"] == 0.1
    with pytest.raises(ValueError, match="epoch"):
        rec.add_epoch({"step": 3})


def test_write_keeps_old_file_when_serialising_fails(tmp_path: Path) -> None:
    rec = filled()
    path = rec.write(tmp_path)
    old = path.read_bytes()
    rec.config["bad"] = object()
    with pytest.raises(TypeError):
        rec.write(tmp_path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECORD_NAME]


def test_atomic_write_error_removes_temp_and_keeps_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.txt"
    fileio.atomic_write(path, "old")

    def boom(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        fileio.atomic_write(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_write_mode_parents_and_stale_temps(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "f.bin"
    old_umask = os.umask(0o022)
    try:
        fileio.atomic_write(path, b"\x00\x01")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = path.with_name(f"f.bin.tmp-{dead}")  # left by a writer that was killed
    stale.write_text("partial")
    live = path.with_name(f"f.bin.tmp-{os.getppid()}")  # a writer still at work
    live.write_text("in progress")
    other = path.with_name(f"g.bin.tmp-{dead}")  # another file's
    other.write_text("someone else's")
    fileio.atomic_write(path, "é")
    assert path.read_text(encoding="utf-8") == "é"
    assert not stale.exists() and live.exists() and other.exists()
    with pytest.raises(TypeError, match="bytes or str"):
        fileio.atomic_write(path, 3)  # type: ignore[arg-type]


def test_add_step_loss_is_cheap() -> None:
    rec = RunRecord(method="m", dataset="d", lr=0.1, seed=1)
    t0 = time.perf_counter()
    for step in range(200_000):
        rec.add_step_loss(step, 1.0)
    assert time.perf_counter() - t0 < 5.0  # an O(n) scan per step would take minutes
    assert len(rec.train_loss["step"]) == 200_000 and not math.isnan(rec.train_loss["value"][-1])


def test_record_module_is_stdlib_only() -> None:
    code = (
        "import sys, accelopt.run.record, accelopt.run.record_check, accelopt.fileio; "
        "print(any(m in sys.modules for m in ('torch', 'lightning', 'hydra', 'numpy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_schema_3_fields_round_trip(tmp_path: Path) -> None:
    rec = filled()
    rec.variant, rec.env = (
        "0123456789",
        {"hostname": "h", "num_threads": 2, "CUDA_VISIBLE_DEVICES": None},
    )
    rec.add_eval({"step": 20, "epoch": 0, "time/train_s": 2.0, "val/acc": 0.9})
    rec.add_eval({"step": 10, "epoch": 0, "time/train_s": 1.0, "val/acc": float("nan")})
    rec.add_eval({"step": 20, "epoch": 0, "time/train_s": 2.5, "val/acc": 0.91})  # replaces
    rec.targets = [{"metric": "val/acc", "threshold": 0.9, "step": 20, "epoch": 0}]
    rec.add_train_scalars(10, {"train/lr": 0.1})
    rec.add_train_scalars(20, {"train/lr": 0.1, "train/grad_norm": 2.0})
    rec.add_train_scalars(20, {"train/lr": 9.0})  # a step already there: ignored
    rec.stop_reason = "stop_at_target: every target reached"
    back = RunRecord.read(rec.write(tmp_path))
    assert [e["step"] for e in back.evals] == [10, 20] and back.evals[0]["val/acc"] is None
    assert back.evals[1]["val/acc"] == 0.91
    assert back.train_scalars == {
        "step": [10, 20],
        "train/lr": [0.1, 0.1],
        "train/grad_norm": [None, 2.0],
    }
    assert (back.variant, back.env, back.targets, back.stop_reason) == (
        rec.variant,
        rec.env,
        rec.targets,
        rec.stop_reason,
    )
