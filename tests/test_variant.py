"""accelopt.variant: the variant hash, the labels' keys, and the TensorBoard hparams."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from accelopt.run.resume import identity
from accelopt.train import compose_config, train
from accelopt.variant import describe, hparams, variant_hash, variant_identity, varying_keys

from .conftest import FAST


def test_hash_is_sha256_of_the_canonical_json_without_the_seed() -> None:
    ident = {"seed": 3, "optimizer.lr": 0.02, "optimizer.seed": 3, "dataset.split_seed": 3}
    body = {"dataset.split_seed": 3, "optimizer.lr": 0.02, "optimizer.seed": "${seed}"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert variant_hash(ident) == hashlib.sha256(text.encode()).hexdigest()[:10]
    assert variant_identity(ident) == body
    other_seed = {**ident, "seed": 4, "optimizer.seed": 4}
    assert variant_hash(other_seed) == variant_hash(ident)
    assert variant_hash({**ident, "dataset.split_seed": 4}) != variant_hash(ident)
    assert variant_hash({**ident, "optimizer.seed": 7}) != variant_hash(ident)  # fixed, not derived


def test_varying_keys_and_labels_by_config_group() -> None:
    a = {"model._target_": "x.ReportCNN", "model.activation": "relu", "optimizer.momentum": 0.9}
    b = {**a, "model.activation": "softplus"}  # the cnn_softplus choice
    c = {**a, "optimizer.momentum": 0.5}  # heavyball with another momentum
    d = {**a, "optimizer.momentum": 0.0}  # another method, whose own momentum is 0
    idents = [a, b, c, d]
    assert varying_keys(idents) == ["model.activation", "optimizer.momentum"]
    methods = ["heavyball", "heavyball", "heavyball", "sgd"]
    choices = [{"model": "cnn"}, {"model": "cnn_softplus"}, {"model": "cnn"}, {"model": "cnn"}]
    text, parts = describe(idents, methods, choices)
    assert text == ["model (config group)", "optimizer.momentum (within a method)"]
    assert parts[0] == (["optimizer.momentum=0.9"], ["model=cnn"])
    assert parts[1] == (["optimizer.momentum=0.9"], ["model=cnn_softplus"])
    assert parts[3] == (["optimizer.momentum=0"], ["model=cnn"])


def test_hparams_hold_the_whole_flattened_config(tmp_path: Path) -> None:
    cfg = compose_config([*FAST, "optimizer=gose"], tmp_path / "run")
    hp = hparams(cfg)
    for key in ("optimizer._target_", "model.activation", "dataset.source", "seed", "variant"):
        assert key in hp, key
    assert all(isinstance(v, bool | int | float | str) for v in hp.values())
    assert hp["variant"] == variant_hash(identity(cfg))
    assert hp["dataset.mean"] == "[0.5]"  # a list as its JSON text
    train(cfg)
    events = list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    data = b"".join(p.read_bytes() for p in events)
    assert b"model.activation" in data and b"dataset.source" in data
