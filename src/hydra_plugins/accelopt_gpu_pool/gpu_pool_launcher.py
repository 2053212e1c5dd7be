"""A Hydra launcher for one multi-GPU node: the sweep's jobs run in parallel worker processes,
each worker pinned to one GPU for its whole life, ``jobs_per_device`` workers per GPU.

It is the joblib launcher (``hydra-joblib-launcher``) with device pinning: the same loky worker
processes and the same per-job Hydra work (the plugin's ``execute_job``: sweep config, job
folder, ``run_job``), but driven through a loky ``ProcessPoolExecutor`` of its own rather than
``joblib.Parallel``, because ``CUDA_VISIBLE_DEVICES`` only takes effect before a process
initialises CUDA: a worker keeps the device it started with, so workers cannot be shared between
devices or reused from an earlier sweep (``joblib.Parallel`` reuses its workers across calls,
and runs a one-worker sweep in the calling process).

- Workers = ``len(devices) * jobs_per_device``; the executor's queue holds the other jobs, so
  8 GPUs run a 64-job sweep 8 (or 8·k) at a time.
- Device slots: slot ``i`` is ``devices[i % len(devices)]``. A worker takes a free slot at its
  first job by locking the slot's file (``fcntl.flock``, released by the OS when the process
  ends, however it ends), sets ``CUDA_VISIBLE_DEVICES`` in its own environment and keeps the
  slot. At most k workers, hence at most k jobs, hold one device at any time.
- Each job's ``.hydra/hydra.yaml`` records its device as ``hydra.job.env_set``.
- A job that raises is recorded by Hydra as failed and the others run on. A worker that dies
  (killed, segfault) breaks loky's pool: the jobs that had started are returned as failed, the
  others run in a fresh pool. Hydra reports the failures after the whole batch.

POSIX only (``fcntl``), as GPU nodes are.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import joblib_launcher
from hydra_plugins.hydra_joblib_launcher._core import execute_job
from joblib.externals.loky import BrokenProcessPool, ProcessPoolExecutor, cpu_count
from omegaconf import ListConfig

log = logging.getLogger(__name__)

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:/-]+$")  # an index, or a GPU-/MIG- UUID
SLOT_WAIT_S = 600.0  # a new worker waits this long for a dead worker's slot to be released


class GpuPoolError(ValueError):
    """An invalid launcher setting; the message names the value and what is accepted."""


def resolve_devices(devices: Any) -> list[str]:
    """The device ids to pin workers to: ``"auto"`` or an explicit list (ints or id strings).

    ``auto`` is every GPU this process may use: the entries of ``CUDA_VISIBLE_DEVICES`` when it
    is set, else ``0 .. torch.cuda.device_count()-1``.
    """
    if devices == "auto":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            found = [d.strip() for d in visible.split(",") if d.strip()]
        else:
            import torch

            found = [str(i) for i in range(torch.cuda.device_count())]
        if not found:
            raise GpuPoolError(
                "hydra.launcher.devices=auto found no CUDA GPU; give the devices to use, e.g. "
                "hydra.launcher.devices=[0,1], or use hydra/launcher=joblib on a CPU machine."
            )
        return found
    accepted = "'auto' or a non-empty list of device ids, e.g. hydra.launcher.devices=[0,1,2,3]"
    if not isinstance(devices, list | tuple | ListConfig) or len(devices) == 0:
        raise GpuPoolError(f"hydra.launcher.devices={devices!r} is invalid: give {accepted}.")
    ids = []
    for d in devices:
        ok_int = isinstance(d, int) and not isinstance(d, bool) and d >= 0
        if not (ok_int or (isinstance(d, str) and DEVICE_ID.match(d))):
            raise GpuPoolError(
                f"hydra.launcher.devices has an invalid device id {d!r}: ids are integers >= 0 "
                "or GPU UUIDs (GPU-..., MIG-...), e.g. hydra.launcher.devices=[0,1,2,3]."
            )
        ids.append(str(d))
    if len(set(ids)) != len(ids):
        raise GpuPoolError(
            f"hydra.launcher.devices={ids} lists a device twice; use "
            "hydra.launcher.jobs_per_device=k to run k jobs per device."
        )
    return ids


def device_slots(devices: Sequence[str], jobs_per_device: Any) -> list[str]:
    """One entry per worker, round robin over ``devices``: ``[d0, d1, .., d0, d1, ..]``."""
    k = jobs_per_device
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise GpuPoolError(
            f"hydra.launcher.jobs_per_device={k!r} is invalid: it must be an integer >= 1 "
            "(jobs sharing one device at a time), e.g. hydra.launcher.jobs_per_device=2."
        )
    return [d for _ in range(k) for d in devices]


# -- worker side -------------------------------------------------------------------------------
# This worker's slot, "<lock dir>|<slot>", kept in the process environment: Hydra re-executes
# plugin modules when it scans for plugins (also inside workers), which resets module globals.
PIN_VAR = "ACCELOPT_GPU_POOL_PIN"


def pin_device(lock_dir: str, slots: Sequence[str], env_var: str) -> str:
    """Pin this process to a free slot's device (once; later calls return the same device)."""
    pinned = os.environ.get(PIN_VAR)
    if pinned:
        pinned_dir, _, slot = pinned.rpartition("|")
        if pinned_dir != lock_dir:
            raise RuntimeError(f"this worker is pinned to slot {slot} of another sweep ({pinned})")
        return slots[int(slot)]
    deadline = time.monotonic() + SLOT_WAIT_S
    while time.monotonic() < deadline:
        for i, device in enumerate(slots):
            fd = os.open(os.path.join(lock_dir, f"slot-{i}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            # fd stays open: the lock is held until this process ends
            os.environ[env_var] = device  # before the job can initialise CUDA in this process
            os.environ[PIN_VAR] = f"{lock_dir}|{i}"
            return device
        time.sleep(0.05)  # a dead worker's slot is released when the OS closes its files
    raise RuntimeError(f"no free device slot among {list(slots)} after {SLOT_WAIT_S:.0f} s")


def run_pinned_job(
    lock_dir: str,
    slots: Sequence[str],
    env_var: str,
    idx: int,
    overrides: Sequence[str],
    *args: Any,
) -> JobReturn:
    """Worker entry: pin the device, then the joblib plugin's ``execute_job`` (Hydra's run_job)."""
    Path(lock_dir, f"started-{idx}").touch()
    device = pin_device(lock_dir, slots, env_var)
    recorded = f"++hydra.job.env_set.{env_var}='{device}'"  # in the job's .hydra/hydra.yaml
    return execute_job(idx, [*overrides, recorded], *args)


# -- launcher side -----------------------------------------------------------------------------
def _failed(overrides: Sequence[str], exc: BaseException) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = exc
    return ret


def _device_of(ret: JobReturn, env_var: str) -> str:
    try:
        return str(ret.hydra_cfg.hydra.job.env_set[env_var])
    except Exception:  # noqa: BLE001 - a job that failed before Hydra composed its config
        return "?"


class GpuPoolLauncher(joblib_launcher.JoblibLauncher):
    """``hydra/launcher=gpu_pool``: the joblib launcher with one device per worker process.

    (The joblib plugin's module is imported, not its class: Hydra's plugin scan collects the
    plugin classes it finds in each module's namespace.)
    """

    def __init__(
        self,
        devices: Any = "auto",
        jobs_per_device: int = 1,
        env_var: str = "CUDA_VISIBLE_DEVICES",
        limit_threads: bool = True,
    ) -> None:
        super().__init__()
        self.devices = devices
        self.jobs_per_device = jobs_per_device
        self.env_var = env_var
        self.limit_threads = limit_threads

    def slots(self) -> list[str]:
        """The device of each worker slot (checks the launcher's settings)."""
        if not isinstance(self.env_var, str) or not re.match(
            r"^[A-Za-z_][A-Za-z0-9_]*$", self.env_var
        ):
            raise GpuPoolError(
                f"hydra.launcher.env_var={self.env_var!r} is invalid: give an environment variable "
                "name, e.g. CUDA_VISIBLE_DEVICES (NVIDIA) or HIP_VISIBLE_DEVICES (AMD)."
            )
        return device_slots(resolve_devices(self.devices), self.jobs_per_device)

    def worker_env(self, n_workers: int) -> dict[str, str]:
        """Thread counts for the workers (cores // workers) unless the user set them."""
        if not self.limit_threads:
            return {}
        n = str(max(cpu_count() // n_workers, 1))
        return {var: n for var in THREAD_VARS if var not in os.environ}

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        try:
            slots = self.slots()
        except GpuPoolError as err:  # one line, no traceback, as for accelopt's own config errors
            print(f"gpu_pool launcher: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            f"GpuPool: {len(job_overrides)} jobs on devices {sorted(set(slots), key=slots.index)}"
            f", {self.jobs_per_device} per device ({len(slots)} workers), {self.env_var} per worker"
        )
        log.info(f"Launching jobs, sweep output dir : {sweep_dir}")
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
        lock_dir = tempfile.mkdtemp(prefix="gpu_pool-")
        try:
            return self._run(job_overrides, initial_job_idx, slots, lock_dir)
        finally:
            shutil.rmtree(lock_dir, ignore_errors=True)

    def _run(
        self,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        slots: list[str],
        lock_dir: str,
    ) -> list[JobReturn]:
        """Run every job; a broken pool (dead worker) is replaced for the jobs not yet started."""
        results: dict[int, JobReturn] = {}
        pending = list(range(len(job_overrides)))
        while pending:
            retry = self._run_round(
                job_overrides, initial_job_idx, slots, lock_dir, pending, results
            )
            if len(retry) == len(pending):  # no job even started: do not loop forever
                for i in retry:
                    results[i] = _failed(job_overrides[i], RuntimeError("the worker pool broke"))
                retry = []
            pending = retry
        return [results[i] for i in range(len(job_overrides))]

    def _run_round(
        self,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        slots: list[str],
        lock_dir: str,
        pending: list[int],
        results: dict[int, JobReturn],
    ) -> list[int]:
        """One pool over ``pending``; fills ``results``, returns the jobs to run again."""
        n_workers = min(len(slots), len(pending))
        executor = ProcessPoolExecutor(max_workers=n_workers, env=self.worker_env(n_workers))
        state = Singleton.get_state()
        common = (self.hydra_context, self.config, self.task_function, state)
        retry, clean = [], False
        try:
            futures = {
                i: executor.submit(
                    run_pinned_job,
                    lock_dir,
                    slots,
                    self.env_var,
                    initial_job_idx + i,
                    job_overrides[i],
                    *common,
                )
                for i in pending
            }
            for i, future in futures.items():
                try:
                    results[i] = future.result()
                except BrokenProcessPool as exc:  # a worker died: this job's or another's
                    if Path(lock_dir, f"started-{initial_job_idx + i}").exists():
                        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        err = RuntimeError(f"job #{initial_job_idx + i} was lost: {reason}")
                        results[i] = _failed(job_overrides[i], err)
                        log.info(f"\t#{initial_job_idx + i} failed: its worker process died")
                    else:
                        retry.append(i)
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable return value
                    results[i] = _failed(job_overrides[i], exc)
                    continue
                status, device = (
                    results[i].status.name.lower(),
                    _device_of(results[i], self.env_var),
                )
                log.info(f"\t#{initial_job_idx + i} {status} on device {device}")
            clean = True
        finally:
            executor.shutdown(wait=True, kill_workers=not clean)
        return retry
