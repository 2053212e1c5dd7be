"""Hydra's Ray launcher with accelopt's per-job resources, resume-on-retry and crash isolation.

Hydra's Ray launcher (hydra-ray-launcher) sends each sweep job to Ray as one task with the
options of ``ray.remote``; Ray places it where its resources are free and sets the task's
``CUDA_VISIBLE_DEVICES`` from the GPUs it was given. This subclass launches the same way (the
plugin's ``start_ray`` and ``launch_job_on_ray``), and adds:

- ``ray.remote.num_gpus`` (if null) = 1 / ``jobs_per_gpu``: Ray runs at most k jobs per GPU;
- ``ray.remote.num_cpus`` (if null) = ``hardware.num_threads`` (1 when that is null);
- ``ckpt_path=last`` on every job whose overrides do not set ``ckpt_path``: a task that Ray
  retries after its worker died (``ray.remote.max_retries``) resumes from its own
  ``checkpoints/last.ckpt`` (none yet: a fresh start; a changed config is refused by the
  checkpoint's identity);
- a job whose worker died on every try is that job's failure, not the sweep's end (the plugin's
  ``ray.get`` would raise and stop the jobs still running);
- one-line refusals, before Ray starts, of multi-process hardware and of a GPU-less node.

The configs ``hydra/launcher=ray`` and ``ray_cluster`` are in :mod:`.config`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
from omegaconf import DictConfig, open_dict

from accelopt.checks import is_int

__all__ = ["AccelOptRayLauncher", "check_hardware", "job_resources", "with_resume"]


def _error(message: str) -> Exception:
    from accelopt.errors import ConfigError  # lazy: Hydra imports every plugin at start-up

    return ConfigError(message)


def job_resources(jobs_per_gpu: Any, num_threads: Any) -> dict[str, float]:
    """Ray resources of one job: ``num_gpus`` = 1/jobs_per_gpu, ``num_cpus`` = num_threads (or 1)."""
    k = jobs_per_gpu
    if not is_int(k) or k < 1:
        raise _error(
            f"hydra.launcher.jobs_per_gpu={k!r} is invalid: it must be an integer >= 1 (jobs that "
            "share one GPU), e.g. hydra.launcher.jobs_per_gpu=2."
        )
    threads = 1 if num_threads is None else num_threads
    return {"num_gpus": 1 / k, "num_cpus": threads}


def check_hardware(config: DictConfig) -> None:
    """Refuse hardware with several processes per job (``hardware=ddp``, ``ddp_cpu``).

    Lightning starts the extra DDP ranks by running the job's command line again, and a Ray
    task has none of its own (inside a Hydra multirun ``accelopt.train`` refuses it too).
    """
    hw = config.get("hardware") or {}
    devices, nodes = hw.get("devices", 1), hw.get("num_nodes", 1)
    if devices != 1 or nodes != 1:
        raise _error(
            f"hardware.devices={devices} (num_nodes={nodes}) cannot be used with "
            "hydra/launcher=ray*: each Ray job is one process (Lightning would start the other "
            "DDP ranks by re-running a command line the Ray worker does not have). Use "
            "hardware=gpu or hardware=cpu (one device per job), or run DDP jobs on SLURM "
            "(hydra/launcher=slurm)."
        )


def with_resume(overrides: Sequence[str]) -> list[str]:
    """``overrides`` plus ``ckpt_path=last`` unless they set ``ckpt_path`` themselves."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return list(overrides) if "ckpt_path" in keys else [*overrides, "ckpt_path=last"]


class AccelOptRayLauncher(RayLauncher):
    """``RayLauncher`` plus ``jobs_per_gpu`` and ``ckpt_path=last`` (see the module docstring)."""

    def __init__(self, ray: DictConfig, jobs_per_gpu: int = 1) -> None:
        super().__init__(ray)
        self.jobs_per_gpu = jobs_per_gpu

    def _fill_resources(self) -> None:
        assert self.config is not None
        threads = self.config.get("hardware", {}).get("num_threads")
        need = job_resources(self.jobs_per_gpu, threads)
        remote = self.ray_cfg.remote
        with open_dict(remote):
            for key, value in need.items():
                if remote.get(key) is None:
                    remote[key] = value

    def _check_local_gpus(self) -> None:
        """On this node (``address: null``), refuse a sweep no GPU could ever run."""
        if self.ray_cfg.init.get("address") is not None or not self.ray_cfg.remote.num_gpus:
            return
        import ray
        from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

        start_ray(self.ray_cfg.init)
        if ray.cluster_resources().get("GPU", 0) == 0:
            raise _error(
                "hydra/launcher=ray: Ray finds no GPU on this node, so no job could start. On a "
                "CPU machine sweep with hydra/launcher=joblib (or give jobs no GPU: "
                "hydra.launcher.ray.remote.num_gpus=0); to declare GPUs Ray cannot see, set "
                "hydra.launcher.ray.init.num_gpus=N."
            )

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from accelopt.errors import ConfigError

        try:
            assert self.config is not None
            check_hardware(self.config)
            self._fill_resources()
            self._check_local_gpus()
        except ConfigError as err:
            print(f"accelopt: error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        remote = self.ray_cfg.remote
        print(
            f"[accelopt] Ray: {len(job_overrides)} jobs, each num_gpus={remote.num_gpus:g} "
            f"num_cpus={remote.num_cpus:g}, max_retries={remote.get('max_retries')}",
            flush=True,
        )
        return self._run([with_resume(o) for o in job_overrides], initial_job_idx)

    def _run(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        """The plugin's launch, except that a job whose worker died on every try (Ray raises
        instead of returning) becomes that job's failed result: the other jobs run on."""
        import ray
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, filter_overrides, setup_globals
        from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        start_ray(self.ray_cfg.init)
        runs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            print(f"[accelopt] Ray job #{idx}: {' '.join(filter_overrides(overrides))}", flush=True)
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(job_cfg):
                job_cfg.hydra.job.id = f"ray_job_{idx}"
                job_cfg.hydra.job.num = idx
            runs.append(
                launch_job_on_ray(
                    self.hydra_context,
                    self.ray_cfg.remote,
                    job_cfg,
                    self.task_function,
                    Singleton.get_state(),
                )
            )
        return [_result(run, o, ray) for run, o in zip(runs, job_overrides, strict=True)]


def _result(run: Any, overrides: list[str], ray: Any) -> JobReturn:
    """``ray.get(run)``, or a failed :class:`JobReturn` holding Ray's error (worker died)."""
    try:
        return ray.get(run)
    except ray.exceptions.RayError as err:
        ret = JobReturn(overrides=overrides)
        ret.status, ret.return_value = JobStatus.FAILED, err
        return ret
