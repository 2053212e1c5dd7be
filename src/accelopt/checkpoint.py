"""Atomic checkpoint files: a kill during a save never leaves an unreadable checkpoint.

Lightning's ``TorchCheckpointIO`` serialises to memory and then writes through an fsspec
transaction, which for local files writes a temporary file in the *system* temp folder and
``shutil.move``-s it into place: across file systems that is a copy into the final path (a kill
mid-copy leaves a truncated ``last.ckpt``), nothing is fsync-ed, and a killed save leaves its
temporary file behind in ``/tmp``. :class:`AtomicCheckpointIO` writes next to the target
instead (``<name>.tmp-<pid>``, a name Lightning's ``ckpt_path="last"`` search ignores), fsyncs it
and ``os.replace``-s it over the target, which is atomic on POSIX: readers see the old file or
the new one, never a partial one. A temporary file left by a killed save is removed by the next
successful save of the same checkpoint.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save"]


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialisation errors happen before any file is touched
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f"{path.name}.tmp-*"):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (see the module docstring).

    Paths with a URL scheme (``s3://`` and the like) go to Lightning's own implementation.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint does not take storage_options, "
                f"got {storage_options!r}"
            )
        atomic_torch_save(checkpoint, path)
