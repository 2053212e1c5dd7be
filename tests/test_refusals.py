"""Refused runs change nothing, and every refusal is one line (issue 18, the run lifecycle).

In-process runs on synthetic data (14 steps per epoch) where the behaviour is train()'s; the real
entry point (a subprocess) where Hydra or the process exit is part of it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger

from accelopt.config import ConfigError
from accelopt.eval import EvalError, evaluate
from accelopt.run.folder import LOCK_NAME, RunLock
from accelopt.train import train

from .conftest import FAST, ROOT, compose_cfg, run_cli
from .test_eval import eval_cfg

STEPS = 14  # synthetic: 448 training samples, batch 32
BASE = [*FAST, "logger=none"]


def _cfg(run: Path, *overrides: str):
    return compose_cfg([*BASE, *overrides], run)


def _snapshot(run: Path) -> dict[str, bytes]:
    """Every file under ``run`` with its bytes (what a refused run must leave as it was)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _record(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _one_line_refusal(proc: subprocess.CompletedProcess, pattern: str) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "UserWarning: Callback" not in proc.stderr  # Hydra's note of a failing callback
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("accelopt: error:")]
    assert len(lines) == 1 and pattern in lines[0], proc.stderr[-2000:]
    return lines[0]


@contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` made read-only: by its mode, or (as root, whom modes do not stop) immutable."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        undo = ["chmod", "700", str(folder)]
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)]).returncode == 0:
        undo = ["chattr", "-i", str(folder)]
    else:
        pytest.skip("cannot make a folder read-only for root here (no chattr)")
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


# -- 1. a refused run leaves Hydra's files (and everything else) as they were ------------------
@pytest.mark.slow
def test_a_refused_run_rewrites_none_of_hydras_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [*BASE, f"hydra.run.dir={run}"]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "hydra.yaml").is_file()
    before = _snapshot(run)
    changed = run_cli(
        [*args, "optimizer.lr=0.5", "dataset.val_size=96", "ckpt_path=last"], tmp_path
    )
    _one_line_refusal(changed, "optimizer.lr: checkpoint 0.02, now 0.5")
    assert _snapshot(run) == before
    with RunLock(run):  # this process holds the folder: a second run is refused
        locked = run_cli([*args, "trainer.max_epochs=2", "ckpt_path=last"], tmp_path)
        _one_line_refusal(locked, "is in use by process")
        assert _snapshot(run) == {**before, LOCK_NAME: (run / LOCK_NAME).read_bytes()}
    assert _snapshot(run) == before


def test_hydra_files_are_written_once_the_run_is_accepted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = _cfg(run, "seed=5")
    train(cfg)
    from omegaconf import OmegaConf

    assert OmegaConf.load(run / ".hydra" / "config.yaml") == cfg
    assert "seed=5" in OmegaConf.load(run / ".hydra" / "overrides.yaml")
    assert OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra.runtime.output_dir == str(run)


# -- 2. eval checks the checkpoint's identity against the config it rebuilds from --------------
def test_eval_refuses_a_checkpoint_from_another_run(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    train(_cfg(a))
    train(_cfg(b, "dataset.val_size=96"))  # same network and tensor shapes, another split
    shutil.copy(a / "checkpoints" / "last.ckpt", b / "checkpoints" / "last.ckpt")
    with pytest.raises(EvalError, match=r"dataset\.val_size: checkpoint 64, now 96") as err:
        evaluate(eval_cfg(f"run_dir={b}"))
    assert "run_dir=" in str(err.value) and "\n" not in str(err.value)
    assert not (b / "eval.json").exists()
    assert evaluate(eval_cfg(f"run_dir={a}"))["metrics"]  # its own run: evaluated


class EndlessGuard(L.Callback):
    """Ends a run that was accepted but should not have been (100 steps: more than any here)."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= 100:
            raise RuntimeError("accepted a run that does not end")


# -- 3, 8. value errors of the trainer and checkpoint keys: one line, before any work ----------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=-1", r"max_epochs=-1 with trainer\.max_steps=-1 would train forever"),
        ("trainer.max_steps=-5", r"trainer\.max_steps=-5 is invalid"),
        ("trainer.limit_val_batches=-1", r"trainer\.limit_val_batches=-1 is invalid"),
        ("trainer.limit_train_batches=1.5", r"trainer\.limit_train_batches=1\.5 is invalid"),
        (
            "callbacks.checkpoint.every_n_train_steps=0",
            r"callbacks\.checkpoint\.every_n_train_steps=0 is invalid",
        ),
    ],
)
def test_trainer_values_that_never_end_or_make_no_sense_are_one_line(
    tmp_path: Path, override: str, message: str
) -> None:
    guard = [f"+callbacks.guard._target_={__name__}.EndlessGuard"]  # an accepted one must not hang
    with pytest.raises(ConfigError, match=message) as err:
        train(_cfg(tmp_path / "run", override, *guard))
    assert "\n" not in str(err.value)
    assert _record(tmp_path / "run")["stopped_at_step"] == 0  # failed before any training


def test_accepted_limits_and_step_counts_still_train(tmp_path: Path) -> None:
    record = train(
        _cfg(
            tmp_path / "run",
            "trainer.max_epochs=-1",
            "trainer.max_steps=5",
            "trainer.limit_val_batches=1.0",
            "callbacks.checkpoint.every_n_train_steps=2",
        )
    )
    assert record["status"] == "completed" and record["stopped_at_step"] == 5


# -- 4. resuming with fewer epochs than done ---------------------------------------------------
class SigtermAtStep(L.Callback):
    """Sends this process SIGTERM after training step ``step`` (Lightning stops there)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_resume_with_fewer_epochs_than_done_is_refused_and_the_record_kept(tmp_path) -> None:
    run = tmp_path / "run"
    stop = [
        f"+callbacks.stop._target_={__name__}.SigtermAtStep",
        f"+callbacks.stop.step={2 * STEPS + 3}",
    ]
    with pytest.raises(SystemExit):
        train(_cfg(run, "trainer.max_epochs=4", *stop))
    assert _record(run)["status"] == "interrupted"
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs=1 is below the 2 epochs already"):
        train(_cfg(run, "trainer.max_epochs=1", "ckpt_path=last"))
    assert _snapshot(run) == before
    assert train(_cfg(run, "trainer.max_epochs=3", "ckpt_path=last"))["status"] == "completed"


# -- 5. read-only run folder (real entry point: Hydra runs first) and checkpoint folder ---------
@pytest.mark.slow
def test_a_read_only_run_folder_is_one_line_from_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "ro"
    run.mkdir()
    with _read_only(run):
        proc = run_cli([*BASE, f"hydra.run.dir={run}"], cwd=tmp_path)
        inside = run_cli([*BASE, f"hydra.run.dir={run / 'new'}"], cwd=tmp_path)
    _one_line_refusal(proc, f"run folder {str(run)!r} is not writable")
    _one_line_refusal(inside, f"its parent {str(run)!r} is read-only")
    assert list(run.iterdir()) == []


def test_a_read_only_checkpoint_folder_is_refused_before_training(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with _read_only(run / "checkpoints"), pytest.raises(ConfigError, match="checkpoint folder"):
        train(_cfg(run))
    record = _record(run)
    assert record["status"] == "failed" and record["epochs"] == []


# -- 6. the lock cannot be held twice, even when a stale one is taken over at once --------------
def _contend(lock_dir: str, barrier: Any, holders: Any, overlaps: Any, wins: Any) -> None:
    import warnings

    warnings.simplefilter("ignore")
    lock = RunLock(Path(lock_dir))
    barrier.wait()
    try:
        lock.acquire()
    except ConfigError:
        return
    with holders.get_lock():
        holders.value += 1
        if holders.value > 1:
            overlaps.value += 1
    wins.value += 1
    time.sleep(0.05)  # hold it a while: a second holder would overlap
    with holders.get_lock():
        holders.value -= 1
    lock.release()


def test_a_stale_lock_taken_over_by_six_processes_at_once_has_one_owner(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"host": socket.gethostname(), "pid": dead.pid, "since": time.time()}
    holders, overlaps, wins = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    for trial in range(20):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        (folder / LOCK_NAME).write_text(json.dumps(stale))
        barrier = ctx.Barrier(6)
        args = (str(folder), barrier, holders, overlaps, wins)
        procs = [ctx.Process(target=_contend, args=args) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [p.exitcode for p in procs] == [0] * 6
    assert overlaps.value == 0
    assert wins.value >= 20  # every trial had an owner (later ones may follow a release)


# -- 7. finished runs: a fresh run over them is refused, a resubmission leaves them -----------
def test_a_fresh_run_over_a_completed_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(run))
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"holds a completed run.*ckpt_path=last.*new folder"):
        train(_cfg(run))
    assert _snapshot(run) == before


def test_ckpt_path_last_leaves_a_diverged_run_diverged(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    diverge = ["optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=2"]
    assert train(_cfg(run, *diverge))["status"] == "diverged"
    before = _snapshot(run)
    with pytest.raises(ConfigError, match=r"holds a diverged run.*ckpt_path=last.*new folder"):
        train(_cfg(run, *diverge))
    capsys.readouterr()
    again = train(_cfg(run, *diverge, "ckpt_path=last"))
    assert again["status"] == "diverged"
    assert "diverged at step" in capsys.readouterr().out
    assert _snapshot(run) == before


# -- 8. a user error inside a multirun job; a second Ctrl+C; the summary -----------------------
@pytest.mark.slow
def test_a_config_error_in_one_multirun_job_is_one_line_and_the_others_run(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *BASE, "optimizer.lr=0.02,-1", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("accelopt: error:")]
    assert len(errors) == 1 and "optimizer.lr=-1 is invalid" in errors[0]
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    status = {name.split("_lr")[1]: r["status"] for name, r in records.items()}
    assert status == {"0.02_seed1": "completed", "-1_seed1": "failed"}


class CtrlCTwice(Logger):
    """A logger that presses Ctrl+C at step ``at_step``, and again once fit has ended (while
    accelopt writes the hyper-parameters to the loggers)."""

    def __init__(self, at_step: int) -> None:
        super().__init__()
        self.at_step, self.pressed, self.finalized = at_step, False, False

    @property
    def name(self) -> str:
        return "ctrlc"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is not None and step >= self.at_step and not self.pressed:
            self.pressed = True
            os.kill(os.getpid(), signal.SIGINT)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if self.finalized:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here

    def finalize(self, status: str) -> None:
        self.finalized = True


@pytest.mark.slow
def test_a_second_ctrl_c_after_fit_prints_no_traceback(tmp_path: Path) -> None:
    run = tmp_path / "run"
    logger = [f"+logger.ctrlc._target_={__name__}.CtrlCTwice", "+logger.ctrlc.at_step=20"]
    args = [*BASE, "trainer.max_epochs=5", "trainer.log_every_n_steps=1", *logger]
    proc = run_cli([*args, f"hydra.run.dir={run}"], cwd=ROOT)  # ROOT: the tests package imports
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    record = _record(run)
    assert record["status"] == "interrupted" and record["error"] == "interrupted by SIGINT"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == record["stopped_at_step"]


def test_the_summary_names_only_what_was_written(tmp_path: Path, capsys) -> None:
    train(_cfg(tmp_path / "run"))
    line = [ln for ln in capsys.readouterr().out.splitlines() if "run folder:" in ln][0]
    assert "TensorBoard" not in line
    assert "metrics.json" in line and "checkpoints/last.ckpt" in line
    train(_cfg(tmp_path / "tb", "logger=tensorboard", "callbacks=none"))
    line = [ln for ln in capsys.readouterr().out.splitlines() if "run folder:" in ln][0]
    assert "TensorBoard events" in line and "last.ckpt" not in line
