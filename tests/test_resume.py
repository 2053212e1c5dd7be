"""Resume (issue 6): a run killed with SIGKILL mid-epoch restarts with ``ckpt_path=last`` and
finishes exactly as an uninterrupted run would; checkpoint files are written atomically; a run
killed after an epoch keeps a ``running`` record of the epochs it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from accelopt.run.checkpoint import AtomicCheckpointIO

from .conftest import FAST, run_cli

STEPS_PER_EPOCH = 14  # synthetic: 512 - 64 held out = 448 samples, batch 32
EPOCHS = 4
EVERY = 5  # never a multiple of 14 below 56: every checkpoint of this run is mid-epoch
ARGS = [
    *FAST,
    f"trainer.max_epochs={EPOCHS}",
    "logger=none",
    f"callbacks.checkpoint.every_n_train_steps={EVERY}",
    # an NC optimizer with state that matters: momentum, Lanczos warm start, its generator,
    # counters, and probes drawn from the data module's stream
    "optimizer=gose",
    "optimizer.every=2",
    "optimizer.check=always",
]


def _popen(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "accelopt.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_sigkill_mid_epoch_then_ckpt_path_last_finishes_like_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    killed_dir, full_dir = tmp_path / "killed", tmp_path / "full"
    reference = _popen([*ARGS, f"hydra.run.dir={full_dir}"], tmp_path)  # runs meanwhile
    victim = _popen([*ARGS, f"hydra.run.dir={killed_dir}"], tmp_path)
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert last.exists(), "no checkpoint appeared"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "metrics.json").exists()  # it did not finish

    saved = torch.load(last, weights_only=True)  # readable, whenever the kill came
    step = saved["global_step"]
    assert 0 < step < EPOCHS * STEPS_PER_EPOCH and step % STEPS_PER_EPOCH != 0  # mid-epoch
    assert "nc" in saved["optimizer_states"][0]  # NCEscape's own state is in the checkpoint
    assert "ClassificationDataModule" in saved  # the probe stream's position too

    resumed = run_cli([*ARGS, "ckpt_path=last", f"hydra.run.dir={killed_dir}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert reference.wait(timeout=240) == 0
    got = json.loads((killed_dir / "metrics.json").read_text())
    ref = json.loads((full_dir / "metrics.json").read_text())

    assert got["status"] == "completed"
    assert got["resumed_from"] == str(last)
    assert got["stopped_at_step"] == EPOCHS * STEPS_PER_EPOCH
    # one loss per step, contiguous, no step trained twice or skipped
    assert got["train_loss"]["step"] == list(range(EPOCHS * STEPS_PER_EPOCH))
    # and the very same trajectory as the run that was never interrupted (CPU, 1 thread)
    assert got["train_loss"]["value"] == ref["train_loss"]["value"]
    assert [e["step"] for e in got["epochs"]] == [STEPS_PER_EPOCH * (i + 1) for i in range(EPOCHS)]
    assert [e["train/loss"] for e in got["epochs"]] == [e["train/loss"] for e in ref["epochs"]]
    for key in ("checks", "searches", "steps", "rejected", "hvps", "lambda_min"):
        assert got["nc"][key] == ref["nc"][key], key
    assert got["nc"]["steps"] > 0


@pytest.mark.slow
def test_sigkill_after_an_epoch_leaves_a_running_record_that_resume_completes(
    tmp_path: Path,
) -> None:
    """The record is written after every epoch: a run killed outright keeps what it finished."""
    run_dir = tmp_path / "run"
    args = [*ARGS, "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"]
    victim = _popen(args, tmp_path)
    record = run_dir / "metrics.json"
    deadline = time.monotonic() + 240
    while not record.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    kept = json.loads(record.read_text())
    assert kept["status"] == "running" and kept["error"] is None
    n = len(kept["epochs"])
    assert n >= 1 and kept["stopped_at_step"] == n * STEPS_PER_EPOCH
    assert kept["train_loss"]["step"] == list(range(n * STEPS_PER_EPOCH))
    assert kept["nc"]["checks"] > 0 and kept["duration_s"] > 0

    refused = run_cli([*args, "optimizer.lr=-1"], tmp_path)  # a start that fails ...
    assert refused.returncode == 2
    assert json.loads(record.read_text()) == kept  # ... never replaces the killed run's record

    resumed = run_cli([*args, "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = json.loads(record.read_text())
    assert done["status"] == "completed" and len(done["epochs"]) == 3

    # the same epochs (their clocks aside: killed between the record and the epoch's checkpoint,
    # the resumed run finishes that epoch again from a mid-epoch checkpoint and re-times it)
    def untimed(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if "time" not in k} for r in rows]

    assert untimed(done["epochs"][:n]) == untimed(kept["epochs"])


def test_ckpt_path_must_name_a_file(make_cfg, tmp_path: Path) -> None:
    from accelopt.config import ConfigError
    from accelopt.train import train

    with pytest.raises(ConfigError, match="ckpt_path="):
        train(make_cfg(f"ckpt_path={tmp_path / 'missing.ckpt'}"))


def test_trainer_writes_checkpoints_through_the_atomic_io(make_cfg) -> None:
    from accelopt.run.build import build_trainer

    cfg = make_cfg()
    trainer = build_trainer(cfg, Path(cfg.output_dir), [])
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crash(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        AtomicCheckpointIO().save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # temp file removed


KILL_MID_WRITE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    import accelopt.run.checkpoint as ck

    path, marker = Path(sys.argv[1]), Path(sys.argv[2])
    ck.atomic_torch_save({"step": 1, "w": torch.ones(1000)}, path)

    class Stuck:  # writes half of the bytes, then hangs until killed
        def __init__(self, f):
            self.f = f
        def write(self, data):
            data = bytes(data)
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            marker.touch()
            time.sleep(600)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()

    import os
    real_fdopen = os.fdopen
    os.fdopen = lambda *a, **k: Stuck(real_fdopen(*a, **k))  # the file atomic_write writes
    ck.atomic_torch_save({"step": 2, "w": torch.zeros(1000)}, path)
    """
)


def test_sigkill_during_a_save_never_breaks_the_checkpoint(tmp_path: Path) -> None:
    path, marker = tmp_path / "ckpt" / "last.ckpt", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", KILL_MID_WRITE, str(path), str(marker)])
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the child never reached the second save"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = [p for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert len(partial) == 1 and partial[0].name.startswith("last.ckpt.tmp-")
    with pytest.raises(Exception):  # noqa: B017 - the half-written file is not a checkpoint
        torch.load(partial[0], weights_only=True)
    assert torch.load(path, weights_only=True)["step"] == 1  # the good one is intact
    # and Lightning's ckpt_path="last" search ignores the partial file (suffix is not .ckpt)
    assert partial[0].suffix != ".ckpt"
    # the next successful save replaces the checkpoint and removes the leftover
    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["step"] == 3
