"""The data module's sets: a held-out validation split of the training set, images normalised once.

The split is drawn from ``split_seed`` alone (the same for every run seed); within each part the
samples keep the source's order. Normalisation maps pixel values in 0..255 to
``(x / 255 − mean) / std`` per channel, in float32, once for the whole set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import TensorDataset


def split_sets(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    val_size: int,
    split_seed: int,
) -> tuple[TensorDataset, TensorDataset | None, TensorDataset]:
    """``(train_set, val_set, test_set)``, normalised; ``val_set`` is None when ``val_size`` is 0.

    ``val_size`` training samples, drawn by a permutation from ``split_seed``, are held out.
    """
    (train_x, train_y), (test_x, test_y) = train, test
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)

    def norm(x: Tensor) -> Tensor:
        return ((x.float() / 255.0) - m) / s

    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    test_set = TensorDataset(norm(test_x), test_y)
    if not val_size:
        return TensorDataset(norm(train_x), train_y), None, test_set
    train_idx = train_idx.sort().values  # keep the source order within the split
    val_set = TensorDataset(norm(train_x[val_idx]), train_y[val_idx])
    return TensorDataset(norm(train_x[train_idx]), train_y[train_idx]), val_set, test_set
