"""torchvision sources on tiny files in each data set's real format, through the real train()."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from accelopt.data import DataSourceError
from accelopt.data.torchvision_source import load_torchvision
from accelopt.train import train

TINY = ["trainer.limit_train_batches=2", "dataset.batch_size=8", "dataset.val_size=4"]


def _idx(array: np.ndarray) -> bytes:
    """The idx-ubyte format of MNIST-like files: magic (0, 0, 0x08, ndim), big-endian dims, bytes."""
    head = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(np.uint8).tobytes()


def _fashion(root: Path, gz: bool, raw: bool, n: int = (20, 10)) -> dict[str, np.ndarray]:
    """Fashion-MNIST's four files, flat in ``root`` (Debian's layout) or in FashionMNIST/raw."""
    rng = np.random.default_rng(0)
    arrays = {}
    folder = root / "FashionMNIST" / "raw" if raw else root
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "t10k"), n, strict=True):
        arrays[f"{split}-images"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels"] = np.arange(count, dtype=np.uint8) % 10
        for kind, dim in (("images", 3), ("labels", 1)):
            data = _idx(arrays[f"{split}-{kind}"])
            name = f"{split}-{kind}-idx{dim}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays


def _cifar100(root: Path, n: int = 100) -> dict[str, np.ndarray]:
    """cifar-100-python/{train,test,meta}: pickled dicts as in the official tarball."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split in ("train", "test"):
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)  # rows: R, G, B planes
        labels = [i % 100 for i in range(n)]
        entry = {"data": data, "fine_labels": labels, "coarse_labels": [i // 5 for i in labels]}
        (folder / split).write_bytes(pickle.dumps(entry))
        out[split] = data.reshape(n, 3, 32, 32)
    meta = {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return out


def _svhn(root: Path, n: int = 20) -> dict[str, np.ndarray]:
    """{train,test}_32x32.mat: X is (32, 32, 3, N) uint8, y is (N, 1) with digit 0 stored as 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # 1..10
        savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
        out[split] = (x.transpose(3, 2, 0, 1), y[:, 0] % 10)  # N, C, H(=dim 0), W(=dim 1)
    return out


@pytest.fixture
def no_md5(monkeypatch):
    """Tiny fake files cannot have the official md5 sums; keep every other check."""
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    def exists(fpath: str, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", exists)


@pytest.mark.parametrize(("gz", "raw"), [(True, False), (False, False), (False, True)])
def test_fashion_mnist_reads_exact_bytes_in_every_layout(tmp_path, gz, raw):
    arrays = _fashion(tmp_path / "fm", gz=gz, raw=raw)
    cache = tmp_path / "cache"
    tx, ty, sx, sy = load_torchvision("FashionMNIST", tmp_path / "fm", False, cache)
    assert tx.shape == (20, 1, 28, 28) and tx.dtype == torch.uint8
    assert np.array_equal(tx[:, 0].numpy(), arrays["train-images"])
    assert np.array_equal(sx[:, 0].numpy(), arrays["t10k-images"])
    assert ty.tolist() == arrays["train-labels"].tolist() and sy.dtype == torch.int64
    staged = list(cache.glob("torchvision/*/FashionMNIST/raw/*"))
    assert len(staged) == (0 if raw else 4)  # torchvision's own layout is read in place


def test_cifar100_reads_exact_bytes(tmp_path, no_md5):
    data = _cifar100(tmp_path / "c100")
    tx, ty, sx, sy = load_torchvision("CIFAR100", tmp_path / "c100", False)
    assert tx.shape == (100, 3, 32, 32)
    assert np.array_equal(tx.numpy(), data["train"]) and np.array_equal(sx.numpy(), data["test"])
    assert ty.tolist() == list(range(100))


def test_svhn_reads_exact_bytes_and_maps_label_10_to_0(tmp_path):
    data = _svhn(tmp_path / "svhn")
    import torchvision.datasets.svhn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchvision.datasets.svhn, "check_integrity", lambda p, md5=None: True)
        tx, ty, sx, sy = load_torchvision("SVHN", tmp_path / "svhn", False)
    assert np.array_equal(tx.numpy(), data["train"][0])
    assert ty.tolist() == data["train"][1].tolist() and 0 in ty.tolist()


def test_missing_files_and_unknown_classes_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match=r"FashionMNIST files .* not found") as info:
        load_torchvision("FashionMNIST", tmp_path / "empty", False)
    assert "\n" not in str(info.value)
    with pytest.raises(DataSourceError, match=r"torchvision_class='Fashion' is not .* e.g. MNIST"):
        load_torchvision("Fashion", tmp_path / "empty", False)


# -- the real train() on each data set's yaml ---------------------------------------------------
def test_fashion_mnist_trains_from_debian_layout(make_cfg, tmp_path):
    _fashion(tmp_path / "fm", gz=True, raw=False)
    cfg = make_cfg(
        "dataset=fashion_mnist", f"dataset.data_dir={tmp_path / 'fm'}",
        f"dataset.cache_dir={tmp_path / 'cache'}", *TINY,
    )  # fmt: skip
    record = train(cfg)
    assert record["status"] == "completed" and record["dataset"] == "fashion_mnist"
    assert cfg.targets == {"val/acc": [0.85, 0.90]}


def test_resnet20_trains_on_cifar100_files(make_cfg, tmp_path, no_md5):
    _cifar100(tmp_path / "c100")
    cfg = make_cfg(
        "dataset=cifar100", "model=resnet20", f"dataset.data_dir={tmp_path / 'c100'}", *TINY
    )
    record = train(cfg)
    assert record["status"] == "completed" and record["dataset"] == "cifar100"
    assert cfg.model.num_classes == 100 and cfg.model.in_channels == 3


def test_svhn_trains(make_cfg, tmp_path, no_md5):
    _svhn(tmp_path / "svhn")
    cfg = make_cfg("dataset=svhn", "model=mlp", f"dataset.data_dir={tmp_path / 'svhn'}", *TINY)
    record = train(cfg)
    assert record["status"] == "completed" and record["dataset"] == "svhn"


DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist absent")
def test_real_fashion_mnist_matches_its_yaml(tmp_path):
    from omegaconf import OmegaConf

    from .conftest import CONF_DIR

    yaml = OmegaConf.load(CONF_DIR / "dataset" / "fashion_mnist.yaml")
    tx, ty, sx, sy = load_torchvision("FashionMNIST", DEBIAN_FASHION, False, tmp_path)
    assert tx.shape == (60_000, 1, 28, 28) and sx.shape == (10_000, 1, 28, 28)
    assert torch.bincount(sy).tolist() == [1000] * 10 and int(ty.max()) + 1 == yaml.num_classes
    x = tx.double() / 255
    assert round(x.mean().item(), 4) == yaml.mean[0]
    assert round(x.std(unbiased=False).item(), 4) == yaml.std[0]
