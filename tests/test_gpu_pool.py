"""``hydra/launcher=gpu_pool``: sweep jobs in parallel workers, each pinned to one (fake) GPU.

CPU only: the devices are a fake list, and what is checked is what the launcher controls, the
``CUDA_VISIBLE_DEVICES`` each job sees, the workers that share a device and the queue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hydra_plugins.accelopt_gpu_pool.gpu_pool_launcher import (
    GpuPoolLauncher,
    device_slots,
    resolve_devices,
)

from .conftest import CONF_DIR, FAST, run_cli

# GpuPoolError (a ValueError) is matched as ValueError: Hydra re-executes plugin modules when it
# scans for plugins, so after another test's scan the class raised may be a fresh copy.

TARGET = "hydra_plugins.accelopt_gpu_pool.gpu_pool_launcher.GpuPoolLauncher"

# A minimal Hydra app: each job records the device it sees, its process and its time span.
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
                  "pid": os.getpid(), "t0": t0, "t1": time.time()}
        Path(cfg.out, f"job{cfg.job}.json").write_text(json.dumps(record))
        if cfg.job == cfg.fail:
            raise RuntimeError(f"job {cfg.job} fails on purpose")

    if __name__ == "__main__":
        main()
    """
)
APP_CONFIG = "job: 0\nfail: -1\ncrash: -1\nsleep: 0.5\nout: .\nhydra:\n  job:\n    chdir: false\n"


def run_app(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple:
    """Run the app as a ``-m`` sweep on the gpu_pool plugin; return (process, job records)."""
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "config.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.py").write_text(APP)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "app.py",
            "-m",
            "hydra/launcher=accelopt_gpu_pool",
            f"out={out}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *args,
        ],  # fmt: skip
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )
    records = [json.loads(p.read_text()) for p in sorted(out.glob("job*.json"))]
    return proc, sorted(records, key=lambda r: r["job"])


def check_assignment(records: list[dict], devices: set[str], k: int) -> None:
    """Each job saw one device of the list; each worker kept one; <= k jobs per device at once."""
    for r in records:
        assert r["device"] in devices, r
    by_pid: dict[int, set[str]] = {}
    for r in records:
        by_pid.setdefault(r["pid"], set()).add(r["device"])
    assert all(len(seen) == 1 for seen in by_pid.values()), by_pid  # pinned workers
    for device in devices:
        pids = {p for p, seen in by_pid.items() if device in seen}
        assert len(pids) <= k, (device, pids)
        events = sorted(
            [(r["t0"], 1) for r in records if r["device"] == device]
            + [(r["t1"], -1) for r in records if r["device"] == device],
            key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
        )
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        assert peak <= k, (device, peak)


# -- device list and slots -----------------------------------------------------------------------
def test_resolve_devices_lists_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_devices([0, 1]) == ["0", "1"]
    assert resolve_devices(["2", "GPU-8a1b-44"]) == ["2", "GPU-8a1b-44"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert resolve_devices("auto") == ["4", "5"]  # auto = what this process may use
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="devices=auto found no CUDA GPU"):
        resolve_devices("auto")
    for bad, msg in [
        ([], "is invalid"),
        ("0,1", "is invalid"),
        ([0, 0], "lists a device twice"),
        ([-1], "invalid device id -1"),
        ([True], "invalid device id True"),
        (["0 1"], "invalid device id '0 1'"),
    ]:
        with pytest.raises(ValueError, match=msg):
            resolve_devices(bad)


def test_launcher_refuses_a_bad_env_var() -> None:
    assert GpuPoolLauncher(devices=[0, 1], jobs_per_device=2).slots() == ["0", "1", "0", "1"]
    with pytest.raises(ValueError, match="env_var='CUDA VISIBLE' is invalid"):
        GpuPoolLauncher(devices=[0], env_var="CUDA VISIBLE").slots()


def test_device_slots_round_robin() -> None:
    assert device_slots(["0", "1"], 1) == ["0", "1"]
    assert device_slots(["0", "1"], 2) == ["0", "1", "0", "1"]  # spread before sharing
    for bad in (0, -2, 1.5, "2", True):
        with pytest.raises(ValueError, match="jobs_per_device"):
            device_slots(["0"], bad)


def test_gpu_pool_config_composes() -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose("train", ["hydra/launcher=gpu_pool"], return_hydra_config=True)
            launcher = cfg.hydra.launcher
            assert launcher._target_ == TARGET
            assert launcher.devices == "auto" and launcher.jobs_per_device == 1
            cfg = compose(
                "train",
                [
                    "hydra/launcher=gpu_pool",
                    "hydra.launcher.devices=[0,1]",
                    "hydra.launcher.jobs_per_device=2",
                ],  # fmt: skip
                return_hydra_config=True,
            )
            assert OmegaConf.to_container(cfg.hydra.launcher.devices) == [0, 1]
            with pytest.raises(ConfigCompositionException):  # typed schema: no joblib keys
                compose("train", ["hydra/launcher=gpu_pool", "hydra.launcher.n_jobs=4"])
    finally:
        GlobalHydra.instance().clear()


# -- sweeps ---------------------------------------------------------------------------------------
def test_two_devices_one_job_each_and_a_failing_job(tmp_path: Path) -> None:
    proc, records = run_app(tmp_path, "hydra.launcher.devices=[0,1]", "job=range(6)", "fail=2")
    assert proc.returncode != 0  # Hydra reports the failed job after the sweep ...
    assert "job 2 fails on purpose" in proc.stderr
    assert [r["job"] for r in records] == list(range(6))  # ... and every job ran
    check_assignment(records, {"0", "1"}, k=1)
    assert "GpuPool: 6 jobs on devices ['0', '1'], 1 per device (2 workers)" in proc.stdout
    hydra_yaml = OmegaConf.load(tmp_path / "sweep" / "3" / ".hydra" / "hydra.yaml")
    assert records[3]["device"] == hydra_yaml.hydra.job.env_set.CUDA_VISIBLE_DEVICES


def test_two_jobs_per_device_queue_eight_jobs(tmp_path: Path) -> None:
    proc, records = run_app(
        tmp_path, "hydra.launcher.devices=[0,1]", "hydra.launcher.jobs_per_device=2",
        "job=range(8)", "sleep=0.6",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["job"] for r in records] == list(range(8))
    check_assignment(records, {"0", "1"}, k=2)
    assert len({r["pid"] for r in records}) >= 2  # parallel workers ran them
    assert {r["device"] for r in records} == {"0", "1"}


def test_a_dead_worker_loses_only_its_job(tmp_path: Path) -> None:
    """A job that kills its worker process: the pool is replaced, the other jobs still run."""
    proc, records = run_app(
        tmp_path, "hydra.launcher.devices=[3]", "job=range(4)", "crash=1", "sleep=0.1"
    )
    assert proc.returncode != 0
    assert "job #1 was lost" in proc.stderr
    assert [r["job"] for r in records] == [0, 2, 3]
    assert {r["device"] for r in records} == {"3"}


def test_auto_without_gpus_is_refused_in_one_line(tmp_path: Path) -> None:
    proc, records = run_app(tmp_path, "job=range(2)", env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and not records
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "gpu_pool launcher: error: hydra.launcher.devices=auto found no CUDA GPU; give the "
        "devices to use, e.g. hydra.launcher.devices=[0,1], or use hydra/launcher=joblib on a "
        "CPU machine."
    ]


def test_accelopt_train_sweep_records_each_jobs_device(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=gpu_pool",
            "hydra.launcher.devices=[0,1]",
            *FAST,
            "logger=none",
            "callbacks=none",
            "trainer.limit_train_batches=3",
            "seed=1,2",
            f"hydra.sweep.dir={sweep}",
        ],  # fmt: skip
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GpuPool: 2 jobs on devices ['0', '1']" in proc.stdout + proc.stderr
    jobs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    records = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    assert [(r["seed"], r["status"]) for r in records] == [(1, "completed"), (2, "completed")]
    for job in jobs:
        hydra_yaml = OmegaConf.load(job / ".hydra" / "hydra.yaml")
        assert hydra_yaml.hydra.job.env_set.CUDA_VISIBLE_DEVICES in {"0", "1"}
