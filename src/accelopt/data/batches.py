"""Index streams over in-memory tensors: the batches of an epoch, and fresh probe samples.

:class:`ShuffledBatches` yields whole batches of indices (no per-sample collation), reshuffled per
epoch from ``(seed, epoch)`` alone; :class:`ResumableLoader` lets Lightning resume it mid-epoch.
:class:`ProbeStream` draws the NC optimizers' probe samples from a permutation stream of its own,
so that asking for probes never changes the training batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler


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


class ProbeStream:
    """Indices of fresh samples: without replacement until the set is used up, then reshuffled.

    Seeded once; its position (generator state, permutation, offset) is the :meth:`state_dict`
    that Lightning saves in checkpoints with the data module's state.
    """

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def draw(self, n: int, total: int) -> Tensor:
        """The next ``n`` indices into a set of ``total`` samples (CPU, int64)."""
        parts, need = [], n
        while need > 0:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(total, generator=self.generator)
                self.pos = 0
            take = self.perm[self.pos : self.pos + need]
            self.pos += len(take)
            parts.append(take)
            need -= len(take)
        return torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "probe_generator": self.generator.get_state(),
            "probe_perm": self.perm,
            "probe_pos": self.pos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["probe_generator"])
        self.perm = state["probe_perm"]
        self.pos = state["probe_pos"]
