"""A real tiny multirun through `python -m accelopt.train`, then `python -m accelopt.report` on it."""

import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FAST, run_cli


@pytest.mark.slow
def test_real_multirun_then_report(tmp_path: Path):
    sweep = tmp_path / "sweep"
    ok = run_cli(
        [
            "-m",
            *FAST,
            "optimizer=sgd,agd",
            "seed=1,2",
            "optimizer.lr=0.05",
            "trainer.limit_train_batches=5",
            f"hydra.sweep.dir={sweep / 'main'}",
        ],
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    bad = run_cli(  # one job forced to diverge, in the same sweep folder
        [
            "-m",
            *FAST,
            "optimizer=agd",
            "seed=3",
            "optimizer.lr=1e6",
            "trainer.limit_train_batches=5",
            f"hydra.sweep.dir={sweep / 'diverging'}",
        ],
        cwd=tmp_path,
    )
    assert bad.returncode == 0, bad.stderr[-3000:]

    proc = subprocess.run(
        [sys.executable, "-m", "accelopt.report", str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = (sweep / "report.md").read_text()
    pngs = sorted(p.name for p in sweep.glob("*.png"))
    assert pngs == [
        "test_acc_synthetic_lr0.05.png",
        "test_acc_zoom_synthetic_lr0.05.png",
        "train_loss_synthetic_lr0.05.png",
        "val_acc_time_synthetic_lr0.05.png",
    ]
    assert all((sweep / p).stat().st_size > 5000 for p in pngs)
    assert "diverged" in report and "agd" in report and "sgd" in report

    records = [json.loads(p.read_text()) for p in sweep.rglob("metrics.json")]
    assert sorted(r["status"] for r in records) == ["completed"] * 4 + ["diverged"]
    # the final accuracies in report.md equal those recomputed from the records
    for method in ("sgd", "agd"):
        accs = [
            r["final"]["test/acc"]
            for r in records
            if r["method"] == method and r["status"] == "completed"
        ]
        mean = f"{statistics.mean(accs):.4f}"
        row = next(
            line for line in report.splitlines() if line.startswith(f"| {method} | 2/2 | {mean}")
        )
        assert re.search(rf"\[{min(accs):.4f}, {max(accs):.4f}\]", row), row
