"""The config tree's schemas: dataclasses in Hydra's ConfigStore (group ``schema``), so that Hydra
refuses a value of the wrong type, or a key the schema lacks, while it composes. Each shipped yaml
names its schema first in its defaults list (``- /schema/dataset_torchvision@_here_``).

A schema has exactly the keys of the yamls it types (a dataclass field is a key of every composed
config, and of the run's identity); options with other keys have their own (``dataset_synthetic``,
``scheduler_step``, ...). Plug-in groups (``optimizer``; a model, callback or logger a user adds)
stay open, and so do the ``callbacks`` and ``logger`` nodes: a yaml or ``+callbacks.x._target_=...``
adds an entry. ``trainer`` takes any ``lightning.Trainer`` argument (``++trainer.x=...``): its
schema types the keys ``conf/train.yaml`` sets, as Lightning annotates them, and stays open;
:func:`check_composed` checks every ``trainer`` key against the whole signature and that no value
is left ``???`` (the command line runs it once Hydra has composed: :mod:`accelopt.cli`). Values
types cannot express (ranges, choices, files) are checked by :mod:`accelopt.config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import lightning as L
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

from accelopt.confdir import CONFIG_DIR
from accelopt.errors import ConfigError

__all__ = ["TRAINER_KEYS", "SchemaError", "check_composed", "register", "trainer_schema"]

# The trainer keys conf/train.yaml sets, in its order: typed while Hydra composes (a schema field
# is a key of every composed config, so exactly these); the others once it has composed.
TRAINER_KEYS: tuple[str, ...] = tuple(
    OmegaConf.load(Path(CONFIG_DIR) / "train.yaml").trainer.keys()  # type: ignore[union-attr]
)
# Trainer arguments accelopt sets itself (accelopt.run.build.build_trainer), and where to set them.
SET_ELSEWHERE = {
    "accelerator": "hardware.accelerator",
    "strategy": "hardware.strategy",
    "devices": "hardware.devices",
    "num_nodes": "hardware.num_nodes",
    "precision": "hardware.precision",
    "logger": "logger=<option>",
    "callbacks": "callbacks=<option> (or +callbacks.<name>._target_=...)",
    "enable_checkpointing": "callbacks=none (no checkpoints)",
    "plugins": "accelopt's checkpoint writer (not configurable)",
    "default_root_dir": "output_dir",
    "use_distributed_sampler": "the data module's own sharding (not configurable)",
}
_PLAIN = (int, float, bool, str)
_UNIONS = (Union, types.UnionType)  # Optional[int] (Lightning's), int | None (ours)


class SchemaError(ConfigError):
    """A composed config does not fit its schema; the message names the key."""


def _omegaconf_type(annotation: Any) -> Any:
    """``int``/``float``/``bool``/``str`` or Optional of one as they are; Any for the rest
    (OmegaConf has no Union: ``limit_train_batches`` is an int or a float)."""
    if annotation in _PLAIN:
        return annotation
    args = get_args(annotation)
    if get_origin(annotation) in _UNIONS and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in _PLAIN:
            return Optional[rest[0]]  # noqa: UP045 - a type object, not an annotation
    return Any


def trainer_schema(keys: Iterable[str] | None = None, name: str = "TrainerConf") -> type:
    """A dataclass of ``lightning.Trainer``'s arguments ``keys`` (default: all but those of
    :data:`SET_ELSEWHERE`), typed as the signature annotates them, every field ``???``."""
    params = inspect.signature(L.Trainer.__init__).parameters
    names = [k for k in params if k != "self" and k not in SET_ELSEWHERE] if keys is None else keys
    fields = [(k, _omegaconf_type(params[k].annotation), field(default=MISSING)) for k in names]
    return dataclasses.make_dataclass(name, fields)


TrainerConf = trainer_schema(TRAINER_KEYS)
_TRAINER_ARGS = trainer_schema(name="TrainerArguments")


def _open_trainer() -> TrainerConf:  # type: ignore[valid-type]
    return OmegaConf.structured(TrainerConf, flags={"struct": False})  # type: ignore[return-value]


@dataclass
class TrainConf:
    """``conf/train.yaml``: the run's own keys, the typed trainer, the groups (typed by theirs)."""

    seed: int = MISSING
    output_dir: str = MISSING
    ckpt_path: str | None = MISSING
    targets: Any = MISSING
    stop_at_target: bool = MISSING
    trainer: Any = field(default_factory=_open_trainer)
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    dataset: Any = MISSING
    model: Any = MISSING
    hardware: Any = MISSING
    logger: Any = field(default_factory=dict)
    callbacks: Any = field(default_factory=dict)


@dataclass
class EvalConf:
    """``conf/eval.yaml``."""

    ckpt_path: str | None = MISSING
    run_dir: str | None = MISSING
    limit_batches: Any = MISSING  # an int (batches) or a float (fraction)
    progress_bar: bool = MISSING
    hardware: Any = MISSING


@dataclass
class DatasetConf:
    """``conf/dataset/folder.yaml``: what every data set has (its ClassificationDataModule)."""

    _target_: str = MISSING
    name: str = MISSING
    source: str = MISSING
    data_dir: str | None = MISSING
    download: bool = MISSING
    cache_dir: str | None = MISSING
    mean: list[float] = MISSING
    std: list[float] = MISSING
    in_channels: int = MISSING
    image_size: int = MISSING
    num_classes: int = MISSING
    val_size: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    num_workers: int = MISSING
    split_seed: int = MISSING
    on_device: bool = MISSING


@dataclass
class TorchvisionDatasetConf(DatasetConf):
    """A data set torchvision knows (mnist, cifar10, ...): its class, time-to-target thresholds."""

    torchvision_class: str = MISSING
    targets: Any = MISSING  # metric -> threshold(s): accelopt.targets


@dataclass
class SyntheticDatasetConf(DatasetConf):
    synthetic_train: int = MISSING
    synthetic_test: int = MISSING


@dataclass
class HardwareConf:
    """``conf/hardware/{cpu,gpu}.yaml``."""

    accelerator: str = MISSING
    devices: Any = MISSING  # an int, a list of ints or "auto" (Lightning)
    strategy: Any = MISSING  # a name, or a config with a _target_
    precision: Any = MISSING  # a name ("32-true") or a number (32, 16): Lightning
    num_threads: int | None = MISSING
    memory_format: str = MISSING
    data_on_device: bool = MISSING


@dataclass
class DistributedHardwareConf(HardwareConf):
    """``conf/hardware/{ddp,ddp_cpu}.yaml``."""

    num_nodes: int = MISSING


@dataclass
class ConstantScheduleConf:
    name: str = MISSING


@dataclass
class CosineScheduleConf(ConstantScheduleConf):
    floor: float = MISSING


@dataclass
class LinearScheduleConf(ConstantScheduleConf):
    end_factor: float = MISSING


@dataclass
class StepScheduleConf(ConstantScheduleConf):
    milestones: list[int] = MISSING
    gamma: float = MISSING


@dataclass
class WarmupCosineScheduleConf(CosineScheduleConf):
    warmup: Any = MISSING  # a fraction of the steps (float) or a number of steps (int)
    start_factor: float = MISSING


@dataclass
class ModelConf:
    """What every shipped network takes from the data set."""

    _target_: str = MISSING
    in_channels: int = MISSING
    num_classes: int = MISSING
    image_size: int = MISSING


@dataclass
class CNNConf(ModelConf):
    activation: str = MISSING


@dataclass
class SoftplusCNNConf(CNNConf):
    softplus_beta: float = MISSING


@dataclass
class MLPConf(ModelConf):
    width: int = MISSING
    depth: int = MISSING
    widths: list[int] | None = MISSING
    activation: str = MISSING
    softplus_beta: float = MISSING


@dataclass
class ResNetConf(ModelConf):
    depth: int = MISSING
    width: int = MISSING


@dataclass
class TorchvisionModelConf(ModelConf):
    name: str = MISSING
    small_stem: bool = MISSING


@dataclass
class CheckpointConf:
    """``callbacks.checkpoint`` (accelopt.run.checkpoint.RunCheckpoint)."""

    _target_: str = MISSING
    dirpath: str = MISSING
    every_n_train_steps: int | None = MISSING


@dataclass
class CurvatureMonitorConf:
    """``callbacks.curvature`` (accelopt.monitor.CurvatureMonitor)."""

    _target_: str = MISSING
    every_n_steps: int = MISSING
    probe_size: int = MISSING
    density_starts: int = MISSING
    density_steps: int = MISSING
    lanczos_steps: int = MISSING
    noise_batches: int = MISSING
    grid_points: int = MISSING
    seed: int = MISSING
    hvp_method: str = MISSING


@dataclass
class CSVLoggerConf:
    _target_: str = MISSING
    save_dir: str = MISSING
    name: str = MISSING
    version: str = MISSING


@dataclass
class TensorBoardLoggerConf(CSVLoggerConf):
    default_hp_metric: bool = MISSING


SCHEMAS: dict[str, type] = {
    "train": TrainConf,
    "eval": EvalConf,
    "dataset": DatasetConf,
    "dataset_torchvision": TorchvisionDatasetConf,
    "dataset_synthetic": SyntheticDatasetConf,
    "hardware": HardwareConf,
    "hardware_distributed": DistributedHardwareConf,
    "scheduler_constant": ConstantScheduleConf,
    "scheduler_cosine": CosineScheduleConf,
    "scheduler_linear": LinearScheduleConf,
    "scheduler_step": StepScheduleConf,
    "scheduler_warmup_cosine": WarmupCosineScheduleConf,
    "model_cnn": CNNConf,
    "model_cnn_softplus": SoftplusCNNConf,
    "model_mlp": MLPConf,
    "model_resnet": ResNetConf,
    "model_torchvision": TorchvisionModelConf,
    "checkpoint": CheckpointConf,
    "curvature_monitor": CurvatureMonitorConf,
    "csv_logger": CSVLoggerConf,
    "tensorboard_logger": TensorBoardLoggerConf,
}
"""Name in the ConfigStore group ``schema`` → dataclass (a yaml names it ``/schema/<name>``)."""


def register() -> None:
    """Store :data:`SCHEMAS` in Hydra's ConfigStore (done on import; storing again is harmless)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node, provider="accelopt")


def check_composed(cfg: DictConfig) -> None:
    """Raise :class:`SchemaError` (one line) for a value left ``???``, or a ``trainer`` key that
    is not a ``lightning.Trainer`` argument or whose value does not fit its type."""
    task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # nothing resolved
    try:
        OmegaConf.to_container(task, resolve=False, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = str(err.full_key)
        raise SchemaError(
            f"{key} is missing (???): the {key.split('.')[0]} config must give it a value, e.g. "
            f"{key}=<value>."
        ) from None
    if isinstance(task.get("trainer"), DictConfig):
        _check_trainer(task.trainer)


def _check_trainer(trainer: DictConfig) -> None:
    for key in trainer:
        if key in SET_ELSEWHERE:
            where = SET_ELSEWHERE[key]
            use = f"{where}={trainer[key]}" if where.startswith("hardware.") else where
            raise SchemaError(f"trainer.{key} is set by accelopt, not in trainer: use {use}.")
    values = OmegaConf.to_container(trainer, resolve=False)
    try:
        OmegaConf.merge(OmegaConf.structured(_TRAINER_ARGS), values)
    except ConfigKeyError as err:
        known = [f.name for f in dataclasses.fields(_TRAINER_ARGS)]
        close = difflib.get_close_matches(str(err.key), known, n=1)
        hint = f"did you mean trainer.{close[0]}?" if close else "see lightning.Trainer's arguments"
        raise SchemaError(
            f"trainer.{err.key} is not an argument of lightning.Trainer ({hint})."
        ) from None
    except ValidationError as err:
        raise SchemaError(invalid_value(err, "trainer.")) from None


_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(hint: Any) -> str | None:
    """``int | None`` → "an integer or null"; ``list[float]`` → "a list of numbers"."""
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) in _UNIONS and len(args) == 1:
        inner = _describe(args[0])
        return None if inner is None else f"{inner} or null"
    if get_origin(hint) is list and args and args[0] in _WORDS:
        return f"a list of {_WORDS[args[0]].removeprefix('an ').removeprefix('a ')}s"
    return _WORDS.get(hint)


def _expected(err: ValidationError) -> str | None:
    """What the schema field (or list element) that refused ``err.value`` accepts."""
    owner = err.object_type
    if dataclasses.is_dataclass(owner) and isinstance(err.key, str):
        return _describe(get_type_hints(owner).get(err.key))
    ref = err.ref_type
    if get_origin(ref) in _UNIONS:  # list[int] | None
        ref = next((a for a in get_args(ref) if a is not type(None)), None)
    if isinstance(err.key, int) and get_origin(ref) is list:  # a list's element
        return _describe(get_args(ref)[0])
    return None


def invalid_value(err: ValidationError, prefix: str = "") -> str:
    """One line for OmegaConf's ValidationError: the key, the value, what the schema expects."""
    expected = _expected(err)
    must = f"it must be {expected} " if expected else ""
    reason = str(err.msg).splitlines()[0]
    return f"{prefix}{err.full_key}={err.value!r} is invalid: {must}(the config schema: {reason})."


register()
