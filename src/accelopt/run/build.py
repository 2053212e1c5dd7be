"""Building a run's Lightning objects from their ``_target_`` configs.

Each builder turns a constructor's own clear error into the project's :class:`ConfigError` (or
the data's :class:`DataSourceError`), so the command line prints one line, not Hydra's wrapper.
The data module prepares and sets up its data here: data errors (missing files, a failed
download) surface before any model or trainer is built.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from accelopt.data.sources import DataSourceError
from accelopt.errors import ConfigError
from accelopt.models.module import ClassifierModule
from accelopt.optim_protocol import clip_settings, optimizer_factory, trainer_kwargs
from accelopt.run.checkpoint import AtomicCheckpointIO
from accelopt.run.session import config_dict

__all__ = [
    "build_datamodule",
    "build_module",
    "build_trainer",
    "refuse_relaunch_in_multirun",
    "seed_and_threads",
]


def seed_and_threads(cfg: DictConfig) -> None:
    """torch's thread count (``hardware.num_threads``), then every random seed (``seed``)."""
    if cfg.hardware.get("num_threads"):
        torch.set_num_threads(int(cfg.hardware.num_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The data module of ``cfg.dataset``, its data prepared and set up for fitting."""
    try:
        datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    except InstantiationException as err:  # Hydra wraps the constructor's own clear error
        if isinstance(err.__cause__, ConfigError | DataSourceError):
            raise err.__cause__ from None
        raise
    datamodule.prepare_data()  # data errors (missing files, failed download) surface here,
    datamodule.setup("fit")  # before any model or trainer is built
    return datamodule


def _build_net(cfg: DictConfig) -> torch.nn.Module:
    """The network of ``cfg.model``; a constructor's one-line ValueError becomes a ConfigError."""
    try:
        return instantiate(cfg.model)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError):
            raise ConfigError(f"{err.__cause__} (model={cfg.model._target_})") from None
        raise


def build_module(cfg: DictConfig) -> ClassifierModule:
    """The LightningModule: network, optimizer factory, scheduler, clipping, memory format."""
    return ClassifierModule(
        net=_build_net(cfg),
        optimizer=optimizer_factory(cfg.optimizer),
        num_classes=cfg.dataset.num_classes,
        memory_format=cfg.hardware.get("memory_format", "contiguous"),
        scheduler=config_dict(cfg.scheduler) if cfg.get("scheduler") else None,
        protocol=cfg.optimizer.get("protocol"),
        **clip_settings(cfg.trainer),
    )


def build_trainer(cfg: DictConfig, out: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning trainer of ``cfg``: hardware, loggers, callbacks, atomic checkpoint files.

    ``hardware.strategy`` is a Lightning strategy name (``auto``, ``ddp``, ...) or a config with
    a ``_target_`` (e.g. ``DDPStrategy`` with ``process_group_backend: gloo``).
    """
    hw = cfg.hardware
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    extra = [instantiate(cb) for cb in (cfg.get("callbacks") or {}).values()]
    strategy = hw.strategy
    if OmegaConf.is_dict(strategy):
        strategy = instantiate(strategy)
    has_ckpt = any(isinstance(cb, ModelCheckpoint) for cb in extra)
    return L.Trainer(
        enable_checkpointing=has_ckpt,  # callbacks=none: no checkpoints at all
        accelerator=hw.accelerator,
        devices=hw.devices,
        strategy=strategy,
        precision=hw.precision,
        num_nodes=hw.get("num_nodes", 1),
        logger=loggers or False,
        callbacks=callbacks + extra,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(out),
        use_distributed_sampler=False,  # the data module shards batches itself
        **trainer_kwargs(cfg.trainer),  # the gradient_clip_* keys go to the module
    )


def refuse_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """DDP that starts its own processes (``hardware=ddp_cpu``/``ddp`` outside SLURM) cannot run
    inside a Hydra multirun: Lightning relaunches the command line, ``-m`` and all."""
    if trainer.world_size <= 1 or getattr(trainer.strategy, "launcher", None) is None:
        return
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(
            "hardware with several processes (e.g. hardware=ddp_cpu or hardware=ddp) cannot be "
            "used in a local multirun (-m): Lightning would relaunch the whole sweep once per "
            "rank. Run each point as a single run, or sweep on SLURM (hydra/launcher=slurm with "
            "hydra.launcher.tasks_per_node = GPUs per node), where SLURM starts the ranks."
        )
