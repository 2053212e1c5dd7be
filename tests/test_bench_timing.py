"""The benchmarks' timer: how many calls it makes, which ones it times, and what it reports."""

from __future__ import annotations

import time

import pytest
import torch

from accelopt.analysis.timing import median_ms


def test_median_ms_times_reps_calls_after_the_warmup_ones() -> None:
    sleeps = [0.1, 0.001, 0.001, 0.04]  # the first is the warm-up: not timed
    calls = []

    def fn() -> None:
        time.sleep(sleeps[len(calls)])
        calls.append(1)

    ms = median_ms(fn, reps=3, warmup=1)
    assert len(calls) == 4
    # the timed three (≥ 1, 1, 40 ms) have median ≈ 1 ms; counting the 100 ms warm-up would
    # make it ≥ 20.5 ms
    assert 1.0 <= ms < 20


def test_median_ms_without_warmup_times_every_call() -> None:
    calls = []
    ms = median_ms(lambda: calls.append(time.sleep(0.004)), reps=1, warmup=0)
    assert len(calls) == 1 and ms >= 4.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_median_ms_waits_for_cuda_work() -> None:
    x = torch.randn(4096, 4096, device="cuda")
    ms = median_ms(lambda: x @ x, reps=3, device=x.device)
    assert ms > 0.1  # an unsynchronised launch returns in microseconds
