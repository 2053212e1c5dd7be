"""``hydra/launcher=ray`` on a local Ray that declares fake GPUs (this machine has none).

Ray hands each task ``num_gpus`` of the declared GPUs and sets its ``CUDA_VISIBLE_DEVICES``; what
is checked is what our config controls: the device each job sees (recorded in its
``metrics.json``), at most ``jobs_per_gpu`` jobs per device at once, a failing job leaving the
others running, and a job whose worker is killed resuming bit-identically from its last.ckpt.
Starting Ray and its workers takes 10-30 s here, so only one sweep runs in the default set.
"""

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
from omegaconf import OmegaConf

from accelopt.config import ConfigError
from hydra_plugins.accelopt_ray.ray_launcher import check_hardware, job_resources, with_resume

from .conftest import FAST, run_cli
from .test_launchers import compose_with_hydra

TARGET = "hydra_plugins.accelopt_ray.ray_launcher.AccelOptRayLauncher"
FAKE_GPUS = ["hydra.launcher.ray.init.num_cpus=2", "hydra.launcher.ray.init.num_gpus=2"]


# -- configs and the launcher's own logic (no Ray started) ----------------------------------------
def test_ray_configs_compose() -> None:
    launcher = compose_with_hydra(
        ["hydra/launcher=ray", "hydra.launcher.jobs_per_gpu=2"]
    ).hydra.launcher
    assert launcher._target_ == TARGET  # ours, not the plugin's own `ray` schema
    assert launcher.jobs_per_gpu == 2
    assert launcher.ray.init.address is None and launcher.ray.init.num_gpus is None
    assert launcher.ray.remote.max_retries >= 1  # a killed job is retried
    assert launcher.ray.remote.num_gpus is None  # filled in: 1 / jobs_per_gpu
    cluster = compose_with_hydra(["hydra/launcher=ray_cluster"]).hydra.launcher
    assert cluster._target_ == TARGET
    # connecting to a cluster, Ray refuses resource sizes in ray.init
    assert OmegaConf.to_container(cluster.ray.init) == {"address": "auto"}


def test_job_resources_and_resume_override() -> None:
    assert job_resources(1, None) == {"num_gpus": 1.0, "num_cpus": 1}
    assert job_resources(4, 2) == {"num_gpus": 0.25, "num_cpus": 2}
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ConfigError, match="hydra.launcher.jobs_per_gpu="):
            job_resources(bad, 1)
    assert with_resume(["seed=1"]) == ["seed=1", "ckpt_path=last"]
    assert with_resume(["seed=1", "ckpt_path=/x.ckpt"]) == ["seed=1", "ckpt_path=/x.ckpt"]
    assert with_resume(["+ckpt_path=last"]) == ["+ckpt_path=last"]


def test_multi_process_hardware_is_refused() -> None:
    check_hardware(compose_with_hydra(["hardware=cpu"]))
    for hw, devices in (("ddp_cpu", "2"), ("ddp", "-1")):
        with pytest.raises(ConfigError, match=f"hardware.devices={devices} .*one process"):
            check_hardware(compose_with_hydra([f"hardware={hw}"]))


def _refused_sweep(tmp_path: Path, *args: str) -> tuple[str, str]:
    """Run a 2-job Ray sweep that must be refused: (its one error line, its whole output)."""
    proc = run_cli(
        ["-m", "hydra/launcher=ray", *FAST, *args, "seed=1,2",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("accelopt: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert not list(tmp_path.glob("sweep/*/metrics.json"))  # no job ran
    return errors[0], proc.stdout + proc.stderr


def test_ddp_with_ray_is_refused_in_one_line_before_ray_starts(tmp_path: Path) -> None:
    error, out = _refused_sweep(tmp_path, "hardware=ddp_cpu")
    assert "hardware.devices=2" in error
    assert "Initializing ray" not in out


@pytest.mark.slow
def test_a_node_without_gpus_is_refused_in_one_line(tmp_path: Path) -> None:
    """Ray starts (10-20 s here), finds no GPU and the sweep stops before any job."""
    error, _ = _refused_sweep(tmp_path, "hydra.launcher.ray.init.num_cpus=2")
    assert "Ray finds no GPU on this node" in error


# -- sweeps on a local Ray with 2 fake GPUs -------------------------------------------------------
def _records(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]


def test_ray_sweep_records_each_jobs_device(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", "hydra/launcher=ray", *FAKE_GPUS, *FAST, "logger=none", "callbacks=none",
         "trainer.limit_train_batches=3", "seed=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "[accelopt] Ray: 2 jobs, each num_gpus=1 num_cpus=1, max_retries=3" in out
    records = _records(sweep)
    assert [(r["seed"], r["status"]) for r in records] == [(1, "completed"), (2, "completed")]
    for r in records:
        assert r["env"]["CUDA_VISIBLE_DEVICES"] in {"0", "1"}  # one whole fake GPU each
        assert r["overrides"][-1] == "ckpt_path=last"  # added to every job


# A minimal Hydra app: each job records the device it sees and its time span.
APP = textwrap.dedent(
    """
    import json, os, time
    from pathlib import Path
    import hydra

    @hydra.main(version_base="1.3", config_path="conf", config_name="config")
    def main(cfg):
        t0 = time.time()
        if cfg.job == cfg.crash:
            os._exit(3)  # the worker process dies
        time.sleep(cfg.sleep)
        record = {"job": cfg.job, "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "t0": t0, "t1": time.time()}
        Path(cfg.out, f"job{cfg.job}.json").write_text(json.dumps(record))
        if cfg.job == cfg.fail:
            raise RuntimeError(f"job {cfg.job} fails on purpose")

    if __name__ == "__main__":
        main()
    """
)
# ckpt_path: the launcher adds ckpt_path=last to every job (accelopt.train's key)
APP_CONFIG = (
    "job: 0\nfail: -1\ncrash: -1\nsleep: 1.0\nout: .\nckpt_path: null\n"
    "hydra:\n  job:\n    chdir: false\n"
)


def _peak_per_device(records: list[dict], device: str) -> int:
    events = sorted(
        [(r["t0"], 1) for r in records if r["device"] == device]
        + [(r["t1"], -1) for r in records if r["device"] == device],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.slow
def test_two_jobs_per_gpu_a_failing_job_and_a_dead_worker(tmp_path: Path) -> None:
    """8 jobs, 2 fake GPUs x jobs_per_gpu=2: <= 2 at once per device. Job 2 raises, job 5 kills
    its worker (no retries): both are reported, every other job ran."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.py").write_text(APP)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "app.py", "-m", "hydra/launcher=ray", "hydra.launcher.jobs_per_gpu=2",
         "hydra.launcher.ray.init.num_cpus=8", "hydra.launcher.ray.init.num_gpus=2",
         "hydra.launcher.ray.remote.max_retries=0", f"out={out}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}", "job=range(8)", "fail=2", "crash=5"],
        cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0  # Hydra reports the failed job after the sweep ...
    assert "job 2 fails on purpose" in proc.stderr
    records = sorted(
        (json.loads(p.read_text()) for p in out.glob("job*.json")), key=lambda r: r["job"]
    )
    assert [r["job"] for r in records] == [0, 1, 2, 3, 4, 6, 7]  # ... and the others ran
    assert {r["device"] for r in records} == {"0", "1"}
    peaks = [_peak_per_device(records, d) for d in ("0", "1")]
    assert max(peaks) <= 2, peaks
    assert max(peaks) == 2, peaks  # and GPUs were shared (4 slots, 8 one-second jobs)


LONG = [*FAST, "logger=none", "dataset.synthetic_train=6144", "trainer.max_epochs=4"]


def _kill_after_first_epoch(run: Path, proc: subprocess.Popen) -> int:
    """SIGKILL the job's process (the lock's owner) once its record shows an epoch; its pid."""
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            record = json.loads((run / "metrics.json").read_text())
            owner = json.loads((run / ".accelopt.lock").read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        if record["status"] == "running" and len(record["epochs"]) >= 1:
            os.kill(owner["pid"], signal.SIGKILL)
            return int(owner["pid"])
        time.sleep(0.05)
    raise AssertionError("the job never finished an epoch while running")


@pytest.mark.slow
def test_a_killed_job_is_retried_and_resumes_bit_identically(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=ray", *FAKE_GPUS, *LONG, "seed=3", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    with subprocess.Popen(
        [sys.executable, "-m", "accelopt.train", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as proc:  # fmt: skip
        run = sweep / "0_heavyball_lr0.02_seed3"
        killed = _kill_after_first_epoch(run, proc)
        log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log[-3000:]
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["status"] == "completed", log[-3000:]
    assert resumed["resumed_from"] and resumed["resumed_from"].endswith("last.ckpt")
    assert f"process {killed}" in log  # the stale lock of the killed worker was taken over

    ref = run_cli([*LONG, "seed=3", f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert len(reference["epochs"]) == 4 and reference["stopped_at_step"] > 0
    assert resumed["train_loss"] == reference["train_loss"]  # bit-identical losses
    assert [e["val/loss"] for e in resumed["epochs"]] == [
        e["val/loss"] for e in reference["epochs"]
    ]


HEAD = textwrap.dedent(
    """
    import sys, ray
    ctx = ray.init(num_cpus=2, num_gpus=2, include_dashboard=False)
    print(ctx.address_info["address"], flush=True)
    sys.stdin.read()  # until the test closes stdin
    ray.shutdown()
    """
)


@pytest.mark.slow
def test_ray_cluster_joins_a_running_cluster(tmp_path: Path) -> None:
    """A Ray started by another process (2 fake GPUs) runs the sweep of hydra/launcher=ray_cluster.

    ``address: auto`` finds the Ray started last on this machine: the test's own.
    """
    with subprocess.Popen(
        [sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    ) as head:  # fmt: skip
        try:
            address = head.stdout.readline().strip()
            assert address, "the Ray head did not start"
            sweep = tmp_path / "sweep"
            proc = run_cli(
                ["-m", "hydra/launcher=ray_cluster", *FAST, "logger=none", "callbacks=none", "seed=1,2", f"hydra.sweep.dir={sweep}"],
                cwd=tmp_path,
            )  # fmt: skip
        finally:
            head.stdin.close()
            head.wait(timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Connecting to existing Ray cluster at address: {address}" in out  # address: auto
    records = _records(sweep)
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in records} <= {"0", "1"}
