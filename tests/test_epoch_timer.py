"""EpochTimer: both clocks pause for validation and subtract what other callbacks exclude."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import accelopt.run.timer as timer_mod
from accelopt.run.record import RunRecord
from accelopt.run.timer import EpochTimer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_wall_and_cpu_clocks_pause_for_validation_and_subtract_exclusions(monkeypatch) -> None:
    wall, cpu = FakeClock(), FakeClock()
    monkeypatch.setattr(
        timer_mod,
        "CLOCKS",
        (("time/epoch_s", wall, "excluded_time_s"), ("time/epoch_cpu_s", cpu, "excluded_cpu_s")),
    )
    monitor = SimpleNamespace(excluded_time_s=10.0, excluded_cpu_s=20.0)  # cumulative, before
    trainer = SimpleNamespace(callbacks=[monitor])
    logged: dict[str, float] = {}
    module = SimpleNamespace(
        device=SimpleNamespace(type="cpu"), log=lambda k, v, **kw: logged.__setitem__(k, v)
    )
    timer = EpochTimer()
    timer.on_train_epoch_start(trainer, module)  # wall 0, cpu 0
    wall.now, cpu.now = 5.0, 3.0
    timer.on_validation_start(trainer, module)
    wall.now, cpu.now = 7.0, 4.0  # validation: 2 s wall, 1 s CPU, not counted
    timer.on_validation_end(trainer, module)
    monitor.excluded_time_s, monitor.excluded_cpu_s = 11.0, 20.5  # the monitor measured once
    wall.now, cpu.now = 10.0, 6.0
    timer.on_train_epoch_end(trainer, module)
    # wall: 5 + 3 − 1 excluded; CPU: 3 + 2 − 0.5 excluded
    assert logged == {"time/epoch_s": 7.0, "time/epoch_cpu_s": 4.5}
    assert timer.last_epoch_s == 7.0 and timer.last["time/epoch_cpu_s"] == 4.5


def test_record_final_holds_the_mean_of_both_clocks() -> None:
    rec = RunRecord(method="m", dataset="d", lr=0.1, seed=1)
    rec.add_epoch({"epoch": 0, "step": 5, "time/epoch_s": 2.0, "time/epoch_cpu_s": 1.0})
    rec.add_epoch({"epoch": 1, "step": 10, "time/epoch_s": 4.0, "time/epoch_cpu_s": 2.0})
    rec.finalize("completed", stopped_at_step=10)
    assert rec.final["time/epoch_s"] == 3.0
    assert rec.final["time/epoch_cpu_s"] == pytest.approx(1.5)
