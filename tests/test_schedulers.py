"""The scheduler config group: torch's schedules, train/lr, resume identity and bit-identical resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, SequentialLR

from accelopt.config import ConfigError
from accelopt.train import train
from tests.conftest import compose_cfg

STEPS_PER_EPOCH = 14  # synthetic: 448 training images, batch 32
QUIET = [
    "dataset=synthetic",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "hardware.num_threads=1",
    "logger=csv",
    "trainer.log_every_n_steps=1",
]


def quiet_trainer(callbacks: list[L.Callback], **kwargs: object) -> L.Trainer:
    """A bare Lightning trainer (no logger, checkpoints, bar or summary) for module-level tests."""
    return L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )


def run(out: Path, *overrides: str, epochs: int = 2, ckpt: bool = False) -> dict:
    cfg = compose_cfg(
        [*QUIET, f"trainer.max_epochs={epochs}", *([] if ckpt else ["callbacks=none"]), *overrides],
        out,
    )
    return train(cfg)


def logged(out: Path, key: str) -> dict[int, str]:
    """``step -> value`` (as written) of one on-step scalar in the run's CSV log."""
    with open(out / "csv" / "metrics.csv") as f:
        return {int(r["step"]): r[key] for r in csv.DictReader(f) if r.get(key)}


def reference_lrs(make, lr: float, n: int) -> list[float]:
    """The lr of each of ``n`` steps from torch's own scheduler on a throw-away optimizer."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


TOTAL = 2 * STEPS_PER_EPOCH
SCHEDULES = {
    "constant": ([], lambda o: MultiStepLR(o, [10**9])),
    "cosine": (["scheduler.floor=0.1"], lambda o: CosineAnnealingLR(o, TOTAL, eta_min=0.002)),
    "linear": (["scheduler.end_factor=0.25"], lambda o: LinearLR(o, 1.0, 0.25, TOTAL)),
    "warmup_cosine": (
        ["scheduler.warmup=0.25"],  # 7 steps
        lambda o: SequentialLR(
            o, [LinearLR(o, 0.01, 1.0, 7), CosineAnnealingLR(o, TOTAL - 7)], milestones=[7]
        ),
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_follows_torch(name: str, tmp_path: Path):
    overrides, make = SCHEDULES[name]
    record = run(tmp_path, "optimizer=sgd", f"scheduler={name}", *overrides)
    assert record["status"] == "completed"
    lrs = logged(tmp_path, "train/lr")
    assert sorted(lrs) == list(range(TOTAL))
    expected = reference_lrs(make, 0.02, TOTAL)
    for step, lr in lrs.items():
        assert float(lr) == pytest.approx(expected[step], rel=1e-6, abs=1e-12), step


def test_step_schedule_is_per_epoch(tmp_path: Path):
    run(tmp_path, "optimizer=heavyball", "scheduler=step", "scheduler.milestones=[1]", epochs=2)
    lrs = {s: float(v) for s, v in logged(tmp_path, "train/lr").items()}
    assert [lrs[s] for s in range(STEPS_PER_EPOCH)] == pytest.approx([0.02] * STEPS_PER_EPOCH)
    assert [lrs[s] for s in range(STEPS_PER_EPOCH, TOTAL)] == pytest.approx([0.002] * 14)


def test_warmup_in_steps(tmp_path: Path):
    run(tmp_path, "optimizer=sgd", "scheduler=warmup_cosine", "scheduler.warmup=3", epochs=1)
    lrs = [float(v) for _, v in sorted(logged(tmp_path, "train/lr").items())]
    assert lrs[:4] == pytest.approx([0.0002, 0.0002 + 0.0198 / 3, 0.0002 + 2 * 0.0198 / 3, 0.02])
    assert lrs[4] < 0.02


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("scheduler.warmup=1.5", "scheduler.warmup=1.5"),
        ("scheduler.warmup=0", "scheduler.warmup=0"),
        ("scheduler.floor=2", "scheduler.floor=2"),
        ("scheduler.start_factor=0", "scheduler.start_factor=0"),
    ],
)
def test_bad_schedule_is_one_line(override: str, phrase: str, tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        run(tmp_path, "scheduler=warmup_cosine", override, epochs=1)
    assert phrase in str(err.value) and "\n" not in str(err.value)


def test_unbounded_run_with_a_per_batch_schedule_is_refused(tmp_path: Path):
    # bounded in time only (trainer.max_time): the run ends, but a per-batch schedule has no length
    with pytest.raises(ConfigError, match="scheduler=cosine needs a finite number"):
        run(
            tmp_path,
            "scheduler=cosine",
            "trainer.max_steps=-1",
            "+trainer.max_time=00:00:01:00",
            epochs=-1,
        )


def test_bad_milestones(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"scheduler.milestones=\[3, 1\]"):
        run(tmp_path, "scheduler=step", "scheduler.milestones=[3,1]", epochs=1)


def test_resume_with_another_schedule_is_refused(tmp_path: Path):
    run(tmp_path / "a", "scheduler=warmup_cosine", epochs=1, ckpt=True)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="scheduler"):
        run(tmp_path / "b", "scheduler=cosine", f"ckpt_path={ckpt}", epochs=2, ckpt=True)
    with pytest.raises(ConfigError, match="scheduler.warmup"):
        run(tmp_path / "c", "scheduler=warmup_cosine", "scheduler.warmup=0.5", f"ckpt_path={ckpt}")


def test_a_schedule_spanning_the_run_makes_its_length_identity(tmp_path: Path):
    """Continuing a finished cosine run with more epochs would restart the curve: refused, with
    the length named; the step schedule (per epoch, not spanning) may still be extended."""
    run(tmp_path / "cos", "scheduler=cosine", epochs=1, ckpt=True)
    ckpt = tmp_path / "cos" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"trainer.max_epochs: checkpoint 1, now 2"):
        run(tmp_path / "cos", "scheduler=cosine", f"ckpt_path={ckpt}", epochs=2, ckpt=True)
    run(tmp_path / "step", "scheduler=step", "scheduler.milestones=[1]", epochs=1, ckpt=True)
    more = run(
        tmp_path / "step",
        "scheduler=step",
        "scheduler.milestones=[1]",
        "ckpt_path=last",
        epochs=2,
        ckpt=True,
    )
    assert more["status"] == "completed" and len(more["epochs"]) == 2


class StopAfterFirstEpoch(L.Callback):
    """Ends fit after epoch 0 (its checkpoint written): a run interrupted at the boundary."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


RESUMES = {
    "heavyball_warmup_cosine": ["optimizer=heavyball", "scheduler=warmup_cosine"],
    "adamw_step": ["optimizer=adamw", "scheduler=step", "scheduler.milestones=[1]"],
    "adamw_schedulefree_linear": ["optimizer=adamw_schedulefree", "scheduler=linear"],
    "gose_original_cosine": ["optimizer=gose_original", "scheduler=cosine"],
}


@pytest.mark.parametrize("name", list(RESUMES))
def test_resume_is_bit_identical(name: str, tmp_path: Path):
    """Interrupted at the epoch boundary and resumed from last.ckpt = uninterrupted (same machine)."""
    overrides = RESUMES[name]
    run(tmp_path / "whole", *overrides, epochs=2, ckpt=True)
    stop = f"+callbacks.stop._target_={__name__}.StopAfterFirstEpoch"
    run(tmp_path / "first", *overrides, stop, epochs=2, ckpt=True)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run(tmp_path / "rest", *overrides, f"ckpt_path={last}", epochs=2, ckpt=True)
    for key in ("train/lr", "train/loss"):
        whole, rest = logged(tmp_path / "whole", key), logged(tmp_path / "rest", key)
        assert sorted(rest) == list(range(STEPS_PER_EPOCH, TOTAL))
        assert rest == {s: whole[s] for s in rest}, key
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "rest" / "checkpoints" / "last.ckpt", weights_only=False)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a.get("lr_schedulers") == b.get("lr_schedulers")
    assert math.isfinite(float(logged(tmp_path / "rest", "train/loss")[TOTAL - 1]))
