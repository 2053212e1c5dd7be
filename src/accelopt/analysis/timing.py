"""Timing a call on a device: the median over repeated calls, CUDA-synchronised."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["median_ms", "sync"]


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); nothing on other devices."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    fn: Callable[[], object], reps: int, device: torch.device | None = None, warmup: int = 1
) -> float:
    """Median milliseconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones, each call
    bracketed by :func:`sync` on ``device`` so that asynchronous GPU work is counted."""
    dev = device or torch.device("cpu")
    times = []
    for i in range(warmup + reps):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)
