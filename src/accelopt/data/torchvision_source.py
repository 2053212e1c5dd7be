"""``source: torchvision``: any ``torchvision.datasets`` class with a train/test split, read from
its own file format in ``data_dir``; the dataset yaml names the class (``torchvision_class``).

=================  ============================================================================
class              files torchvision reads under ``data_dir``
=================  ============================================================================
MNIST              ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
FashionMNIST       ``FashionMNIST/raw/...`` (same names as MNIST)
CIFAR10            ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
CIFAR100           ``cifar-100-python/{train,test,meta}``
SVHN               ``{train,test}_32x32.mat``
=================  ============================================================================

MNIST-family files (MNIST, FashionMNIST, KMNIST) are also found gzipped (``*.gz``) and directly
in ``data_dir`` (the layout of the original distributions and of Debian's
``dataset-fashion-mnist``, ``/usr/share/datasets/fashion-mnist``): they are then decompressed
once into ``<cache_dir>/torchvision/<digest>/<Class>/raw/`` (a temporary folder without a
cache_dir) and read from there. ``download: true`` lets torchvision fetch missing files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import inspect
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from accelopt.data.sources import SOURCES, DataSourceError

Splits = tuple[Tensor, Tensor, Tensor, Tensor]
EXAMPLES = "MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN"


def dataset_class(class_name: object) -> type:
    """The ``torchvision.datasets`` class named ``class_name``, if it has a train/test split."""
    from torchvision import datasets

    cls = getattr(datasets, class_name, None) if isinstance(class_name, str) else None
    ok = isinstance(cls, type) and issubclass(cls, datasets.VisionDataset)
    if not ok or _split_kwargs(cls, train=True) is None:
        raise DataSourceError(
            f"dataset.torchvision_class={class_name!r} is not a torchvision.datasets class with "
            f"a train/test split; name one, e.g. {EXAMPLES}."
        )
    return cls


def _split_kwargs(cls: type, train: bool) -> dict[str, object] | None:
    params = inspect.signature(cls.__init__).parameters
    if "train" in params:
        return {"train": train}
    if "split" in params:
        return {"split": "train" if train else "test"}
    return None


def _mnist_family_files(cls: type, root: Path) -> dict[str, Path] | None:
    """Where each raw file of an MNIST-like class lies, if not where torchvision looks."""
    from torchvision.datasets import MNIST

    if not issubclass(cls, MNIST) or not hasattr(cls, "resources"):
        return None
    raw = root / cls.__name__ / "raw"
    plain = [Path(url).name.removesuffix(".gz") for url, _ in cls.resources]
    if all((raw / p).is_file() for p in plain):
        return None  # torchvision's own layout: read as is
    found: dict[str, Path] = {}
    for p in plain:
        candidates = (raw / f"{p}.gz", root / p, root / f"{p}.gz")
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            return None  # incomplete: torchvision names what is missing
        found[p] = hit
    return found


@contextlib.contextmanager
def _readable_root(cls: type, root: Path, cache_dir: Path | None) -> Iterator[Path]:
    """``root``, or a staging root holding the MNIST-family files torchvision expects."""
    from accelopt.fileio import atomic_write

    found = _mnist_family_files(cls, root)
    if found is None:
        yield root
        return
    h = hashlib.sha256(cls.__name__.encode())
    for src in found.values():
        st = src.stat()
        h.update(f"{src.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            base = cache_dir / "torchvision" / h.hexdigest()[:16]
        raw = base / cls.__name__ / "raw"
        for name, src in found.items():
            if not (raw / name).is_file():
                opener = gzip.open if src.suffix == ".gz" else open
                with opener(src, "rb") as fh:
                    atomic_write(raw / name, fh.read())
        yield base


def _as_nchw(data: object) -> Tensor:
    x = torch.as_tensor(np.asarray(data))
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        raise ValueError(f"images are {x.dtype} of shape {tuple(x.shape)}, not uint8 [N,(C,)H,W]")
    if x.ndim == 3:
        return x.unsqueeze(1).contiguous()
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):  # channels last (CIFAR)
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def _split(ds: object) -> tuple[Tensor, Tensor]:
    labels = ds.targets if hasattr(ds, "targets") else ds.labels
    return _as_nchw(ds.data), torch.as_tensor(np.asarray(labels)).long()


def load_torchvision(
    class_name: object,
    data_dir: str | os.PathLike,
    download: bool,
    cache_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> Splits:
    """Both splits of ``torchvision.datasets.<class_name>`` from ``data_dir`` as uint8 tensors."""
    cls = dataset_class(class_name)
    name = name or str(class_name)
    root = Path(data_dir).expanduser()
    if not download and not root.is_dir():
        raise DataSourceError(
            f"data_dir={str(root)!r} does not exist. Put torchvision's {class_name} files there, "
            "or set dataset.download=true to fetch them (needs internet)."
        )
    cache = Path(cache_dir).expanduser() if cache_dir else None
    try:
        with _readable_root(cls, root, cache) as readable:
            sets = [
                cls(str(readable), download=download, **_split_kwargs(cls, train))
                for train in (True, False)
            ]
            return (*_split(sets[0]), *_split(sets[1]))
    except (RuntimeError, OSError, ValueError, TypeError, KeyError) as err:
        detail = " ".join(str(err).split())[:300]
        if download:
            raise DataSourceError(
                f"dataset.download=true but downloading {name} ({class_name}) into "
                f"{str(root)!r} failed ({detail}). Check the network connection, place the "
                f"files there by hand and set download=false, or use another dataset.source "
                f"(one of {', '.join(SOURCES)})."
            ) from err
        raise DataSourceError(
            f"torchvision's {class_name} files for dataset {name!r} were not found or not "
            f"readable under data_dir={str(root)!r} ({detail}). Set dataset.download=true to "
            "fetch them (needs internet), or point dataset.data_dir at them."
        ) from err
