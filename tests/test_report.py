"""Tests of the sweep report (``python -m accelopt.report``) on synthetic run records.

The run records are written by :func:`write_record` following docs/architecture.md's
``metrics.json`` schema; expected numbers are recomputed here from those records with the
standard library, independently of :mod:`accelopt.report`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from accelopt import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "sweep_report.ipynb"


# ----------------------------------------------------------------------------- synthetic runs


def write_record(
    job_dir: Path,
    *,
    method: str,
    seed: int,
    dataset: str = "mnist",
    lr: float = 0.02,
    status: str = "completed",
    epochs: int = 3,
    steps_per_epoch: int = 5,
    nc: bool = True,
    hydra: bool = True,
    schema: int = 1,
    curvature: bool = False,
    heldout: bool = False,
) -> dict[str, Any]:
    """Write one ``metrics.json`` (and a ``.hydra`` folder, as Hydra does) into ``job_dir``.

    ``schema=2`` adds the version-2 fields; ``curvature`` a curvature-monitor list (every 5
    steps), ``heldout`` the optional held-out NC numbers.
    """
    rnd = random.Random(f"{method}-{seed}-{dataset}-{lr}")
    job_dir.mkdir(parents=True, exist_ok=True)
    if hydra:
        (job_dir / ".hydra").mkdir(exist_ok=True)
        (job_dir / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
    n_epochs = epochs if status == "completed" else 1
    n_steps = n_epochs * steps_per_epoch if status == "completed" else 3
    losses: list[float | None] = [
        round(2.3 * (0.9**s) + rnd.uniform(0, 0.05), 6) for s in range(n_steps)
    ]
    if status == "diverged":
        losses[-1] = None
    ep_list = []
    checks = 0
    for e in range(n_epochs if status == "completed" else 0):
        checks += steps_per_epoch
        ep_list.append(
            {
                "epoch": e,
                "step": (e + 1) * steps_per_epoch,
                "train/loss": losses[(e + 1) * steps_per_epoch - 1],
                "val/loss": round(0.5 / (e + 1) + rnd.uniform(0, 0.01), 6),
                "val/acc": round(0.9 + 0.02 * e + rnd.uniform(0, 0.005), 6),
                "test/acc": round(0.9 + 0.03 * e + rnd.uniform(0, 0.01), 6),
                "time/epoch_s": round(
                    1.0 + rnd.uniform(0, 0.5) + (0.8 if "gose" in method else 0), 4
                ),
                "nc/checks": checks,
                "nc/searches": 0,
            }
        )
    nc_block = None
    if nc:
        searches = rnd.randint(0, 3) if "gose" in method else 0
        nc_block = {
            "checks": checks if "gose" in method else 0,
            "searches": searches,
            "steps": searches,
            "rejected": 0,
            "hvps": 48 * searches,
            "lambda_min": round(-rnd.uniform(0.1, 0.5), 6) if searches else None,
            "time_s": round(rnd.uniform(0, 0.3), 4),
        }
    final: dict[str, Any] = {}
    if ep_list:
        final = {
            "test/acc": ep_list[-1]["test/acc"],
            "val/acc": ep_list[-1]["val/acc"],
            "val/loss": ep_list[-1]["val/loss"],
            "time/epoch_s": sum(e["time/epoch_s"] for e in ep_list) / len(ep_list),
        }
    record = {
        "schema": 1,
        "status": status,
        "error": None if status == "completed" else f"{status}: loss is nan at step {n_steps - 1}",
        "stopped_at_step": n_steps - 1 if status != "completed" else n_steps,
        "method": method,
        "dataset": dataset,
        "lr": lr,
        "seed": seed,
        "config_groups": {"optimizer": method, "dataset": dataset, "model": "cnn"},
        "overrides": [f"optimizer={method}", f"seed={seed}", f"optimizer.lr={lr}"],
        "config": {"seed": seed},
        "output_dir": str(job_dir.resolve()),
        "epochs": ep_list,
        "train_loss": {"step": list(range(n_steps)), "value": losses},
        "final": final,
        "nc": nc_block,
        "duration_s": 12.5,
    }
    if heldout and nc_block is not None:
        nc_block["heldout_curvature"] = round(-rnd.uniform(0.01, 0.1), 6)
        nc_block["heldout_loss_change"] = round(-rnd.uniform(0.0, 0.01), 6)
    if schema == 2:
        record.update(schema=2, traceback=None, world_size=1, resumed_from=None)
        record.update(param_digests=[], nc_steps=[], curvature=[])
    if curvature:
        record["schema"] = 2
        record["curvature"] = [
            {
                "step": s,
                "lambda_min": round(-rnd.uniform(0.1, 1.0), 6),
                "lambda_max": round(10 + rnd.uniform(0, 5), 6),
                "grad_norm": 0.5,
            }
            for s in range(0, n_steps, 5)
        ]
    (job_dir / "metrics.json").write_text(json.dumps(record, indent=1))
    return record


def make_sweep(root: Path) -> Path:
    """2 methods × 2 seeds at lr 0.02, plus one job at lr 0.2 that diverged."""
    job = 0
    for method in ("heavyball", "gose_original"):
        for seed in (1, 2):
            write_record(root / str(job), method=method, seed=seed)
            job += 1
    write_record(root / str(job), method="gose_original", seed=1, lr=0.2, status="diverged")
    return root


def records(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("metrics.json"))]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accelopt.report", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))


def section(md: str, heading: str) -> str:
    """The text of ``md`` from the line ``heading`` to the next heading of the same or a
    higher level (fewer or equal ``#``)."""
    lines = md.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))

    def is_end(line: str) -> bool:
        return line.startswith("#") and len(line) - len(line.lstrip("#")) <= level

    end = next((i for i in range(start + 1, len(lines)) if is_end(lines[i])), len(lines))
    return "\n".join(lines[start:end])


def table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the markdown table in ``text``, keyed by their first cell."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


# ----------------------------------------------------------------------------- expected numbers


def mean_std(values: list[float], decimals: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{decimals}f}"
    return f"{statistics.mean(values):.{decimals}f} ± {statistics.stdev(values):.{decimals}f}"


def expected_tables(recs: list[dict[str, Any]], dataset: str, lr: float) -> dict[str, Any]:
    group: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        if r["dataset"] == dataset and r["lr"] == lr:
            group.setdefault(r["method"], []).append(r)
    acc, sec, nc = {}, {}, {}
    base = [
        r["final"]["time/epoch_s"] for r in group.get("heavyball", []) if r["status"] == "completed"
    ]
    for method, rs in group.items():
        done = [r for r in rs if r["status"] == "completed"]
        n = f"{len(done)}/{len(rs)}"
        a = [r["final"]["test/acc"] for r in done]
        acc[method] = [n, mean_std(a, 4), f"[{min(a):.4f}, {max(a):.4f}]"]
        t = [r["final"]["time/epoch_s"] for r in done]
        ratio = f"{statistics.mean(t) / statistics.mean(base):.2f}" if base else "—"
        sec[method] = [n, mean_std(t, 2), ratio]
        counts = [
            f"{statistics.mean(r['nc'][k] for r in done):.1f}"
            for k in ("checks", "searches", "steps", "rejected", "hvps")
        ]
        lams = [r["nc"]["lambda_min"] for r in done if r["nc"]["lambda_min"] is not None]
        lam = f"[{min(lams):.4f}, {max(lams):.4f}]" if lams else "—"
        fired = f"{sum(r['nc']['steps'] > 0 for r in done)}/{len(done)}"
        t_nc = f"{statistics.mean(r['nc']['time_s'] for r in done):.2f}"
        # share of each run's training time in NC work: nc time_s / Σ epochs' time/epoch_s
        shares = [r["nc"]["time_s"] / sum(e["time/epoch_s"] for e in r["epochs"]) for r in done]
        share = statistics.mean(shares)
        nc[method] = [
            n,
            fired,
            *counts,
            lam,
            t_nc,
            f"{100 * share:.1f} % (→ {1 / (1 - share):.2f}×)",
        ]
    return {"acc": acc, "sec": sec, "nc": nc}


# ----------------------------------------------------------------------------- tests


EXPECTED_FIGURES = [
    "train_loss_mnist_lr0.02.png",
    "test_acc_mnist_lr0.02.png",
    "test_acc_zoom_mnist_lr0.02.png",
]


def check_report(root: Path) -> str:
    for name in EXPECTED_FIGURES:
        assert_png(root / name)
    # lr 0.2 has only a diverged run: no curves, no figures
    assert not list(root.glob("*lr0.2.png"))
    md = (root / "report.md").read_text()
    recs = records(root)
    exp = expected_tables(recs, "mnist", 0.02)
    lr_sec = section(md, "### mnist, lr 0.02")
    for name in EXPECTED_FIGURES:
        assert f"]({name})" in lr_sec
    got_acc = table_rows(section(lr_sec, "#### Final test accuracy"))
    got_sec = table_rows(section(lr_sec, "#### Seconds per epoch (training only)"))
    got_nc = table_rows(section(lr_sec, "#### NC counters (mean per completed run)"))
    for method in ("heavyball", "gose_original"):
        assert got_acc[method] == exp["acc"][method]
        assert got_sec[method] == exp["sec"][method]
        assert got_nc[method] == exp["nc"][method]
    assert got_sec["heavyball"][2] == "1.00"
    # learning-rate robustness: the diverged cell is marked, the good ones carry the accuracy
    rob = table_rows(section(md, "### Learning-rate robustness"))
    assert rob["method"] == ["lr 0.2", "lr 0.02"]
    assert rob["gose_original"] == ["diverged (1/1)", exp["acc"]["gose_original"][1]]
    assert rob["heavyball"] == ["—", exp["acc"]["heavyball"][1]]
    # the diverged job is listed, with where it stopped
    jobs = table_rows(section(md, "## Jobs not completed"))
    assert jobs["4"][:5] == ["mnist", "gose_original", "0.2", "1", "diverged"]
    assert jobs["4"][5] == "2"
    assert "1 diverged" in md and "4 completed" in md
    return md


def test_main_writes_figures_and_report_with_recomputable_numbers(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep")
    assert report.main([str(root)]) == 0
    check_report(root)


def test_cli_subprocess(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep")
    proc = run_cli(str(root))
    assert proc.returncode == 0, proc.stderr
    assert "report.md" in proc.stdout
    check_report(root)
    # the module does not pull in the training stack
    code = "import sys, accelopt.report; print(any(m in sys.modules for m in ('torch', 'lightning', 'hydra')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_documents_corrupt_policy() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "--skip-bad" in proc.stdout and "nothing written" in proc.stdout


@pytest.fixture
def old_report(tmp_path: Path) -> tuple[Path, bytes]:
    root = tmp_path / "sweep"
    root.mkdir()
    content = b"# an older report\n"
    (root / "report.md").write_bytes(content)
    return root, content


def test_empty_folder_refused(old_report: tuple[Path, bytes]) -> None:
    root, content = old_report
    (root / "0" / ".hydra").mkdir(parents=True)  # a job that has not written its record yet
    proc = run_cli(str(root))
    assert proc.returncode != 0
    assert "no metrics.json" in proc.stderr and "still running" in proc.stderr
    assert (root / "report.md").read_bytes() == content
    assert not list(root.glob("*.png"))


def test_only_running_records_are_named_as_running(old_report: tuple[Path, bytes]) -> None:
    """A sweep whose jobs have written provisional records only: not 'no metrics.json'."""
    root, content = old_report
    for job in ("0", "1"):
        rec = write_record(root / job, method="heavyball", seed=int(job) + 1)
        rec["status"] = "running"
        (root / job / "metrics.json").write_text(json.dumps(rec))
    (root / "2" / ".hydra").mkdir(parents=True)
    proc = run_cli(str(root))
    assert proc.returncode != 0
    assert "no finished run" in proc.stderr and "no metrics.json" not in proc.stderr
    assert "2 job(s) still running, 1 job folder(s) without a record yet" in proc.stderr
    assert (root / "report.md").read_bytes() == content


@pytest.mark.parametrize(
    "corruption",
    [
        "{not json",
        "",
        json.dumps([1, 2]),
        json.dumps({"schema": 1, "status": "completed", "dataset": "mnist", "method": "x"}),
        json.dumps(
            {
                "schema": 1,
                "status": "exploded",
                "dataset": "mnist",
                "method": "x",
                "lr": 0.1,
                "seed": 1,
            }
        ),
    ],
    ids=["truncated", "empty", "list", "missing-fields", "bad-status"],
)
def test_corrupt_record_refused(old_report: tuple[Path, bytes], corruption: str) -> None:
    root, content = old_report
    make_sweep(root)
    (root / "2" / "metrics.json").write_text(corruption)
    proc = run_cli(str(root))
    assert proc.returncode == 1
    assert "2/metrics.json" in proc.stderr and "--skip-bad" in proc.stderr
    assert (root / "report.md").read_bytes() == content
    assert not list(root.glob("*.png"))


def test_only_record_corrupt_refused_even_with_skip_bad(old_report: tuple[Path, bytes]) -> None:
    root, content = old_report
    (root / "0").mkdir()
    (root / "0" / "metrics.json").write_text('{"schema": 1, "status": "compl')
    assert report.main([str(root), "--skip-bad"]) == 1
    assert (root / "report.md").read_bytes() == content


def test_nonexistent_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert report.main([str(missing)]) == 1
    err = capsys.readouterr().err
    assert "no such file or directory" in err and str(missing) in err
    assert not missing.exists()
    proc = run_cli(str(missing))
    assert proc.returncode == 1 and "no such file or directory" in proc.stderr


def test_partial_sweep_skip_bad_reports_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Running jobs, a failed job, a corrupt record and two nested datasets: all are shown."""
    root = tmp_path / "sweep"
    make_sweep(root / "mnist")
    write_record(root / "cifar10" / "0", method="heavyball", seed=1, dataset="cifar10", lr=0.03)
    write_record(root / "cifar10" / "1", method="ancm_original", seed=1, dataset="cifar10", lr=0.03)
    write_record(
        root / "cifar10" / "2",
        method="ancm_original",
        seed=2,
        dataset="cifar10",
        lr=0.03,
        status="failed",
    )
    (root / "cifar10" / "3" / ".hydra").mkdir(parents=True)  # still running
    rec = write_record(
        root / "cifar10" / "5", method="heavyball", seed=2, dataset="cifar10", lr=0.03
    )
    rec["status"] = "running"  # a provisional record: listed as incomplete, not counted
    (root / "cifar10" / "5" / "metrics.json").write_text(json.dumps(rec))
    (root / "cifar10" / "4").mkdir()
    (root / "cifar10" / "4" / "metrics.json").write_text("{")
    assert report.main([str(root)]) == 1  # strict by default
    assert not (root / "report.md").exists()
    assert report.main([str(root), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "cifar10/4/metrics.json" in err and "not finished" in err
    md = (root / "report.md").read_text()
    jobs = table_rows(section(md, "## Jobs not completed"))
    assert jobs["mnist/4"][4] == "diverged"
    assert jobs["cifar10/2"][4] == "failed"
    assert jobs["cifar10/3"][4] == "incomplete (not finished)"
    assert jobs["cifar10/4/metrics.json"][4] == "unreadable metrics.json"
    assert jobs["cifar10/5"][4] == "incomplete (not finished)"
    rob = table_rows(section(section(md, "## cifar10"), "### Learning-rate robustness"))
    assert rob["ancm_original"][0].endswith("· failed (1/2)")
    for name in ("train_loss", "test_acc", "test_acc_zoom"):
        assert_png(root / f"{name}_cifar10_lr0.03.png")
        assert_png(root / f"{name}_mnist_lr0.02.png")


def test_missing_baseline_says_so(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_record(root / "0", method="agd", seed=1, nc=False)
    write_record(root / "1", method="agd", seed=2, nc=False)
    written = report.write_report(root)
    assert written[0] == root / "report.md"
    md = written[0].read_text()
    assert "no `heavyball` run, so no ratios" in md
    lr_sec = section(md, "### mnist, lr 0.02")
    sec = table_rows(section(lr_sec, "#### Seconds per epoch (training only)"))
    assert sec["agd"][2] == "—"
    nc = table_rows(section(lr_sec, "#### NC counters (mean per completed run)"))
    assert nc["agd"][1:] == ["—"] * 9


def test_python_api(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep")
    sweep = report.load_runs(root)
    assert len(sweep.runs) == 5 and not sweep.unreadable and not sweep.incomplete
    summary = report.summarise(sweep)
    g = summary.groups[("mnist", "gose_original", 0.02)]
    assert [r.seed for r in g.completed] == [1, 2]
    assert g.loss is not None and g.loss.n == 2 and len(g.loss.x) == 15
    assert g.acc is not None and list(g.acc.x) == [1, 2, 3]
    assert summary.groups[("mnist", "gose_original", 0.2)].count("diverged") == 1
    figs = report.make_figures(summary)
    assert sorted(figs) == sorted(EXPECTED_FIGURES)
    assert "# Sweep report" in report.render_markdown(summary, figs)


def test_notebook_executes(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    jupyter_client = pytest.importorskip("jupyter_client.kernelspec")
    pytest.importorskip("ipykernel")
    if "python3" not in jupyter_client.find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix"], check=True)
    root = make_sweep(tmp_path / "sweep")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    env_before = os.environ.get("ACCELOPT_SWEEP_DIR")
    os.environ["ACCELOPT_SWEEP_DIR"] = str(root)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
    finally:
        if env_before is None:
            del os.environ["ACCELOPT_SWEEP_DIR"]
        else:
            os.environ["ACCELOPT_SWEEP_DIR"] = env_before
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3
    assert not (root / "report.md").exists()  # the notebook only displays


# ----------------------------------------------------------------------------- schema 2 additions


def test_interrupted_runs_listed_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for seed in (1, 2):
        write_record(root / str(seed), method="heavyball", seed=seed, schema=2)
    write_record(root / "3", method="heavyball", seed=3, status="interrupted", schema=2)
    write_record(root / "4", method="heavyball", seed=1, lr=0.2, status="interrupted", schema=2)
    assert report.main([str(root)]) == 0
    md = (root / "report.md").read_text()
    assert "(2 completed, 0 diverged, 0 failed, 2 interrupted)" in md
    rob = table_rows(section(md, "### Learning-rate robustness"))
    recs = [r for r in records(root) if r["status"] == "completed"]
    acc = mean_std([r["final"]["test/acc"] for r in recs], 4)
    assert rob["heavyball"] == ["interrupted (1/1)", f"{acc} · interrupted (1/3)"]
    jobs = table_rows(section(md, "## Jobs not completed"))
    assert jobs["3"][4] == "interrupted" and jobs["4"][4] == "interrupted"
    assert table_rows(section(md, "#### Final test accuracy"))["heavyball"][0] == "2/3"


def test_heldout_nc_columns_only_when_present(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for seed in (1, 2):
        write_record(root / f"a{seed}", method="gose", seed=seed, heldout=True)
        write_record(root / f"b{seed}", method="gose", seed=seed, lr=0.1)
    write_record(root / "c", method="heavyball", seed=1, heldout=False)
    report.write_report(root)
    md = (root / "report.md").read_text()
    with_h = section(section(md, "### mnist, lr 0.02"), "#### NC counters (mean per completed run)")
    rows = table_rows(with_h)
    assert rows["method"][-2:] == ["held-out curvature (mean)", "held-out loss change (mean)"]
    recs = [r for r in records(root) if r["lr"] == 0.02 and r["method"] == "gose"]
    for i, key in enumerate(("heldout_curvature", "heldout_loss_change")):
        expected = f"{statistics.mean(r['nc'][key] for r in recs):.4f}"
        assert rows["gose"][len(rows["gose"]) - 2 + i] == expected
    assert rows["heavyball"][-2:] == ["—", "—"]  # no held-out numbers in its record
    without = section(section(md, "### mnist, lr 0.1"), "#### NC counters (mean per completed run)")
    assert "held-out" not in without


def test_curvature_figure_from_records(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for method in ("heavyball", "gose"):
        for seed in (1, 2):
            write_record(root / f"{method}{seed}", method=method, seed=seed, curvature=True)
    write_record(root / "x", method="gose", seed=1, lr=0.1)  # no curvature: no figure there
    summary = report.summarise(report.load_runs(root))
    g = summary.groups[("mnist", "gose", 0.02)]
    recs = [r for r in records(root) if r["method"] == "gose" and r["lr"] == 0.02]
    assert list(g.lambda_min.x) == [0, 5, 10] and g.lambda_min.n == 2
    for i, step in enumerate((0, 5, 10)):
        vals = [m["lambda_min"] for r in recs for m in r["curvature"] if m["step"] == step]
        assert g.lambda_min.mean[i] == pytest.approx(statistics.mean(vals))
        assert g.lambda_min.lo[i] == min(vals)
        vals = [m["lambda_max"] for r in recs for m in r["curvature"] if m["step"] == step]
        assert g.lambda_max.hi[i] == max(vals)
    assert summary.groups[("mnist", "gose", 0.1)].lambda_min is None
    written = report.write_report(root)
    names = {p.name for p in written}
    assert "curvature_mnist_lr0.02.png" in names and "curvature_mnist_lr0.1.png" not in names
    assert_png(root / "curvature_mnist_lr0.02.png")
    md = (root / "report.md").read_text()
    assert "](curvature_mnist_lr0.02.png)" in md


def test_record_written_by_run_record_is_reported(tmp_path: Path) -> None:
    from accelopt.run.record import RunRecord

    rec = RunRecord(method="agd", dataset="mnist", lr=0.05, seed=4)
    for step in range(10):
        rec.add_step_loss(step, 2.0 / (step + 1))
    for epoch in range(2):
        rec.add_epoch({"epoch": epoch, "step": 5 * (epoch + 1), "test/acc": 0.9 + epoch / 100})
    rec.finalize("completed", stopped_at_step=10)
    rec.write(tmp_path / "sweep" / "0")
    run = report.load_run(tmp_path / "sweep" / "0" / "metrics.json")
    assert run.status == "completed" and run.final_test_acc == 0.91 and run.loss_steps.size == 10
    assert run.record == rec
    bad = tmp_path / "sweep" / "1" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({**rec.to_dict(), "lr": 0}))
    with pytest.raises(report.ReportError, match="'lr' must be a positive number"):
        report.load_run(bad)
