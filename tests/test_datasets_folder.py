"""dataset=folder: classes, channels, size and mean/std inferred from a tree of PNGs (cached)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import accelopt.data.folder as folder
from accelopt.config import ConfigError
from accelopt.data import DataSourceError
from accelopt.train import train


def _tree(root: Path, classes: int = 3, n: int = 4, size: int = 8, mode: str = "L") -> np.ndarray:
    """``root/{train,test}/c<k>/<i>.png``; returns the training pixels in scan order [N,C,H,W]."""
    rng = np.random.default_rng(classes * 100 + size)
    train = []
    for split in ("train", "test"):
        for k in range(classes):
            (root / split / f"c{k}").mkdir(parents=True)
            for i in range(n):
                shape = (size, size) if mode == "L" else (size, size, 3)
                a = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(a, mode=mode).save(root / split / f"c{k}" / f"{i}.png")
                if split == "train":
                    train.append(a[None] if mode == "L" else a.transpose(2, 0, 1))
    return np.stack(train)


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3)])
def test_folder_info_is_inferred_and_its_statistics_are_numpy_s(tmp_path, mode, channels):
    pixels = _tree(tmp_path / "d", classes=3, size=8, mode=mode) / 255.0
    info = folder.folder_info(str(tmp_path / "d"), str(tmp_path / "cache"))
    assert (info["num_classes"], info["in_channels"], info["image_size"]) == (3, channels, 8)
    assert info["classes"] == ["c0", "c1", "c2"]
    np.testing.assert_allclose(info["mean"], pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(info["std"], pixels.std(axis=(0, 2, 3)), rtol=1e-12)


def test_statistics_are_read_from_the_cache_and_remeasured_for_a_changed_tree(
    tmp_path, monkeypatch
):
    _tree(tmp_path / "d")
    first = folder.folder_info(str(tmp_path / "d"), str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("imagefolder-*.info.json"))) == 1
    folder._memo.clear()

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds this tree")

    monkeypatch.setattr(folder, "_decode_folder", no_decoding)
    assert folder.folder_info(str(tmp_path / "d"), str(tmp_path / "cache")) == first
    monkeypatch.undo()
    folder._memo.clear()
    Image.new("L", (8, 8), 255).save(tmp_path / "d" / "train" / "c0" / "white.png")
    changed = folder.folder_info(str(tmp_path / "d"), str(tmp_path / "cache"))
    assert changed["mean"][0] > first["mean"][0]  # a white image raised the mean
    assert len(list((tmp_path / "cache").glob("imagefolder-*.info.json"))) == 2


def test_non_square_images_are_refused(tmp_path):
    _tree(tmp_path / "d", classes=2, n=1)
    for f in (tmp_path / "d").rglob("*.png"):
        Image.new("L", (8, 6)).save(f)
    with pytest.raises(DataSourceError, match=r"are 6×8 pixels; dataset=folder needs square"):
        folder.folder_info(str(tmp_path / "d"), None)


def test_dataset_folder_trains_with_everything_inferred(make_cfg, tmp_path):
    _tree(tmp_path / "d", classes=3, n=4, size=10, mode="RGB")
    cfg = make_cfg(
        "dataset=folder", f"dataset.data_dir={tmp_path / 'd'}",
        f"dataset.cache_dir={tmp_path / 'cache'}", "model=mlp", "model.width=16",
    )  # fmt: skip
    record = train(cfg)
    assert record["status"] == "completed"
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes) == (3, 10, 3)
    assert cfg.targets is None
    on_disk = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
    assert on_disk["config"]["dataset"]["num_classes"] == 3  # recorded resolved


def test_dataset_folder_without_a_tree_is_one_line(make_cfg, tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    cfg = make_cfg("dataset=folder", f"dataset.data_dir={tmp_path / 'd'}")
    with pytest.raises((ConfigError, DataSourceError), match=r"lacks .*test") as info:
        train(cfg)
    assert "\n" not in str(info.value)


def test_explicit_num_classes_that_disagrees_with_the_folders_is_refused(make_cfg, tmp_path):
    _tree(tmp_path / "d", classes=4, n=2)
    cfg = make_cfg(
        "dataset=folder", f"dataset.data_dir={tmp_path / 'd'}", "dataset.num_classes=10",
        f"dataset.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    with pytest.raises(DataSourceError, match=r"has 4 classes, but dataset.num_classes=10") as info:
        train(cfg)
    assert "\n" not in str(info.value)
