"""The launcher's structured config, registered as ``hydra/launcher=accelopt_gpu_pool``.

Hydra imports every module of the ``hydra_plugins`` namespace package when it scans for
plugins, so this registration is available to any Hydra app once the package is installed;
accelopt's own ``hydra/launcher=gpu_pool`` config extends it. (No ``from __future__ import
annotations`` here: Hydra executes plugin modules without registering them in ``sys.modules``,
where ``dataclass`` looks string annotations up.)
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class GpuPoolLauncherConf:
    _target_: str = "hydra_plugins.accelopt_gpu_pool.gpu_pool_launcher.GpuPoolLauncher"
    # "auto" (every visible CUDA GPU) or a list of device ids, e.g. [0, 1, 2, 3]
    devices: Any = "auto"
    # jobs that share one device at a time (workers = len(devices) * jobs_per_device)
    jobs_per_device: int = 1
    # the environment variable that pins a worker to its device
    env_var: str = "CUDA_VISIBLE_DEVICES"
    # worker threads variables (OMP_NUM_THREADS, MKL_NUM_THREADS) set to cores // workers
    # unless already set; false leaves the workers' environment as it is
    limit_threads: bool = True


ConfigStore.instance().store(
    group="hydra/launcher",
    name="accelopt_gpu_pool",
    node=GpuPoolLauncherConf,
    provider="accelopt_gpu_pool",
)
