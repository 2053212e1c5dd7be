"""The report's curvature-monitor table: first measurement apart, medians of run medians."""

from __future__ import annotations

import math
from pathlib import Path

from accelopt.report import load_runs, summarise
from accelopt.report.curvature import curvature_summary
from accelopt.report.markdown import render_markdown
from accelopt.run.record import RunRecord


def _record(root: Path, method: str, seed: int, lams: list[tuple[float, float]] | None) -> None:
    rec = RunRecord(method=method, dataset="toy", lr=0.1, seed=seed, config_groups={})
    rec.config = {"seed": seed, "optimizer": {"name": method, "lr": 0.1}}
    if lams is not None:
        rec.curvature = [
            {"step": 100 * i, "epoch": 0, "lambda_min": lo, "lambda_max": hi}
            for i, (lo, hi) in enumerate(lams)
        ]
    rec.add_epoch({"epoch": 0, "step": 300, "test/acc": 0.5})
    rec.finalize("completed", stopped_at_step=300)
    (root / f"{method}{seed}").mkdir(parents=True)
    rec.write(root / f"{method}{seed}")


def test_curvature_summary_by_hand(tmp_path: Path) -> None:
    _record(tmp_path, "heavyball", 1, [(-50.0, 900.0), (-2.0, 100.0), (1.0, 300.0), (-4.0, 200.0)])
    _record(tmp_path, "heavyball", 2, [(-30.0, 700.0), (-6.0, 120.0), (-8.0, 160.0)])
    _record(tmp_path, "agd", 1, None)  # no monitor: no row
    summary = summarise(load_runs(tmp_path))
    hb = summary.groups[("toy", "heavyball", 0.1)]
    c = curvature_summary(hb)
    assert c is not None and (c.runs, c.points) == (2, 5)
    assert (c.first_min, c.first_max) == (-40.0, 800.0)  # medians of (-50, -30), (900, 700)
    # run 1 later: λ_min (-2, 1, -4) → -2, λ_max (100, 300, 200) → 200; run 2: -7, 140
    assert (c.median_min, c.median_max) == (-4.5, 170.0)
    assert (c.last_min, c.last_max) == (-6.0, 180.0)  # medians of (-4, -8), (200, 160)
    assert c.negative == 4  # 1.0 is the one later λ_min ≥ 0
    assert curvature_summary(summary.groups[("toy", "agd", 0.1)]) is None
    md = render_markdown(summary, figures=None)
    rows = [line for line in md.splitlines() if line.startswith("| heavyball | 2 |")]
    assert rows == ["| heavyball | 2 | -40.00 | 800.00 | -4.50 | 170.00 | -6.00 | 180.00 | 4/5 |"]
    assert not any(line.startswith("| agd | 1 | -") for line in md.splitlines())
    assert not math.isnan(c.median_max)
