"""``python -m accelopt.eval``: a trained run's checkpoint re-evaluated from its own config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from accelopt.eval import EvalError, add_evaluation, evaluate, read_evaluations

from .conftest import CONF_DIR, FAST, run_cli


def eval_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m accelopt.eval ARGS`` in a subprocess (the real entry point)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "accelopt.eval", "hardware.num_threads=1", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def eval_cfg(*overrides: str) -> DictConfig:
    """The composed ``eval.yaml`` (for calling :func:`accelopt.eval.evaluate` in-process)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose("eval", overrides=["hardware.num_threads=1", *overrides])
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real training run (synthetic data, one epoch) with its checkpoint and config."""
    root = tmp_path_factory.mktemp("eval")
    run = root / "run"
    proc = run_cli([*FAST, "logger=none", "seed=3", f"hydra.run.dir={run}"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    return run


def test_eval_reproduces_the_recorded_accuracy(run_dir: Path) -> None:
    proc = eval_cli([f"run_dir={run_dir}"], cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[accelopt] eval of" in proc.stdout and "eval.json" in proc.stdout
    data = json.loads((run_dir / "eval.json").read_text())
    assert data["schema"] == 2
    record = data["evaluations"][-1]
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert record["ckpt_path"] == str((run_dir / "checkpoints" / "last.ckpt").resolve())
    assert record["global_step"] > 0
    metrics = record["metrics"]
    assert set(metrics) == {"val/acc", "val/loss", "test/acc", "test/loss"}
    for key in metrics:
        assert metrics[key] == pytest.approx(final[key], rel=1e-5, abs=1e-6), key
    assert 0.3 < metrics["test/acc"] <= 1.0  # learned something, and not a constant
    assert not list(run_dir.glob("eval.json.tmp-*"))  # written atomically


def test_eval_by_ckpt_path_finds_the_run_config(run_dir: Path) -> None:
    """In-process, with ``ckpt_path`` only: the run folder is found from the checkpoint."""
    record = evaluate(eval_cfg(f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"))
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert record["run_dir"] == str(run_dir.resolve())
    assert record["metrics"]["test/acc"] == pytest.approx(final["test/acc"], abs=1e-6)


def _bad_checkpoints(run_dir: Path) -> dict[str, Path]:
    ckpts = run_dir / "checkpoints"
    good = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
    empty = ckpts / "empty.ckpt"
    empty.write_bytes(b"")
    corrupt = ckpts / "corrupt.ckpt"
    corrupt.write_bytes((ckpts / "last.ckpt").read_bytes()[:2000])
    wrong = dict(good, state_dict=dict(good["state_dict"]))
    wrong["state_dict"]["net.classifier.weight"] = torch.zeros(7, 64)  # 7 classes, not 4
    del wrong["state_dict"]["net.classifier.bias"]
    mismatch = ckpts / "mismatch.ckpt"
    torch.save(wrong, mismatch)
    return {
        "missing": ckpts / "nope.ckpt",
        "empty": empty,
        "corrupt": corrupt,
        "mismatch": mismatch,
    }


REFUSALS = {
    "missing": "is not a file",
    "empty": "is not a readable checkpoint",
    "corrupt": "is not a readable checkpoint",
    "mismatch": "does not match the run's model",
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_eval_refuses_a_bad_checkpoint(run_dir: Path, kind: str) -> None:
    path = _bad_checkpoints(run_dir)[kind]
    with pytest.raises(EvalError, match=REFUSALS[kind]) as info:
        evaluate(eval_cfg(f"ckpt_path={path}"))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if kind == "mismatch":
        assert "net.classifier.bias" in message and "(7, 64) vs (4, 64)" in message


def test_eval_cli_refusal_is_one_line_with_status_2(run_dir: Path) -> None:
    path = _bad_checkpoints(run_dir)["mismatch"]
    before = (run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None
    proc = eval_cli([f"ckpt_path={path}"], cwd=run_dir.parent)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [errors[0]] and errors[0].startswith("accelopt.eval: error: ckpt_path=")
    after = (run_dir / "eval.json").read_bytes() if (run_dir / "eval.json").exists() else None
    assert after == before  # a refused evaluation writes nothing


def _entry(step: int, limit: int | None = None, acc: float = 0.5) -> dict:
    return {
        "ckpt_path": "/r/checkpoints/last.ckpt",
        "global_step": step,
        "hardware": {"accelerator": "cpu"},
        "limit_batches": limit,
        "metrics": {"test/acc": acc},
    }


def test_eval_json_keeps_every_distinct_evaluation(tmp_path: Path) -> None:
    """Other steps / batch limits are kept; the same evaluation again replaces its entry."""
    add_evaluation(tmp_path, _entry(10))
    add_evaluation(tmp_path, _entry(20))
    add_evaluation(tmp_path, _entry(20, limit=2))
    entries = add_evaluation(tmp_path, _entry(10, acc=0.7))
    assert [(e["global_step"], e["limit_batches"]) for e in entries] == [
        (20, None),
        (20, 2),
        (10, None),
    ]
    assert entries[-1]["metrics"]["test/acc"] == 0.7
    assert read_evaluations(tmp_path) == entries


def test_eval_json_schema_1_is_read_and_kept(tmp_path: Path) -> None:
    old = {"schema": 1, **_entry(5)}
    (tmp_path / "eval.json").write_text(json.dumps(old))
    assert read_evaluations(tmp_path) == [old]
    entries = add_evaluation(tmp_path, _entry(6))
    assert [e["global_step"] for e in entries] == [5, 6]


def test_an_unreadable_eval_json_is_moved_aside_not_lost(tmp_path: Path) -> None:
    (tmp_path / "eval.json").write_text("{ not json")
    entries = add_evaluation(tmp_path, _entry(7))
    assert [e["global_step"] for e in entries] == [7]
    aside = list(tmp_path.glob("eval.json.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{ not json"
