"""Checks a composed config before any work starts: every mistake is one clear paragraph."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from accelopt.checks import MEMORY_FORMATS, is_finite, is_int, is_momentum
from accelopt.data.sources import SOURCES, DataSourceError
from accelopt.errors import ConfigError
from accelopt.optim_protocol import (
    check_clip,
    check_protocol,
    optimizer_factory,
    uses_closure,
)
from accelopt.schedules import check_scheduler

HALF_PRECISIONS = ("16-mixed", "16", "16-true", 16)
# Lightning's precision names (lightning.fabric.connector), plus the short integer forms.
PRECISIONS = ("32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")
PRECISION_ALIASES = {
    32: "32-true",
    "32": "32-true",
    64: "64-true",
    "64": "64-true",
    16: "16-mixed",
    "16": "16-mixed",
    "bf16": "bf16-mixed",
}


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first invalid value of ``cfg``."""
    _check_run_keys(cfg)
    _check_optimizer_values(cfg)
    _check_dataset(cfg)
    factory = _check_optimizer(cfg)
    _check_hardware(cfg, factory)
    check_clip(cfg.trainer)
    check_scheduler(cfg.get("scheduler"), cfg.trainer)


def _check_run_keys(cfg: DictConfig) -> None:
    seed = cfg.get("seed")
    if not is_int(seed) or seed < 0:
        raise ConfigError(
            f"seed={seed!r} is invalid: it must be an integer >= 0 (the study used 1, 2, 3), "
            "e.g. seed=1."
        )
    _check_trainer(cfg)
    _check_checkpoint(cfg)


def _check_trainer(cfg: DictConfig) -> None:
    """Run length (it must end) and batch limits."""
    trainer = cfg.trainer
    epochs = trainer.get("max_epochs")
    if epochs is not None and (not is_int(epochs) or epochs < -1 or epochs == 0):
        raise ConfigError(
            f"trainer.max_epochs={epochs!r} is invalid: it must be an integer >= 1 "
            "(or -1 for no limit with trainer.max_steps), e.g. trainer.max_epochs=6."
        )
    steps = trainer.get("max_steps", -1)
    steps = -1 if steps is None else steps
    if not is_int(steps) or steps < -1 or steps == 0:
        raise ConfigError(
            f"trainer.max_steps={steps!r} is invalid: it must be an integer >= 1, or -1 for no "
            "step limit (the run ends after trainer.max_epochs), e.g. trainer.max_steps=2000."
        )
    if epochs == -1 and steps == -1 and trainer.get("max_time") is None:
        raise ConfigError(
            "trainer.max_epochs=-1 with trainer.max_steps=-1 would train forever: give an epoch "
            "limit (e.g. trainer.max_epochs=6) or a step limit (e.g. trainer.max_steps=2000)."
        )
    for key in sorted(k for k in trainer if str(k).startswith("limit_")):
        value = trainer.get(key)
        is_float = isinstance(value, float) and 0.0 <= value <= 1.0
        if value is not None and not is_float and not (is_int(value) and value >= 0):
            raise ConfigError(
                f"trainer.{key}={value!r} is invalid: it must be an integer >= 0 (batches), a "
                f"fraction in [0.0, 1.0] or null (all batches), e.g. trainer.{key}=0.25."
            )


def _check_checkpoint(cfg: DictConfig) -> None:
    node = (cfg.get("callbacks") or {}).get("checkpoint")
    n = None if node is None else node.get("every_n_train_steps")
    if n is not None and (not is_int(n) or n < 1):
        raise ConfigError(
            f"callbacks.checkpoint.every_n_train_steps={n!r} is invalid: it must be an integer "
            ">= 1 (save last.ckpt every N steps) or null (epoch ends only), e.g. "
            "callbacks.checkpoint.every_n_train_steps=100."
        )


def _check_optimizer_values(cfg: DictConfig) -> None:
    lr = cfg.optimizer.get("lr")
    if not is_finite(lr) or lr <= 0:
        raise ConfigError(
            f"optimizer.lr={lr!r} is invalid: the learning rate must be a finite number > 0 "
            "(the report used 0.02 on MNIST and 0.03 on CIFAR-10), e.g. optimizer.lr=0.02."
        )
    momentum = cfg.optimizer.get("momentum")
    if momentum is not None and not is_momentum(momentum):
        raise ConfigError(
            f"optimizer.momentum={momentum!r} is invalid: it must be a number in [0, 1) "
            "(momentum >= 1 never forgets a gradient and diverges), e.g. optimizer.momentum=0.9."
        )


def _check_dataset(cfg: DictConfig) -> None:
    ds = cfg.dataset
    for key, example in (("batch_size", 128), ("eval_batch_size", 1000)):
        value = ds.get(key)
        if not is_int(value) or value < 1:
            raise ConfigError(
                f"dataset.{key}={value!r} is invalid: it must be an integer >= 1 "
                f"(the report used batch 128), e.g. dataset.{key}={example}."
            )
    if ds.source not in SOURCES:
        raise ConfigError(
            f"dataset.source={ds.source!r} is invalid; accepted: {', '.join(SOURCES)}."
        )
    needs_dir = ds.source == "image_folder" or (ds.source == "torchvision" and not ds.download)
    if needs_dir and not Path(str(ds.data_dir)).expanduser().is_dir():
        hint = (
            "an image-folder tree (train/<class>/..., test/<class>/...)"
            if ds.source == "image_folder"
            else f"torchvision's {ds.name} files, or set dataset.download=true (needs internet)"
        )
        raise ConfigError(
            f"dataset.data_dir={str(ds.data_dir)!r} does not exist (resolved from "
            f"{str(Path.cwd())!r}); source={ds.source} needs {hint} there."
        )
    _resolve_dataset(ds)
    val_size = ds.get("val_size", 0)
    if not is_int(val_size) or val_size < 0:
        raise ConfigError(
            f"dataset.val_size={val_size!r} is invalid: it must be an integer >= 0 (training "
            "images held out for validation; 0 trains on all of them), e.g. dataset.val_size=5000."
        )


def _resolve_dataset(ds: DictConfig) -> None:
    """Resolve the dataset's interpolations; a data error in a resolver surfaces as its line."""
    try:
        OmegaConf.to_container(ds, resolve=True)
    except InterpolationResolutionError as err:  # e.g. ${accelopt.folder:...} (dataset=folder)
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, DataSourceError):
            cause = cause.__cause__ or cause.__context__  # OmegaConf chains it implicitly
        if cause is not None:
            raise cause from None
        raise


def _check_optimizer(cfg: DictConfig) -> object:
    check_protocol(cfg.optimizer)
    try:
        factory = optimizer_factory(cfg.optimizer)
        factory([torch.nn.Parameter(torch.zeros(1))])  # constructor checks its own knobs
    except Exception as err:  # noqa: BLE001 - rephrased with the config's key
        raise ConfigError(f"optimizer config is invalid: {err}") from err
    return factory


def _check_hardware(cfg: DictConfig, factory: object) -> None:
    hw = cfg.hardware
    threads = hw.get("num_threads")
    if threads is not None and (not is_int(threads) or threads < 1):
        raise ConfigError(
            f"hardware.num_threads={threads!r} is invalid: it must be an integer >= 1 (torch "
            "intra-op threads per process) or null for torch's default, e.g. "
            "hardware.num_threads=2."
        )
    fmt = hw.get("memory_format", "contiguous")
    if fmt not in MEMORY_FORMATS:
        raise ConfigError(
            f"hardware.memory_format={fmt!r} is invalid; accepted: {', '.join(MEMORY_FORMATS)} "
            "(channels_last is faster for this CNN on CPU and GPU: docs/benchmarks.md)."
        )
    precision = PRECISION_ALIASES.get(hw.precision, hw.precision)
    if precision not in PRECISIONS:
        raise ConfigError(
            f"hardware.precision={hw.precision!r} is invalid; accepted: {', '.join(PRECISIONS)} "
            "(or 32, 64, 16, bf16)."
        )
    precision = cfg.hardware.precision
    if uses_closure(factory) and precision in HALF_PRECISIONS:
        raise ConfigError(
            f"hardware.precision={precision!r} cannot be used with optimizer "
            f"{cfg.optimizer._target_}: NC optimizers call their loss closure several times per "
            "step, and Lightning's 16-bit precision steps without a closure. Use "
            "hardware.precision=32-true (or bf16-mixed)."
        )
    if cfg.hardware.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"hardware.accelerator={cfg.hardware.accelerator!r} needs a CUDA GPU, and torch sees "
            "none here. Use hardware=cpu (or hardware=ddp_cpu for multi-process runs)."
        )
