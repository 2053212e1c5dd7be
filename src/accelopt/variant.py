"""A run's *variant*: its whole resolved config except the seed, as a short stable hash.

Two runs are repeats of one experiment (seeds) iff their variants are equal: the report groups
by variant and never pools runs whose configs differ in anything but the seed. The variant is
computed from the run's *identity* (:func:`accelopt.resume.identity`: the flattened resolved
config minus the keys that may change on resume, :data:`accelopt.resume.MAY_CHANGE`), minus the
seed: the top-level ``seed`` and every key whose last part is ``seed`` and whose value equals
it (``optimizer.seed: ${seed}`` and the like; ``dataset.split_seed`` is config, and stays).

Pure functions: :func:`variant_identity`, :func:`variant_hash`, :func:`identity_of` (a stored
``config`` dict → identity, for records written before the ``variant`` field),
:func:`varying_keys`, :func:`label_parts` (what a report label shows) and :func:`hparams` (the
flattened config for TensorBoard's HParams view).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from accelopt.resume import _flatten, _may_change, identity

__all__ = [
    "HASH_CHARS",
    "identity_of",
    "variant_identity",
    "variant_hash",
    "varying_keys",
    "label_parts",
    "hparams",
]

HASH_CHARS = 10
SEED = "seed"
_ABSENT = "(absent)"


def identity_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The identity (dotted key → value, sorted) of a resolved config stored as a plain dict."""
    flat = _flatten(dict(config))
    return {k: v for k, v in sorted(flat.items()) if not _may_change(k)}


def _seed_derived(key: str, value: Any, seed: Any) -> bool:
    return key == SEED or (key.rsplit(".", 1)[-1] == SEED and value == seed and seed is not None)


def variant_identity(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` without the seed and the keys derived from it (see the module docstring)."""
    seed = identity.get(SEED)
    return {k: v for k, v in identity.items() if not _seed_derived(k, v, seed)}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def variant_hash(identity: Mapping[str, Any]) -> str:
    """10 hex digits of the SHA-256 of the canonical JSON of :func:`variant_identity`."""
    text = _canonical(variant_identity(identity))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def varying_keys(identities: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys whose value (or presence) is not the same in all ``identities``, sorted."""
    keys = sorted({k for ident in identities for k in ident})
    out = []
    for k in keys:
        values = {_canonical(ident.get(k, _ABSENT)) for ident in identities}
        if len(values) > 1:
            out.append(k)
    return out


def _short(value: Any) -> str:
    if isinstance(value, str) and "." in value and value.split(".")[-1][:1].isupper():
        return value.rsplit(".", 1)[-1]  # a class path (``_target_``): its name
    if isinstance(value, float):
        return format(value, "g")
    return value if isinstance(value, str) else _canonical(value)


def label_parts(
    identity: Mapping[str, Any],
    varying: Sequence[str],
    choices: Mapping[str, Any] | None = None,
    varying_groups: Sequence[str] = (),
) -> list[str]:
    """``key=value`` for each varying key of ``identity`` (``group=choice`` for each config
    group in ``varying_groups``, whose own keys it then stands for), in key order."""
    choices = choices or {}
    parts = [f"{g}={choices.get(g, _ABSENT)}" for g in varying_groups]
    for k in varying:
        if any(k.startswith(g + ".") for g in varying_groups):
            continue
        value = identity.get(k, _ABSENT)
        name = k[: -len("._target_")] if k.endswith("._target_") else k
        parts.append(f"{name}={_short(value)}")
    return parts


def hparams(cfg: Any) -> dict[str, bool | int | float | str]:
    """The flattened resolved config (a DictConfig or a plain dict) as TensorBoard hparams:
    every key of the run's identity plus ``seed``, each value a bool, number or string (lists
    and null as their JSON text), so the HParams view can filter on any of them."""
    ident = identity(cfg) if OmegaConf.is_config(cfg) else identity_of(cfg)
    out: dict[str, bool | int | float | str] = {}
    for k, v in ident.items():
        out[k] = v if isinstance(v, bool | int | float | str) else _canonical(v)
    out["variant"] = variant_hash(ident)
    return out
