"""``dataset=folder``: an image-folder tree whose classes, channels, size and statistics are
inferred, so that ``dataset.data_dir=<tree>`` is the only setting needed.

The tree is ``<data_dir>/train/<class>/*`` and ``<data_dir>/test/<class>/*`` (as for
``source: image_folder``, :func:`accelopt.data.sources.load_image_folder`). The dataset yaml
asks the resolver ``${accelopt.folder:<data_dir>,<cache_dir>,<key>}`` for each inferred value:

- ``num_classes``  the number of class folders of ``train/``
- ``in_channels``  1 for grey images (PIL modes L, 1, I, I;16), 3 otherwise
- ``image_size``   the side of the (square) images
- ``mean``, ``std``  per channel over every pixel of the training images (/255; population std)

Computing them decodes the training images once; the decoded tensors go to the image-folder
cache (which the data module then reads instead of decoding again) and the values to
``<cache_dir>/imagefolder-<key>.info.json``, keyed like that cache by every training file's
path, size and mtime: a changed tree is measured again. Without a cache_dir they are computed
once per process.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from accelopt.data.sources import (
    DataSourceError,
    _cache_key,
    _decode_folder,
    _scan_folder,
    folder_root,
)

RESOLVER = "accelopt.folder"
KEYS = ("num_classes", "in_channels", "image_size", "mean", "std")
_memo: dict[tuple, dict[str, Any]] = {}


def channel_stats(x: Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of uint8 images ``[N, C, H, W]``, scaled by 1/255."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].to(torch.float64) / 255.0
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    n = x.numel() // x.shape[1]
    mean = total / n
    var = (squares / n - mean.square()).clamp_min(0.0)
    return mean.tolist(), var.sqrt().tolist()


def _measure(root: Path, cache_dir: Path | None, paths: list[str], y: Tensor, classes: list[str]):
    x = _decode_folder(root / "train", paths, y, cache_dir)  # fills the image cache too
    if x.shape[-1] != x.shape[-2]:
        raise DataSourceError(
            f"images under {str(root / 'train')!r} are {x.shape[-2]}×{x.shape[-1]} pixels; "
            "dataset=folder needs square images: resize them (e.g. to 32×32)."
        )
    mean, std = channel_stats(x)
    return {
        "num_classes": len(classes), "in_channels": int(x.shape[1]),
        "image_size": int(x.shape[-1]), "mean": mean, "std": std, "classes": classes,
    }  # fmt: skip


def _read_info(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and set(KEYS) <= info.keys() else None


def folder_info(data_dir: str | None, cache_dir: str | None = None) -> dict[str, Any]:
    """Classes, channels, image size and training mean/std of an image-folder tree (cached)."""
    from accelopt.fileio import atomic_write

    root = folder_root(data_dir)
    train = root / "train"
    dirs = [train, *sorted(p for p in train.iterdir() if p.is_dir())]
    memo_key = (str(root.resolve()), str(cache_dir), tuple(p.stat().st_mtime_ns for p in dirs))
    if memo_key in _memo:
        return _memo[memo_key]
    paths, y, classes = _scan_folder(train)
    cache = Path(cache_dir).expanduser() if cache_dir else None
    info_file = None
    if cache is not None:
        info_file = cache / f"imagefolder-{_cache_key(paths, train)[:16]}.info.json"
    info = _read_info(info_file)
    if info is None:
        info = _measure(root, cache, paths, y, classes)
        if info_file is not None:
            with contextlib.suppress(OSError):  # a read-only cache costs measuring again
                atomic_write(info_file, json.dumps(info, indent=1))
    _memo[memo_key] = info
    return info


def resolve(data_dir: str | None, cache_dir: str | None, key: str) -> Any:
    """The OmegaConf resolver ``${accelopt.folder:data_dir,cache_dir,key}``."""
    if key not in KEYS:
        raise DataSourceError(f"{RESOLVER} key {key!r} is unknown; accepted: {', '.join(KEYS)}.")
    return folder_info(data_dir, cache_dir)[key]


def register_resolver() -> None:
    """Register ``${accelopt.folder:...}`` with OmegaConf (once per process)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, resolve, use_cache=True)
