"""The model's part of a run folder's name: ``${accelopt.model_tag:<default>,<choice>,<name>}``.

conf/train.yaml names run folders ``<date>_<dataset><tag>_<optimizer>``: the tag is empty for
the default model (so the default runs keep their names), ``_<choice>`` for another option of
the model group (``_resnet20``, ``_mlp``) and ``_<choice>-<name>`` when the model config has a
``name`` (``_torchvision-resnet18``).
"""

from __future__ import annotations

RESOLVER = "accelopt.model_tag"


def model_tag(default: str, choice: str | None, name: str | None = None) -> str:
    """'' for the default model, else ``_<choice>`` (``_<choice>-<name>`` with a name)."""
    if choice is None or choice == default:
        return ""
    return f"_{choice}-{name}" if name else f"_{choice}"


def register_resolver() -> None:
    """Register ``${accelopt.model_tag:...}`` with OmegaConf (once per process)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, model_tag)
