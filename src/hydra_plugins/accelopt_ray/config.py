"""The configs ``hydra/launcher=ray`` (this node) and ``hydra/launcher=ray_cluster`` (a running cluster).

They live here, not as YAML files in ``conf/hydra/launcher``: hydra-ray-launcher registers its
own ``hydra/launcher/ray`` schema, and Hydra validates any ``ray.yaml`` against it (refusing
``jobs_per_gpu``, with a deprecation warning on every run). Registering ours under the same name
replaces that schema; the plugin's own ``_config`` module is imported first so that ours wins.
Override any key on the command line, e.g. ``hydra.launcher.jobs_per_gpu=2`` or
``hydra.launcher.ray.init.num_gpus=2``.
"""

# No `from __future__ import annotations` here: Hydra's plugin scan runs this module before it is
# in sys.modules, where dataclasses look string annotations up.
from dataclasses import dataclass, field
from typing import Any

import hydra_plugins.hydra_ray_launcher._config  # noqa: F401 - registers the plugin's schema first
from hydra.core.config_store import ConfigStore

TARGET = "hydra_plugins.accelopt_ray.ray_launcher.AccelOptRayLauncher"


def _remote() -> dict[str, Any]:
    """ray.remote(...) options of each job; null ones are filled in by the launcher."""
    return {
        "num_gpus": None,  # null: 1 / jobs_per_gpu
        "num_cpus": None,  # null: hardware.num_threads (1 if null)
        "max_retries": 3,  # a job whose worker process died runs again, resuming from last.ckpt
    }


@dataclass
class RayOptions:
    init: dict[str, Any] = field(default_factory=dict)  # ray.init(...) arguments
    remote: dict[str, Any] = field(default_factory=_remote)


@dataclass
class RayNodeConf:
    """``hydra/launcher=ray``: a Ray started for the sweep on this node, every core and GPU."""

    _target_: str = TARGET
    jobs_per_gpu: Any = 1  # k jobs share one GPU: each asks Ray for num_gpus = 1/k
    ray: RayOptions = field(
        default_factory=lambda: RayOptions(
            init={
                "address": None,  # start a local Ray for this sweep
                "num_cpus": None,  # every core
                "num_gpus": None,  # every GPU Ray detects; declare N with num_gpus=N
                "include_dashboard": False,
            }
        )
    )


@dataclass
class RayClusterConf:
    """``hydra/launcher=ray_cluster``: the running Ray cluster this machine belongs to."""

    _target_: str = TARGET
    jobs_per_gpu: Any = 1
    ray: RayOptions = field(
        # connecting to a cluster, Ray refuses resource sizes (num_cpus, object_store_memory, ...)
        default_factory=lambda: RayOptions(init={"address": "auto"})
    )


_store = ConfigStore.instance()
_store.store(group="hydra/launcher", name="ray", node=RayNodeConf, provider="accelopt")
_store.store(group="hydra/launcher", name="ray_cluster", node=RayClusterConf, provider="accelopt")
