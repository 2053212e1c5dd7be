"""How the training module drives an optimizer (its *protocol*), clipping, and the run's label.

One place decides, for any optimizer, what :class:`~accelopt.models.module.ClassifierModule`
does around its ``step`` (docs/optimizers.md, "Bring your own optimizer"):

- ``nc``: the class has ``uses_closure = True`` → ``opt.step(closure, probe=..., batch_idx=...)``.
- ``schedule_free``: the optimizer has callable ``train()`` and ``eval()`` (the
  ``schedulefree`` package) → plain stepping, plus ``eval()`` around evaluation.
- ``graph``: declared with ``protocol: graph`` in the optimizer's yaml (second-order methods
  that differentiate the gradient: AdaHessian, Sophia-H) → ``backward(create_graph=True)``.
- ``plain``: everything else → ``zero_grad``, ``backward``, clip, ``step``.

The optimizer yaml may carry two *reserved* keys, removed before ``instantiate``:
``protocol`` (``plain`` | ``graph``; the other two are detected) and ``name`` (the run's
method label, see :func:`method_label`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from accelopt.checks import is_number
from accelopt.confdir import CONFIG_DIR

__all__ = [
    "CLIP_ALGORITHMS",
    "CLIP_KEYS",
    "PROTOCOLS",
    "RESERVED_KEYS",
    "check_clip",
    "check_protocol",
    "clip_settings",
    "constructor_cfg",
    "method_label",
    "uses_closure",
    "optimizer_factory",
    "protocol_of",
    "trainer_kwargs",
]

PROTOCOLS = ("plain", "graph", "nc", "schedule_free")
DECLARABLE = ("plain", "graph")
RESERVED_KEYS = ("protocol", "name")
CLIP_KEYS = ("gradient_clip_val", "gradient_clip_algorithm")
CLIP_ALGORITHMS = ("norm", "value")
OPTIMIZER_CONF = Path(CONFIG_DIR) / "optimizer"


def uses_closure(optimizer: object) -> bool:
    """Whether an optimizer (or a partial / class that builds one) uses the closure protocol."""
    target = getattr(optimizer, "func", optimizer)  # functools.partial from Hydra's _partial_
    return bool(getattr(target, "uses_closure", False))


def is_schedule_free(optimizer: object) -> bool:
    """Whether an optimizer has the schedule-free ``train()`` / ``eval()`` mode switch."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )


def protocol_of(optimizer: object, declared: str | None = None) -> str:
    """The protocol the module uses for a built ``optimizer`` (``declared``: the yaml's key)."""
    if uses_closure(optimizer):
        return "nc"
    if declared == "graph":
        return "graph"
    if is_schedule_free(optimizer):
        return "schedule_free"
    return "plain"


def constructor_cfg(node: DictConfig) -> DictConfig:
    """The optimizer config without the reserved keys (what ``instantiate`` receives)."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return OmegaConf.create({k: v for k, v in container.items() if k not in RESERVED_KEYS})


def optimizer_factory(node: DictConfig) -> Callable[..., Any]:
    """``instantiate`` the optimizer config (a partial: ``factory(params)``), reserved keys off.

    Lists arrive as plain lists (``_convert_="all"``), not ``ListConfig``: optimizers keep
    them in ``param_groups`` (e.g. ``betas``), and checkpoints must load with ``weights_only``.
    """
    from hydra.utils import instantiate

    return instantiate(constructor_cfg(node), _convert_="all")


def check_protocol(node: DictConfig) -> None:
    """Raise ConfigError for a ``protocol`` key other than ``plain`` / ``graph`` / null."""
    value = node.get("protocol")
    if value is not None and value not in DECLARABLE:
        from accelopt.errors import ConfigError  # a leaf: no cycle through config

        raise ConfigError(
            f"optimizer.protocol={value!r} is invalid; accepted: {', '.join(DECLARABLE)} "
            "(NC and schedule-free optimizers are detected from the class)."
        )


def clip_settings(trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``gradient_clip_val`` / ``gradient_clip_algorithm`` of ``cfg.trainer`` (module kwargs)."""
    algorithm = trainer_cfg.get("gradient_clip_algorithm")
    return {
        "gradient_clip_val": trainer_cfg.get("gradient_clip_val"),
        "gradient_clip_algorithm": "norm" if algorithm is None else algorithm,
    }


def trainer_kwargs(trainer_cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` as ``L.Trainer`` kwargs, without the clip keys (the module clips itself)."""
    kwargs = OmegaConf.to_container(trainer_cfg, resolve=True)
    assert isinstance(kwargs, dict)
    return {str(k): v for k, v in kwargs.items() if k not in CLIP_KEYS}


def check_clip(trainer_cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for a clip value that is not a number > 0 or an unknown algorithm."""
    from accelopt.errors import ConfigError  # a leaf: no cycle through config

    clip = clip_settings(trainer_cfg)
    val, algorithm = clip["gradient_clip_val"], clip["gradient_clip_algorithm"]
    if val is not None and not (is_number(val) and val > 0):
        raise ConfigError(
            f"trainer.gradient_clip_val={val!r} is invalid: it must be a number > 0 (or null: no "
            "clipping), e.g. ++trainer.gradient_clip_val=1.0."
        )
    if algorithm not in CLIP_ALGORITHMS:
        raise ConfigError(
            f"trainer.gradient_clip_algorithm={algorithm!r} is invalid; accepted: "
            f"{', '.join(CLIP_ALGORITHMS)}."
        )


def _declared_target(choice: str, seen: frozenset[str] = frozenset()) -> str | None:
    """The ``_target_`` that conf/optimizer/<choice>.yaml declares (following its defaults)."""
    path = OPTIMIZER_CONF / f"{choice}.yaml"
    if choice in seen or not path.is_file():
        return None
    node = OmegaConf.load(path)
    if node.get("_target_") is not None:
        return str(node["_target_"])
    for entry in node.get("defaults") or []:
        if isinstance(entry, str) and "/" not in entry and entry != "_self_":
            target = _declared_target(entry, seen | {choice})
            if target is not None:
                return target
    return None


def method_label(optimizer_cfg: DictConfig, choice: str | None) -> str:
    """The run's method label: ``optimizer.name``, else the chosen config's name, else the class.

    The chosen config's name (``optimizer=adam`` → ``adam``) is used only while its class is
    the one that config declares; with ``optimizer._target_`` overridden the label is the class
    name (``optimizer=adam optimizer._target_=torch.optim.AdamW`` → ``AdamW``).
    """
    name = optimizer_cfg.get("name")
    if name:
        return str(name)
    target = optimizer_cfg.get("_target_")
    if choice and (target is None or _declared_target(choice) in (None, target)):
        return str(choice)
    return str(target).rsplit(".", 1)[-1] if target else "unknown"
