"""The run lifecycle (issue 10): checkpoints at epoch ends, resume at boundaries, resubmission,
identity checks, pre-training failures, the run-folder lock and the cosmetic warnings.

In-process runs on synthetic data (14 steps per epoch); a "kill" is a callback that raises at a
chosen step, which leaves the run folder exactly as a killed process would (the checkpoint
callback ignores errors other than SIGTERM), plus a failed record that the resume replaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from accelopt.config import ConfigError
from accelopt.run.folder import LOCK_NAME
from accelopt.train import train

from .conftest import FAST, compose_cfg

STEPS = 14  # synthetic: 448 training samples, batch 32
BASE = [*FAST, "trainer.max_epochs=3", "logger=none"]


class Killed(RuntimeError):
    pass


class KillAtStep(L.Callback):
    """Raises before training step ``step`` (0-based global step), like a kill there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed before step {self.step}")


def _cfg(run: Path, *overrides: str, kill_at: int | None = None):
    extra = []
    if kill_at is not None:
        extra = [
            f"+callbacks.kill._target_={__name__}.KillAtStep",
            f"+callbacks.kill.step={kill_at}",
        ]
    return compose_cfg([*BASE, *overrides, *extra], run)


def _record(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("ref") / "run"
    train(_cfg(run))
    return _record(run)


def _assert_same_run(got: dict, ref: dict) -> None:
    assert got["status"] == "completed"
    assert got["train_loss"]["step"] == list(range(3 * STEPS))
    assert got["train_loss"]["value"] == ref["train_loss"]["value"]
    assert [e["epoch"] for e in got["epochs"]] == [0, 1, 2]  # each epoch's row exactly once
    for a, b in zip(got["epochs"], ref["epochs"], strict=True):
        for key in ("step", "train/loss", "val/loss", "val/acc", "test/acc"):
            assert a[key] == b[key], key
        assert a["time/epoch_s"] > 0
    assert got["final"]["test/acc"] == ref["final"]["test/acc"]


def test_default_checkpointing_saves_at_each_epoch_end_and_resume_continues(
    tmp_path: Path, reference: dict
) -> None:
    run = tmp_path / "run"
    with pytest.raises(Killed):
        train(_cfg(run, kill_at=STEPS + 3))  # killed in epoch 1, after epoch 0 ended
    saved = _ckpt(run)
    assert saved["global_step"] == STEPS  # last.ckpt of epoch 0's end, with its evaluation
    assert len(saved["callbacks"]["RunRecorder"]["epochs"]) == 1
    assert _record(run)["status"] == "failed"
    got = train(_cfg(run, "ckpt_path=last"))
    assert got["resumed_from"] == str(run / "checkpoints" / "last.ckpt")
    _assert_same_run(_record(run), reference)


def test_step_checkpoint_at_an_epochs_last_batch_keeps_its_evaluation(
    tmp_path: Path, reference: dict
) -> None:
    run = tmp_path / "run"
    every = ["callbacks.checkpoint.every_n_train_steps=7"]  # 7 divides 14: the epoch's end
    with pytest.raises(Killed):
        train(_cfg(run, *every, kill_at=2 * STEPS + 2))
    saved = _ckpt(run)
    assert saved["global_step"] == 2 * STEPS
    assert [e["epoch"] for e in saved["callbacks"]["RunRecorder"]["epochs"]] == [0, 1]
    train(_cfg(run, *every, "ckpt_path=last"))
    _assert_same_run(_record(run), reference)


def test_mid_epoch_step_checkpoint_resumes_with_the_next_batch(
    tmp_path: Path, reference: dict
) -> None:
    run = tmp_path / "run"
    every = ["callbacks.checkpoint.every_n_train_steps=5"]
    with pytest.raises(Killed):
        train(_cfg(run, *every, kill_at=STEPS + 8))
    assert _ckpt(run)["global_step"] == 20  # mid epoch 1
    train(_cfg(run, *every, "ckpt_path=last"))
    _assert_same_run(_record(run), reference)


def test_resubmitting_a_completed_run_leaves_its_record_and_more_epochs_continue(
    tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    train(_cfg(run, "trainer.max_epochs=2"))
    before = (run / "metrics.json").read_bytes()
    again = train(_cfg(run, "trainer.max_epochs=2", "ckpt_path=last"))
    assert (run / "metrics.json").read_bytes() == before
    assert again["status"] == "completed" and "already completed" in capsys.readouterr().out
    train(_cfg(run, "trainer.max_epochs=3", "ckpt_path=last"))
    got = _record(run)
    assert [e["epoch"] for e in got["epochs"]] == [0, 1, 2]
    assert got["train_loss"]["step"] == list(range(3 * STEPS))
    assert got["config"]["trainer"]["max_epochs"] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("optimizer.lr=0.5", r"optimizer\.lr: checkpoint 0\.02, now 0\.5"),
        ("optimizer=adam", r"optimizer\._target_: checkpoint 'torch\.optim\.SGD', now"),
        ("seed=7", r"seed: checkpoint 1, now 7"),
    ],
)
def test_resume_with_a_different_config_is_refused_and_nothing_is_written(
    tmp_path: Path, change: str, message: str
) -> None:
    run = tmp_path / "run"
    train(_cfg(run, "trainer.max_epochs=1"))
    before = (run / "metrics.json").read_bytes()
    ckpt_before = (run / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(ConfigError, match=message):
        train(_cfg(run, "trainer.max_epochs=2", change, "ckpt_path=last"))
    assert (run / "metrics.json").read_bytes() == before
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == ckpt_before


@pytest.fixture(scope="module")
def nc_run(tmp_path_factory) -> Path:
    """One epoch of GOSE: a checkpoint holding a run recorder's and an NC optimizer's state."""
    run = tmp_path_factory.mktemp("nc") / "run"
    train(_cfg(run, "trainer.max_epochs=1", "optimizer=gose", "optimizer.every=5"))
    return run


def _schema_1(ckpt: dict) -> None:
    """The recorder's step losses as accelopt's record schema 1 kept them."""
    state = ckpt["callbacks"]["RunRecorder"]
    loss = state.pop("train_loss")
    state["loss_steps"], state["loss_values"] = loss["step"], loss["value"]


def _nc_state_1(ckpt: dict) -> None:
    """An NC optimizer state without a version entry, as older code wrote it."""
    ckpt["optimizer_states"][0]["nc"].pop("version")


@pytest.mark.parametrize(
    ("make_old", "message"),
    [
        (None, None),  # unchanged: it resumes, so the refusals below are the old formats'
        (_schema_1, r"record schema 1; this version reads schema 2 and later"),
        (_nc_state_1, r"NC optimizer state version 1; this version reads 2"),
    ],
    ids=["current", "record-schema-1", "nc-state-1"],
)
def test_a_checkpoint_of_older_code_is_refused_in_one_line_naming_its_version(
    nc_run: Path, tmp_path: Path, make_old, message: str | None
) -> None:
    run = tmp_path / "run"
    shutil.copytree(nc_run, run)
    resume = ["trainer.max_epochs=2", "optimizer=gose", "optimizer.every=5", "ckpt_path=last"]
    if make_old is None:
        assert train(_cfg(run, *resume))["status"] == "completed"
        return
    ckpt = _ckpt(run)
    make_old(ckpt)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    before = (run / "metrics.json").read_bytes()
    line = rf"^checkpoint '.*last\.ckpt' was written by accelopt's {message}: start a new run"
    with pytest.raises(ConfigError, match=line) as err:
        train(_cfg(run, *resume))
    assert "\n" not in str(err.value)
    assert (run / "metrics.json").read_bytes() == before


def test_keys_that_may_change_on_resume_are_accepted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, "trainer.max_epochs=1"))
    train(
        _cfg(
            run,
            "trainer.max_epochs=2",
            "logger=csv",
            "hardware.num_threads=2",
            "callbacks.checkpoint.every_n_train_steps=3",
            "ckpt_path=last",
        )
    )
    assert _record(run)["status"] == "completed"


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_corrupt_or_empty_last_ckpt_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(content)
    with pytest.raises(ConfigError, match=r"last\.ckpt' is (empty|unreadable).*delete it"):
        train(_cfg(run, "ckpt_path=last"))


def test_failure_before_training_is_recorded_as_failed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(Exception, match="val_size"):
        train(_cfg(run, "dataset.val_size=100000"))
    record = _record(run)
    assert record["status"] == "failed" and "val_size" in record["error"]
    assert record["stopped_at_step"] == 0


def test_a_refused_start_never_replaces_a_trained_runs_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, "trainer.max_epochs=1"))
    before = (run / "metrics.json").read_bytes()
    with pytest.raises(ConfigError):
        train(_cfg(run, "optimizer.lr=-1"))
    assert (run / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", r"seed=-1 is invalid.*integer >= 0"),
        ("hardware.num_threads=0", r"hardware\.num_threads=0 is invalid.*integer >= 1"),
        ("hardware.precision=17", r"hardware\.precision=17 is invalid; accepted: 32-true"),
        ("optimizer.momentum=1.0", r"optimizer\.momentum=1\.0 is invalid.*\[0, 1\)"),
        ("dataset.val_size=-5", r"dataset\.val_size=-5 is invalid"),
    ],
)
def test_bad_values_are_refused_before_any_work(tmp_path: Path, override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        train(_cfg(tmp_path / "run", override))


def test_a_read_only_run_folder_is_one_clear_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    run = tmp_path / "ro"
    run.mkdir()
    run.chmod(0o500)
    with pytest.raises(ConfigError, match="is not writable"):
        train(_cfg(run))


def test_the_run_folder_lock_refuses_a_second_run_and_stale_locks_are_taken_over(
    tmp_path: Path,
) -> None:
    import socket
    import time

    run = tmp_path / "run"
    run.mkdir()
    lock = run / LOCK_NAME
    owner = {"host": socket.gethostname(), "pid": os.getppid(), "since": time.time()}
    lock.write_text(json.dumps(owner))  # a live process holds it
    with pytest.raises(ConfigError, match=rf"in use by process {os.getppid()}"):
        train(_cfg(run, "trainer.max_epochs=1"))
    assert not (run / "metrics.json").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({**owner, "pid": dead.pid}))  # its owner is gone
    with pytest.warns(UserWarning, match="stale lock"):
        train(_cfg(run, "trainer.max_epochs=1"))
    assert _record(run)["status"] == "completed"
    assert not lock.exists()  # released at the end


def test_callbacks_none_writes_no_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run, "callbacks=none", "trainer.max_epochs=1"))
    assert not (run / "checkpoints").exists()
    assert not list(run.rglob("*.ckpt"))


def test_step_checkpoints_print_no_lightning_docstring(tmp_path: Path, capfd) -> None:
    train(
        _cfg(tmp_path / "run", "trainer.max_epochs=1", "callbacks.checkpoint.every_n_train_steps=4")
    )
    captured = capfd.readouterr()
    assert "saved_models" not in captured.out + captured.err


def test_a_run_refused_for_its_lr_is_a_readable_failed_record_in_the_report(tmp_path) -> None:
    from accelopt.report import load_runs
    from accelopt.run.record import RunRecord

    run = tmp_path / "sweep" / "0_heavyball"
    with pytest.raises(ConfigError):
        train(_cfg(run, "optimizer.lr=-1"))
    record = RunRecord.read(run / "metrics.json")
    assert record.status == "failed" and record.error.startswith("optimizer.lr=-1")
    sweep = load_runs(tmp_path / "sweep")  # strict: a corrupt record would stop it
    assert [r.status for r in sweep.runs] == ["failed"]


@pytest.mark.parametrize(
    ("signum", "code"), [(15, 143), pytest.param(2, 130, marks=pytest.mark.slow)]
)  # SIGTERM; SIGINT (slow: the same path, through GracefulStop; the Ctrl+C tests cover it)
def test_a_signal_saves_a_checkpoint_records_interrupted_and_the_run_resumes(
    tmp_path: Path, signum: int, code: int
) -> None:
    import signal
    import time

    run = tmp_path / "run"
    args = [*FAST, "trainer.max_epochs=40", "logger=none", f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "accelopt.train", *args]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert last.exists(), proc.communicate()[0][-2000:]
    time.sleep(0.1)  # somewhere in epoch 1
    proc.send_signal(signal.Signals(signum))
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, out[-2000:]
    record = _record(run)
    assert record["status"] == "interrupted"
    assert record["error"] == f"interrupted by {signal.Signals(signum).name}"
    assert 0 < record["stopped_at_step"] < 40 * STEPS
    stopped, saved = record["stopped_at_step"], _ckpt(run)["global_step"]
    if stopped % STEPS:  # mid-epoch: saved where it stopped
        assert saved == stopped
    else:  # during the epoch-end evaluation: the previous consistent save stands
        assert saved in (stopped, stopped - STEPS)
    assert record["train_loss"]["step"] == list(range(record["stopped_at_step"]))
    assert not (run / LOCK_NAME).exists()
    resumed = subprocess.run(
        [*cmd, "trainer.max_epochs=3", "ckpt_path=last"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if record["stopped_at_step"] < 3 * STEPS:
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        got = _record(run)
        assert got["status"] == "completed"
        assert got["train_loss"]["step"] == list(range(3 * STEPS))
        assert [e["epoch"] for e in got["epochs"]] == [0, 1, 2]


def test_a_requeued_slurm_job_resumes_from_its_hpc_checkpoint_and_takes_its_lock(
    tmp_path: Path, monkeypatch
) -> None:
    import shutil

    run = tmp_path / "run"
    train(_cfg(run, "trainer.max_epochs=1"))
    shutil.move(run / "checkpoints" / "last.ckpt", run / "hpc_ckpt_1.ckpt")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    owner = {"host": "another-node", "pid": 1, "since": 0.0, "slurm_job": "4242"}
    (run / LOCK_NAME).write_text(json.dumps(owner))
    with pytest.warns(UserWarning, match="same SLURM job"):
        got = train(_cfg(run, "trainer.max_epochs=2"))  # no ckpt_path: Lightning's hpc resume
    assert got["resumed_from"] == str(run / "hpc_ckpt_1.ckpt")
    assert [e["epoch"] for e in got["epochs"]] == [0, 1]
    assert got["train_loss"]["step"] == list(range(2 * STEPS))
