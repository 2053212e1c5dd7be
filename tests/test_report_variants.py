"""The report never pools runs whose configs differ in anything but the seed (issue 20).

Records are made the way ``train`` makes them (``new_record`` on a composed config, the
variant from the run's identity as the recorder sets it), so every key of the real config is
there; then one key at a time is changed and the report must show one more group.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from accelopt.report import load_runs, summarise, write_report
from accelopt.run.record import RunRecord
from accelopt.run.resume import identity
from accelopt.run.session import new_record
from accelopt.train import compose_config, train
from accelopt.variant import identity_of, variant_hash

from .conftest import FAST

BASE = ["dataset=synthetic", "logger=none"]
# one key per part of the config; each must make a separate group
SEPARATING = [
    "optimizer.momentum=0.5",  # an optimizer hyper-parameter
    "optimizer=agd",  # another optimizer class, same lr
    "model.activation=softplus",  # the network
    "model=cnn_softplus",
    "model=mlp",
    "dataset.batch_size=16",  # the data
    "dataset.val_size=32",
    "dataset.split_seed=1",
    "dataset.source=torchvision",
    "trainer.limit_train_batches=3",  # how it trains
    "+trainer.gradient_clip_val=1.0",
    "optimizer.weight_decay=0.0001",
    "stop_at_target=true",
    "+scheduler.warmup=5",  # a key the base config does not have
]
# keys that may change on resume, and the seed itself: the same experiment
POOLING = ["trainer.max_epochs=9", "hardware.num_threads=2", "trainer.log_every_n_steps=3"]


def _record(folder: Path, *overrides: str, seed: int, acc: float = 0.5) -> RunRecord:
    cfg = compose_config([*BASE, *overrides, f"seed={seed}"], folder)
    rec = new_record(cfg, folder)
    rec.variant = variant_hash(identity(cfg))
    rec.add_epoch({"epoch": 0, "step": 10, "test/acc": acc, "time/epoch_s": 1.0})
    rec.finalize("completed", stopped_at_step=10)
    rec.write(folder)
    return rec


def _groups(root: Path) -> dict[tuple[str, str, float], list[int]]:
    summary = summarise(load_runs(root))
    return {k: sorted(r.seed for r in g.runs) for k, g in summary.groups.items()}


@pytest.mark.parametrize("change", SEPARATING)
def test_any_config_difference_but_the_seed_separates_groups(tmp_path: Path, change: str) -> None:
    for seed in (1, 2):
        _record(tmp_path / f"base{seed}", seed=seed)
        _record(tmp_path / f"changed{seed}", change, seed=seed)
    groups = _groups(tmp_path)
    assert len(groups) == 2, groups
    assert sorted(groups.values()) == [[1, 2], [1, 2]]
    labels = [k[1] for k in groups]
    assert any(lbl != labels[0] for lbl in labels)


def test_seed_and_resumable_keys_pool(tmp_path: Path) -> None:
    _record(tmp_path / "a", seed=1)
    _record(tmp_path / "b", "+optimizer.seed=${seed}", seed=2)  # seed-derived: ignored...
    _record(tmp_path / "c", "+optimizer.seed=${seed}", seed=3)
    for i, change in enumerate(POOLING):
        _record(tmp_path / f"p{i}", change, seed=10 + i)
    groups = _groups(tmp_path)
    # ...except that it is a key the plain run lacks: two groups, each pooling over seeds
    assert sorted(groups.values()) == [[1, 10, 11, 12], [2, 3]]
    notes = summarise(load_runs(tmp_path)).notes
    assert not any("different numbers of epochs" in n for n in notes)  # all trained one epoch


def test_pooled_runs_of_different_lengths_are_noted(tmp_path: Path) -> None:
    _record(tmp_path / "a", seed=1)
    longer = _record(tmp_path / "b", "trainer.max_epochs=9", seed=2)
    longer.add_epoch({"epoch": 1, "step": 20, "test/acc": 0.6})
    longer.write(tmp_path / "b")
    summary = summarise(load_runs(tmp_path))
    assert len(summary.groups) == 1
    assert any("different numbers of epochs (1, 2;" in n for n in summary.notes)


def test_stored_variant_equals_the_one_computed_from_the_stored_config(tmp_path: Path) -> None:
    rec = _record(tmp_path / "a", "optimizer.momentum=0.7", seed=4)
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert on_disk["variant"] == rec.variant == variant_hash(identity_of(on_disk["config"]))
    assert len(rec.variant) == 10 and int(rec.variant, 16) >= 0
    del on_disk["variant"]  # an older record: computed at read time, same groups
    (tmp_path / "a" / "metrics.json").write_text(json.dumps(on_disk))
    _record(tmp_path / "b", "optimizer.momentum=0.7", seed=5)
    assert list(_groups(tmp_path).values()) == [[4, 5]]


def test_label_names_what_differs_and_pairing_stays_within_a_setting(tmp_path: Path) -> None:
    for seed in (1, 2):
        _record(tmp_path / f"hb{seed}", seed=seed, acc=0.5)
        _record(tmp_path / f"hbs{seed}", "model.activation=softplus", seed=seed, acc=0.6)
        _record(tmp_path / f"g{seed}", "optimizer=gose", seed=seed, acc=0.7)
    summary = summarise(load_runs(tmp_path))
    labels = sorted(k[1] for k in summary.groups)
    assert labels == [
        "gose model.activation=relu",
        "heavyball model.activation=relu",
        "heavyball model.activation=softplus",
    ]
    assert summary.varying["synthetic"] == ["model.activation"]
    from accelopt.report import paired

    (p,) = paired(summary)  # gose → heavyball in gose's own setting (relu), not the softplus one
    assert (p.method, p.base) == ("gose model.activation=relu", "heavyball model.activation=relu")
    assert p.diff is not None and p.diff.mean == pytest.approx(0.2)


@pytest.mark.slow
def test_two_trained_activations_give_two_groups_in_the_report(tmp_path: Path) -> None:
    """End to end: train() twice per activation into one sweep folder; report.md shows 4 groups
    of 1 — and `heavyball 4/4` nowhere (the bug on main)."""
    root = tmp_path / "sweep"
    for act in ("relu", "softplus"):
        for seed in (1, 2):
            out = root / f"{act}_{seed}"
            train(compose_config([*FAST, *BASE, f"model.activation={act}", f"seed={seed}"], out))
    write_report(root)
    text = (root / "report.md").read_text()
    assert "| heavyball model.activation=relu | 2/2 |" in text
    assert "| heavyball model.activation=softplus | 2/2 |" in text
    assert "4/4" not in text
    assert "`model.activation`" in text
