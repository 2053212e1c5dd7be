"""Evaluations within an epoch, time to target, stop_at_target, train scalars, env (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from accelopt.config import ConfigError
from accelopt.report import load_runs, summarise
from accelopt.report.ttt import time_to_targets
from accelopt.run.record import RunRecord
from accelopt.run.recorder import RunRecorder
from accelopt.run.timer import EpochTimer
from accelopt.targets import Target, parse_targets, time_to_target
from accelopt.train import compose_config, train

from .conftest import FAST

# synthetic: 448 training images, batch 32 → 14 batches per epoch; evaluate every 7
EVERY = ["trainer.val_check_interval=7", "logger=none", "trainer.max_epochs=2"]
TARGETS = "+targets={val/acc:[0.5,0.9],val/loss:[1.3]}"


def _run(out: Path, *overrides: str) -> dict[str, Any]:
    train(compose_config([*FAST, *EVERY, *overrides], out))
    return json.loads((out / "metrics.json").read_text())


def _first(rows: list[dict[str, Any]], metric: str, threshold: float) -> dict[str, Any] | None:
    lower = metric.endswith("loss")
    for row in rows:  # rows are in step order
        v = row.get(metric)
        if v is not None and (v <= threshold if lower else v >= threshold):
            return row
    return None


def test_sub_epoch_evaluations_and_time_to_target(tmp_path: Path) -> None:
    rec = _run(tmp_path / "run", TARGETS)
    evals = rec["evals"]
    assert [e["step"] for e in evals] == [7, 14, 21, 28]
    assert [e["epoch"] for e in evals] == [0, 0, 1, 1]
    for e in evals:
        assert {"val/acc", "val/loss", "time/train_s", "time/train_cpu_s"} <= e.keys()
        assert not any(k.startswith("test/") for k in e)  # the test set stays per epoch
    times = [e["time/train_s"] for e in evals]
    assert times == sorted(times) and times[0] > 0
    # the epoch-end evaluation's clock is the epoch's training time up to that evaluation (the
    # epoch row adds the few hooks after it): never more, and most of it (a ratio, not a time
    # budget: the hooks are a small share of 14 training steps on any machine)
    epochs = rec["epochs"]
    first, total = epochs[0]["time/epoch_s"], epochs[0]["time/epoch_s"] + epochs[1]["time/epoch_s"]
    assert first / 2 < evals[1]["time/train_s"] <= first
    assert total / 2 < evals[3]["time/train_s"] <= total
    assert first < evals[2]["time/train_s"] < evals[3]["time/train_s"]
    assert [e["step"] for e in epochs] == [14, 28] and "test/acc" in epochs[1]
    # every target: the first evaluation that reached it, or null
    assert [(t["metric"], t["threshold"]) for t in rec["targets"]] == [
        ("val/acc", 0.5),
        ("val/acc", 0.9),
        ("val/loss", 1.3),
    ]
    for t in rec["targets"]:
        row = _first(evals, t["metric"], t["threshold"])
        keys = ("step", "epoch", "time/train_s", "time/train_cpu_s")
        assert {k: t[k] for k in keys} == {k: None if row is None else row[k] for k in keys}
    assert any(t["step"] is not None for t in rec["targets"])  # the guard can fail: some reached
    assert rec["stop_reason"] is None and rec["stopped_at_step"] == 28


def test_the_test_set_is_evaluated_at_epoch_ends_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-epoch evaluations run the validation set alone; each epoch end runs both."""
    from accelopt.models.module import ClassifierModule

    seen: list[tuple[str, int]] = []
    evaluate = ClassifierModule._evaluate

    def spy(self: ClassifierModule, batch: Any, name: str, slot: int) -> None:
        seen.append((name, self.trainer.global_step))
        evaluate(self, batch, name, slot)

    monkeypatch.setattr(ClassifierModule, "_evaluate", spy)
    rec = _run(tmp_path / "run")
    assert sorted({s for n, s in seen if n == "val"}) == [7, 14, 21, 28]
    assert sorted({s for n, s in seen if n == "test"}) == [14, 28]
    assert all("test/acc" in e for e in rec["epochs"])


def test_stop_at_target_stops_at_the_last_target(tmp_path: Path) -> None:
    rec = _run(tmp_path / "run", "+targets={val/acc:[0.4]}", "stop_at_target=true")
    reached = rec["targets"][0]["step"]
    assert reached is not None and reached < 28
    assert rec["status"] == "completed" and rec["stopped_at_step"] == reached
    assert rec["evals"][-1]["step"] == reached and "stop_at_target" in rec["stop_reason"]
    # resuming it for more epochs trains nothing more: its targets are reached
    again = _run(
        tmp_path / "run",
        "+targets={val/acc:[0.4]}",
        "stop_at_target=true",
        "trainer.max_epochs=3",
        "ckpt_path=last",
    )
    assert again["stopped_at_step"] == reached and again["evals"] == rec["evals"]


def test_resume_keeps_the_evaluations(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run(out, "trainer.max_epochs=1")
    assert [e["step"] for e in first["evals"]] == [7, 14]
    resumed = _run(out, "trainer.max_epochs=2", "ckpt_path=last")
    assert resumed["evals"][:2] == first["evals"]
    assert [e["step"] for e in resumed["evals"]] == [7, 14, 21, 28]


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"train/acc": [0.9]}, "unknown metric 'train/acc'"),
        ({"val/acc": ["high"]}, "threshold 'high' is not a finite number"),
        ({"val/acc": []}, "is not a finite number"),
        ([0.9], "is not a mapping"),
    ],
)
def test_bad_targets_are_one_line_config_errors(spec: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        parse_targets(spec)
    assert "\n" not in str(info.value)


def test_bad_targets_refuse_the_run_before_it_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown metric"):
        train(compose_config([*FAST, "+targets={val/accuracy:[0.9]}"], tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


def test_targets_parse_and_direction() -> None:
    acc, loss = parse_targets({"val/acc": 0.9, "val/loss": [0.5]})
    assert acc == Target("val/acc", 0.9) and acc.reached_by({"val/acc": 0.9})
    assert not acc.reached_by({"val/acc": 0.89}) and loss.reached_by({"val/loss": 0.4})
    assert not loss.reached_by({"val/loss": 0.6}) and not loss.reached_by({})
    assert parse_targets({"val/acc": [0.9]}, has_val=False) == []
    with pytest.raises(ConfigError, match="validation split"):
        parse_targets({"val/acc": [0.9]}, has_val=False, stop=True)


def test_an_interval_that_does_not_divide_the_epoch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not divide the 14 training batches"):
        train(compose_config([*FAST, "trainer.val_check_interval=5"], tmp_path / "run"))


class _Tiny(L.LightningModule):
    """A linear model that logs ``train/lr`` and ``train/grad_norm`` on every step, as the
    optimizer module does, plus an epoch-level scalar the recorder must leave out."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.net(batch[0]).pow(2).mean()
        self.log("train/lr", 0.5 + self.global_step, on_step=True, on_epoch=False)
        self.log("train/grad_norm", float(batch_idx), on_step=True, on_epoch=False)
        self.log("train/loss_epoch_mean", loss, on_step=False, on_epoch=True)
        self.log("train/other_epoch", 1.0, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _tiny_fit(rec: RunRecord, max_steps: int, ckpt: str | None = None, out: Path | None = None):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 3)), 4)
    timer = EpochTimer()
    recorder = RunRecorder(rec, timer, {"seed": 1, "optimizer.lr": 0.1})
    trainer = L.Trainer(
        max_steps=max_steps,
        log_every_n_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, recorder],
        default_root_dir=str(out) if out else None,
    )
    trainer.fit(_Tiny(), train_dataloaders=data, ckpt_path=ckpt)
    return trainer


def test_train_scalars_at_the_logger_cadence_resume_and_env(tmp_path: Path) -> None:
    rec = RunRecord(method="tiny", dataset="none", lr=0.1, seed=1)
    trainer = _tiny_fit(rec, max_steps=16)  # 10 batches per epoch: crosses an epoch end
    ts = rec.train_scalars
    assert set(ts) == {"step", "train/lr", "train/grad_norm"}
    assert ts["step"] == [3, 6, 9, 12, 15]
    # logged during the step that made global_step = s - 1 → s: value 0.5 + (s - 1)
    assert ts["train/lr"] == [0.5 + s - 1 for s in ts["step"]]
    assert ts["train/grad_norm"] == [float((s - 1) % 10) for s in ts["step"]]
    assert rec.env["num_threads"] == torch.get_num_threads()
    assert set(rec.env) >= {"hostname", "platform", "python", "torch", "CUDA_VISIBLE_DEVICES"}
    assert len(rec.variant or "") == 10
    # the state travels in the checkpoint: a resumed run keeps the rows and appends
    path = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(path)
    again = RunRecord(method="tiny", dataset="none", lr=0.1, seed=1)
    _tiny_fit(again, max_steps=22, ckpt=str(path))
    assert again.train_scalars["step"] == [3, 6, 9, 12, 15, 18, 21]
    assert again.train_scalars["train/lr"][:5] == ts["train/lr"]
    back = RunRecord.from_dict(json.loads(json.dumps(again.to_dict())))
    assert back.train_scalars == again.train_scalars and back.env == again.env


def _fake(root: Path, method: str, seed: int, accs: list[float]) -> None:
    """A completed record whose evaluations (every 10 steps, 1 s apart) reach ``accs``."""
    rec = RunRecord(method=method, dataset="toy", lr=0.1, seed=seed, config_groups={})
    rec.config = {"seed": seed, "optimizer": {"name": method, "lr": 0.1}}
    rec.evals = [
        {
            "step": 10 * (i + 1),
            "epoch": 0,
            "time/train_s": float(i + 1),
            "time/train_cpu_s": float((i + 1) ** 2),  # CPU ratios differ from wall ratios
            "val/acc": a,
        }
        for i, a in enumerate(accs)
    ]
    rec.targets = time_to_target(rec.evals, parse_targets({"val/acc": [0.5, 0.9]}))
    rec.add_epoch({"epoch": 0, "step": 10 * len(accs), "test/acc": accs[-1]})
    rec.finalize("completed", stopped_at_step=10 * len(accs))
    (root / f"{method}{seed}").mkdir(parents=True)
    rec.write(root / f"{method}{seed}")


def test_time_to_target_rows_medians_and_paired_ratios(tmp_path: Path) -> None:
    _fake(tmp_path, "heavyball", 1, [0.3, 0.6, 0.95])  # 0.5 at 2 s, 0.9 at 3 s
    _fake(tmp_path, "heavyball", 2, [0.6, 0.7, 0.8])  # 0.5 at 1 s, 0.9 never
    _fake(tmp_path, "gose", 1, [0.6, 0.92, 0.95])  # 1 s, 2 s
    _fake(tmp_path, "gose", 2, [0.4, 0.45, 0.55])  # 3 s, never
    summary = summarise(load_runs(tmp_path))
    rows = {(t.group.name, t.threshold): t for t in time_to_targets(summary, "toy")}
    hb5, hb9, g5, g9 = (
        rows[k] for k in [("heavyball", 0.5), ("heavyball", 0.9), ("gose", 0.5), ("gose", 0.9)]
    )
    assert (hb5.reached, hb5.n, hb5.median, hb5.lo, hb5.hi) == (2, 2, 1.5, 1.0, 2.0)
    assert (hb9.reached, hb9.median, hb9.lo) == (1, float("inf"), 3.0)  # half missed: inf
    assert g5.base == "heavyball" and g5.ratios == (1.0 / 2.0, 3.0 / 1.0)  # seeds 1, 2
    assert g9.ratios == (2.0 / 3.0,)  # only seed 1 reached it in both
    assert g5.cpu_ratios == (1.0 / 4.0, 9.0 / 1.0) and g9.cpu_ratios == (4.0 / 9.0,)
    assert (hb5.steps_median, hb5.cpu_median) == (15.0, 2.5)  # steps 20, 10; CPU 4, 1
    assert g9.steps_median == float("inf")  # seed 2 never reached it: half missed
    assert hb5.base is None and hb5.ratios == () and hb5.cpu_ratios == ()


@pytest.mark.slow
def test_report_time_to_target_table(tmp_path: Path) -> None:
    for seed in (1, 2):
        _run(tmp_path / f"hb{seed}", TARGETS, f"seed={seed}", "trainer.max_epochs=1")
        _run(
            tmp_path / f"agd{seed}",
            TARGETS,
            f"seed={seed}",
            "trainer.max_epochs=1",
            "optimizer=agd",
        )
    summary = summarise(load_runs(tmp_path))
    rows = time_to_targets(summary, "synthetic")
    assert len(rows) == 2 * 3  # two groups × three targets
    agd = [t for t in rows if t.group.name == "agd"]
    for t in agd:
        assert t.base == "heavyball" and t.n == 2
        runs = {r.seed: r for r in t.group.runs}
        base = {r.seed: r for r in summary.counterpart(t.group, "heavyball").runs}
        expected = []
        for seed in (1, 2):
            mine = _first(runs[seed].evals, t.metric, t.threshold)
            theirs = _first(base[seed].evals, t.metric, t.threshold)
            if mine and theirs:
                expected.append(mine["time/train_s"] / theirs["time/train_s"])
        assert list(t.ratios) == pytest.approx(expected)
    from accelopt.report import write_report

    write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "### Time to target" in text and "val/acc ≥ 0.9" in text
    assert any(p.name.startswith("val_acc_time_") for p in tmp_path.glob("*.png"))
