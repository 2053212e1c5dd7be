"""A run's *variant*: its whole resolved config except the seed, as a short stable hash.

Two runs are repeats of one experiment (seeds) iff their variants are equal: the report groups
by variant and never pools runs whose configs differ in anything but the seed. The variant is
computed from the run's *identity* (:func:`identity_of`, as :func:`accelopt.run.resume.identity`: the flattened resolved
config minus the keys that may change on resume, :data:`MAY_CHANGE`), minus the
seed: the top-level ``seed`` is dropped, and every key whose last part is ``seed`` and whose
value equals it (``optimizer.seed: ${seed}`` and the like) holds ``"${seed}"`` instead
(``dataset.split_seed`` is config, and stays as it is).

Pure functions (stdlib only, so the report can use them without the training stack; the
identity's keys, :data:`MAY_CHANGE`, live here for the same reason): :func:`variant_identity`, :func:`variant_hash`, :func:`identity_of` (a stored
``config`` dict → identity, for records written before the ``variant`` field),
:func:`varying_keys`, :func:`label_parts` (what a report label shows) and :func:`hparams` (the
flattened config for TensorBoard's HParams view).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MAY_CHANGE",
    "HASH_CHARS",
    "flatten",
    "may_change",
    "identity_of",
    "variant_identity",
    "variant_hash",
    "varying_keys",
    "label_parts",
    "describe",
    "hparams",
]

# Keys that may differ between a run and its resumption (prefix match on the dotted key):
# how long to train, where and how it runs, what is logged and how often it is saved. They are
# not part of a run's identity (accelopt.run.resume), nor of its variant.
MAY_CHANGE = (
    "ckpt_path",
    "output_dir",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "hardware",
    "logger",
    "callbacks",
    "debug",
    "dataset.data_dir",
    "dataset.cache_dir",
    "dataset.download",
    "dataset.eval_batch_size",
    "dataset.num_workers",
)
# A schedule stepped per batch (cosine, warmup_cosine, linear) spans the run's whole length, so
# for such a run the length is identity: resuming with more epochs would restart the curve.
HORIZON_KEYS = ("trainer.max_epochs", "trainer.max_steps")
LENGTHLESS_SCHEDULES = (None, "constant", "step")
HASH_CHARS = 10
SEED = "seed"
SEED_VALUE = "${seed}"
_ABSENT = "(absent)"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts → one dict of dotted keys (an empty dict stays a value)."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def may_change(key: str) -> bool:
    """Whether the dotted ``key`` may change on resume (:data:`MAY_CHANGE`, by prefix)."""
    return any(key == p or key.startswith(p + ".") for p in MAY_CHANGE)


def identity_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The identity (dotted key → value, sorted) of a resolved config as a plain dict: every
    key but those that may change on resume."""
    flat = flatten(dict(config))
    spans = flat.get("scheduler.name") not in LENGTHLESS_SCHEDULES
    return {
        k: v for k, v in sorted(flat.items()) if not may_change(k) or (spans and k in HORIZON_KEYS)
    }


def _seed_derived(key: str, value: Any, seed: Any) -> bool:
    return key == SEED or (key.rsplit(".", 1)[-1] == SEED and value == seed and seed is not None)


def variant_identity(identity: Mapping[str, Any]) -> dict[str, Any]:
    """``identity`` without the seed; keys derived from it hold ``"${seed}"`` instead of its
    value (they are there, and follow the seed: see the module docstring)."""
    seed = identity.get(SEED)
    out = {k: SEED_VALUE if _seed_derived(k, v, seed) else v for k, v in identity.items()}
    out.pop(SEED, None)
    return out


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
    """``group=choice`` for each config group in ``varying_groups``, then ``key=value`` for each
    key in ``varying`` (a class path shown by its name, ``._target_`` dropped from the key)."""
    choices = choices or {}
    parts = [f"{g}={choices.get(g, _ABSENT)}" for g in varying_groups]
    for k in varying:
        value = identity.get(k, _ABSENT)
        name = k[: -len("._target_")] if k.endswith("._target_") else k
        parts.append(f"{name}={_short(value)}")
    return parts


def _determined(key: str, group: str, idents: Sequence[Mapping], picks: Sequence[Any]) -> bool:
    """Whether ``key`` takes one value among the runs with the same ``group`` choice."""
    seen: dict[str, str] = {}
    for ident, pick in zip(idents, picks, strict=True):
        value = _canonical(ident.get(key, _ABSENT))
        if seen.setdefault(_canonical(pick), value) != value:
            return False
    return True


def describe(
    idents: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    choices: Sequence[Mapping[str, Any]],
    shown_apart: Sequence[str] = ("optimizer.lr",),
) -> tuple[list[str], list[tuple[list[str], list[str]]]]:
    """What tells the runs apart: the varying keys (as report text), and per run the label
    parts of its optimizer (keys that vary within one method) and of the rest (its *setting*).

    ``idents`` are variant identities (:func:`variant_identity`) of runs of one data set,
    ``methods`` their optimizer config-group names, ``choices`` their config-group choices.
    A config group whose choice differs and accounts for its keys is shown as ``group=choice``;
    keys it does not account for (e.g. ``model.activation=tanh`` overridden on one run) are
    shown themselves. Keys in ``shown_apart`` (the learning rate) are left to the caller.
    """
    varying = [k for k in varying_keys(idents) if k not in shown_apart]
    groups = sorted({k.split(".", 1)[0] for k in varying if "." in k} - {"optimizer", "dataset"})
    picks = {g: [c.get(g, _ABSENT) for c in choices] for g in groups}
    groups = [g for g in groups if len({_canonical(p) for p in picks[g]}) > 1]
    covered = {
        k
        for k in varying
        for g in groups
        if k.startswith(g + ".") and _determined(k, g, idents, picks[g])
    }
    opt = [k for k in varying if k.startswith("optimizer.")]
    opt = [k for k in opt if not _determined(k, "optimizer", idents, methods)]
    rest = [k for k in varying if not k.startswith("optimizer.") and k not in covered]
    text = [f"{g} (config group)" for g in groups] + rest + [f"{k} (within a method)" for k in opt]
    parts = [
        (label_parts(ident, opt), label_parts(ident, rest, c, groups))
        for ident, c in zip(idents, choices, strict=True)
    ]
    return text, parts


def hparams(cfg: Any) -> dict[str, bool | int | float | str]:
    """The flattened resolved config (a DictConfig or a plain dict) as TensorBoard hparams:
    every key of the run's identity plus ``seed``, each value a bool, number or string (lists
    and null as their JSON text), so the HParams view can filter on any of them."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    ident = identity_of(cfg)
    out: dict[str, bool | int | float | str] = {}
    for k, v in ident.items():
        out[k] = v if isinstance(v, bool | int | float | str) else _canonical(v)
    out["variant"] = variant_hash(ident)
    return out
