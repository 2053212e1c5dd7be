"""The report's paired comparison (method vs its base, seed by seed) and accuracy-vs-lr figure.

Expected numbers are computed by hand from the final accuracies written into the synthetic
records below (see the comments), independently of :mod:`accelopt.report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from accelopt import report

from .test_report import assert_png, make_sweep, run_cli, section, table_rows, write_record

PAIRED = "#### Paired comparison with the base method"


def run(root: Path, job: str, method: str, seed: int, acc: float | None = None, **kw: Any) -> None:
    """One run record; ``acc`` overrides its final test accuracy."""
    rec = write_record(root / job, method=method, seed=seed, nc=False, **kw)
    if acc is not None:
        rec["final"]["test/acc"] = acc
        (root / job / "metrics.json").write_text(json.dumps(rec))


def paired_sweep(root: Path) -> Path:
    """Final accuracies at lr 0.02, one method per verdict branch (seeds 1, 2, 3 unless said)."""
    accs = {
        "heavyball": [0.90, 0.91, 0.92],  # + seed 5 diverged
        "gose": [0.95, 0.97, 0.96],  # + seed 4 (no heavyball run), seed 5 (heavyball diverged)
        "gose_original": [0.905, 0.915, 0.93],  # same sign, mean below the seed spread
        "agd": [0.95, 0.96, 0.97],
        "ancm": [0.90, 0.92, 0.91],  # all lower
        "combined": [0.96, 0.95, 0.99],  # range includes 0
    }
    for method, values in accs.items():
        for seed, acc in enumerate(values, start=1):
            run(root, f"{method}{seed}", method, seed, acc)
    run(root, "heavyball5", "heavyball", 5, status="diverged")
    run(root, "gose4", "gose", 4, 0.96)
    run(root, "gose5", "gose", 5, 0.99)
    run(root, "ancm_original1", "ancm_original", 1, 0.97)  # a single pair
    run(root, "combined_original4", "combined_original", 4, 0.90)  # no agd seed 4: no pair at all
    return root


# the table rows, by hand: differences method − base per seed 1, 2, 3
EXPECTED_ROWS = {
    # +0.05, +0.06, +0.04: mean 0.05, std 0.01; spread max(std heavyball 0.01, std gose over
    # 0.95, 0.97, 0.96, 0.96, 0.99 = 0.0152) < 0.05 → higher; seeds 4 and 5 not paired
    "gose": ["heavyball", "3", "0.0500 ± 0.0100", "[0.0400, 0.0600]", "3/3", "higher"],
    # +0.005, +0.005, +0.01: mean 0.0067 ≤ spread max(0.01, std 0.905/0.915/0.93 = 0.0126)
    "gose_original": [
        "heavyball",
        "3",
        "0.0067 ± 0.0029",
        "[0.0050, 0.0100]",
        "3/3",
        "within noise",
    ],
    # -0.05, -0.04, -0.06
    "ancm": ["agd", "3", "-0.0500 ± 0.0100", "[-0.0600, -0.0400]", "0/3", "lower"],
    # +0.01, -0.01, +0.02: the range includes 0
    "combined": ["agd", "3", "0.0067 ± 0.0153", "[-0.0100, 0.0200]", "2/3", "within noise"],
    # 0.97 - 0.95: one pair, no std
    "ancm_original": ["agd", "1", "0.0200", "[0.0200, 0.0200]", "1/1", "within noise"],
    "combined_original": ["agd", "0", "—", "—", "0/0", "no pairs"],
}


def test_paired_numbers_and_verdicts(tmp_path: Path) -> None:
    root = paired_sweep(tmp_path / "sweep")
    summary = report.summarise(report.load_runs(root))
    pairs = {p.method: p for p in report.paired(summary)}
    assert set(pairs) == set(EXPECTED_ROWS)
    gose = pairs["gose"]
    assert (gose.base, gose.dataset, gose.lr) == ("heavyball", "mnist", 0.02)
    assert gose.seeds == (1, 2, 3) and gose.unpaired == (4, 5) and gose.n == 3
    assert gose.diff.mean == pytest.approx(0.05) and gose.diff.std == pytest.approx(0.01)
    assert (gose.diff.min, gose.diff.max) == (pytest.approx(0.04), pytest.approx(0.06))
    assert gose.spread == pytest.approx(float(np.std([0.95, 0.97, 0.96, 0.96, 0.99], ddof=1)))
    assert (gose.better, gose.verdict) == (3, "higher")
    assert pairs["gose_original"].spread == pytest.approx(
        float(np.std([0.905, 0.915, 0.93], ddof=1))
    )
    assert {m: p.verdict for m, p in pairs.items()} == {m: r[-1] for m, r in EXPECTED_ROWS.items()}
    assert pairs["combined_original"].diff is None and pairs["combined_original"].unpaired == (
        1,
        2,
        3,
        4,
    )
    # the same from the groups alone, and with other bases
    assert [p.method for p in report.paired(summary.groups)] == [p.method for p in pairs.values()]
    assert [p.base for p in report.paired(summary, {"gose": "agd"})] == ["agd"]

    assert report.main([str(root)]) == 0
    md = (root / "report.md").read_text()
    lr_sec = section(md, "### mnist, lr 0.02")
    assert lr_sec.index("#### Final test accuracy") < lr_sec.index(PAIRED)
    table = section(lr_sec, PAIRED)
    assert "within noise* if n < 2, or [min, max] includes 0, or |mean| ≤ the larger" in table
    rows = table_rows(table)
    assert rows.pop("method") == [
        "base",
        "n pairs",
        "difference mean ± std",
        "[min, max]",
        "better in",
        "verdict",
    ]
    assert rows == EXPECTED_ROWS
    assert "gose vs heavyball: 4, 5" in table


def test_pair_override_and_malformed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = paired_sweep(tmp_path / "sweep")
    assert report.main([str(root), "--pair", "gose=agd", "--pair", "sgd=heavyball"]) == 0
    rows = table_rows(section((root / "report.md").read_text(), PAIRED))
    # gose − agd: 0.00, +0.01, -0.01
    assert rows["gose"] == [
        "agd",
        "3",
        "0.0000 ± 0.0100",
        "[-0.0100, 0.0100]",
        "1/3",
        "within noise",
    ]
    assert rows["ancm"] == EXPECTED_ROWS["ancm"]  # the other defaults stay
    assert "sgd" not in rows  # no sgd runs: not shown
    (root / "report.md").unlink()
    for bad in ("gose", "=agd", "gose=", "gose=gose", "a=b=c"):
        with pytest.raises(SystemExit) as exc:
            report.main([str(root), "--pair", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--pair" in err and repr(bad) in err and "METHOD=BASE" in err
    assert not (root / "report.md").exists()
    proc = run_cli(str(root), "--pair", "gose:agd")
    assert proc.returncode == 2 and "'gose:agd'" in proc.stderr and "METHOD=BASE" in proc.stderr


def test_acc_vs_lr_figure(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    accs = {(0.02, 1): 0.90, (0.02, 2): 0.94, (0.1, 1): 0.80, (0.1, 2): 0.86}
    for (lr, seed), acc in accs.items():
        run(root, f"hb{lr}-{seed}", "heavyball", seed, acc, lr=lr)
        run(root, f"gose{lr}-{seed}", "gose", seed, acc + 0.01, lr=lr)
    for seed in (1, 2):  # every gose run at lr 0.5 diverged
        run(root, f"gose0.5-{seed}", "gose", seed, lr=0.5, status="diverged")
    run(root, "hb0.5", "heavyball", 1, 0.5, lr=0.5)
    figs = report.make_figures(report.summarise(report.load_runs(root)))
    name = report.dataset_figure_names("mnist")["test_acc_vs_lr"]
    assert name == "test_acc_vs_lr_mnist.png" and name in figs
    (ax,) = figs[name].axes
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["heavyball", "gose", "gose: did not complete"]
    (cross,) = [line for line in ax.get_lines() if line.get_label() == "gose: did not complete"]
    assert cross.get_marker() == "x" and cross.get_xdata()[0] == pytest.approx(0.5, rel=0.05)
    (hb,) = [c for c in ax.containers if c.get_label() == "heavyball"]
    x, y = hb.lines[0].get_data()
    assert list(y) == pytest.approx([0.92, 0.83, 0.5])  # means at lr 0.02, 0.1, 0.5
    assert list(x) == pytest.approx([0.02, 0.1, 0.5], rel=0.05)

    written = {p.name for p in report.write_report(root)}
    assert name in written
    assert_png(root / name)
    md = (root / "report.md").read_text()
    assert f"]({name})" in section(md, "### Learning-rate robustness")


def test_no_acc_vs_lr_figure_with_one_lr(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep")  # lr 0.02 completed, lr 0.2 only diverged
    figs = report.make_figures(report.summarise(report.load_runs(root)))
    assert not [name for name in figs if name.startswith("test_acc_vs_lr_")]
    report.write_report(root)
    assert not list(root.glob("test_acc_vs_lr_*"))
    assert "](test_acc_vs_lr_" not in (root / "report.md").read_text()
