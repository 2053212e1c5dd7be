"""The real entry point end to end on synthetic data: runs, records, logs, diverges, sweeps."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from accelopt.train import train

from .conftest import CONF_DIR, FAST, run_cli

OPTIMIZERS = sorted(f.stem for f in (CONF_DIR / "optimizer").glob("*.yaml"))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_short_run_each_optimizer(optimizer, make_cfg):
    cfg = make_cfg(f"optimizer={optimizer}", "trainer.max_epochs=2", "dataset.batch_size=64")
    record = train(cfg)
    out = Path(cfg.output_dir)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["status"] == record["status"] == "completed"
    assert on_disk["method"] == optimizer and on_disk["dataset"] == "synthetic"
    steps_per_epoch = -(-(512 - 64) // 64)  # 448 training samples, last partial batch kept
    assert on_disk["stopped_at_step"] == 2 * steps_per_epoch
    assert on_disk["train_loss"]["step"] == list(range(2 * steps_per_epoch))
    assert [e["epoch"] for e in on_disk["epochs"]] == [0, 1]
    for row in on_disk["epochs"]:
        assert {
            "train/loss",
            "val/loss",
            "val/acc",
            "test/acc",
            "time/epoch_s",
            "time/epoch_cpu_s",
        } <= row.keys()
        assert row["time/epoch_s"] > 0
    losses = on_disk["train_loss"]["value"]
    assert sum(losses[-7:]) / 7 < sum(losses[:7]) / 7, "training did not lower the loss"
    assert on_disk["final"]["test/acc"] > 0.25  # four classes: chance is 0.25
    if on_disk["nc"] is not None:  # NC optimizers: counters recorded and consistent
        nc = on_disk["nc"]
        assert nc["searches"] <= nc["checks"]
        assert nc["steps"] + nc["rejected"] <= nc["searches"]


def test_tensorboard_events_hold_the_metric_names_and_hparams(make_cfg):
    cfg = make_cfg("optimizer=agd", "trainer.log_every_n_steps=1")
    train(cfg)
    tb = Path(cfg.output_dir) / "tb"
    acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/loss_epoch_mean",
        "val/loss",
        "val/acc",
        "test/acc",
        "time/epoch_s",
    ):
        assert tag in scalars, (tag, scalars)
    # hparams plugin data are written by log_hyperparams (seen as plugin summaries)
    event_files = list(tb.glob("events.out.tfevents.*"))
    assert any(b"hparams" in f.read_bytes() and b"agd" in f.read_bytes() for f in event_files)


def test_divergence_ends_cleanly_with_status_and_step(make_cfg):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=1e6", "trainer.max_epochs=3")
    record = train(cfg)  # no exception
    on_disk = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
    assert record["status"] == on_disk["status"] == "diverged"
    assert 0 < on_disk["stopped_at_step"] < 3 * 14
    assert on_disk["train_loss"]["value"][-1] is None
    assert on_disk["train_loss"]["step"][-1] == on_disk["stopped_at_step"]
    assert "step" in on_disk["error"]


def test_multirun_through_the_cli_keeps_going_after_a_divergence(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        ["-m", *FAST, "optimizer=sgd,agd", "optimizer.lr=0.05,1e6", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    assert len(records) == 4
    by_key = {(r["method"], r["lr"]): r["status"] for r in records}
    assert by_key == {
        ("sgd", 0.05): "completed",
        ("agd", 0.05): "completed",
        ("sgd", 1e6): "diverged",
        ("agd", 1e6): "diverged",
    }
    # one folder per job, each with Hydra's saved config
    assert all(
        (p.parent / ".hydra" / "config.yaml").is_file() for p in sweep.glob("*/metrics.json")
    )
    assert "[accelopt]" in proc.stdout


def test_nc_counters_reach_tensorboard_on_the_logged_steps_only(make_cfg):
    """The cumulative NC counters are logged when the logger writes (every log_every_n_steps),
    at the same steps as train/loss, and the last one logged is not ahead of the record."""
    cfg = make_cfg("optimizer=gose", "optimizer.every=4", "trainer.log_every_n_steps=3")
    record = train(cfg)
    acc = EventAccumulator(str(Path(cfg.output_dir) / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    loss_steps = [e.step for e in acc.Scalars("train/loss")]
    check_events = acc.Scalars("nc/checks")
    assert loss_steps and [e.step for e in check_events] == loss_steps
    assert all(s % 3 == 2 for s in loss_steps), loss_steps  # not every step
    counts = [e.value for e in check_events]
    assert counts == sorted(counts) and 0 < counts[-1] <= record["nc"]["checks"]
