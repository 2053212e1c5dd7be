"""Sweep report: the study's figures and tables from a folder of runs' ``metrics.json`` files.

Usage::

    python -m accelopt.report SWEEP_DIR [--skip-bad] [--baseline heavyball] [--out DIR]

Reads **only** the ``metrics.json`` run records (docs/architecture.md) found recursively under
``SWEEP_DIR`` (Hydra multirun layout ``<sweep>/<job>/metrics.json``, possibly nested deeper, e.g.
one sweep per dataset) and writes into ``SWEEP_DIR`` (or ``--out``) ``report.md`` and, for each
(dataset, learning rate) with at least one completed run, three PNG figures:

- ``train_loss_<dataset>_lr<lr>.png``: training loss per step per method, mean over seeds, the
  band is the min–max over seeds (steps common to all completed seeds);
- ``test_acc_<dataset>_lr<lr>.png``: test accuracy per epoch per method, mean over seeds, error
  bars min–max over seeds;
- ``test_acc_zoom_<dataset>_lr<lr>.png``: the same, y-range zoomed around the final accuracies.

``report.md`` holds, per dataset: the learning-rate robustness table (methods × learning rates,
diverged/failed cells marked as ``diverged (k/n)``), and per learning rate the final test accuracy
(mean ± std, [min, max]), seconds per epoch (the report's Table 1) with the ratio to the baseline
method (``heavyball`` unless ``--baseline``; ratios skipped, and said so, when it is absent) and
the NC counters; then every job that is not completed (diverged, failed, no ``metrics.json`` yet,
unreadable) — nothing is silently dropped.

Runs are grouped by (``dataset``, ``method``, ``lr``); repeats are seeds. Statistics use the
**completed** runs of a group only; diverged and failed runs are counted and listed.

Numbers (fixed precision, so they can be recomputed from the ``metrics.json`` files): accuracies
4 decimals, seconds and ratios 2 decimals, NC counts (mean per completed run) 1 decimal, λ_min 4
decimals, NC seconds 2 decimals. ``std`` is the sample standard deviation (ddof = 1), omitted for
a single run. A run's final test accuracy is ``final["test/acc"]`` (else its last epoch's); its
seconds per epoch is ``final["time/epoch_s"]`` (else the mean of its epochs' ``time/epoch_s``).
The ratio is mean seconds per epoch of the method / that of the baseline, same dataset and lr.

Bad input, and how it is treated. A path that does not exist or is not a folder, a folder with no
readable run record, and — by default (``--strict``) — any corrupt or schema-invalid
``metrics.json`` stop the report: a message on stderr, exit code 1, nothing written. Everything is
read, validated and rendered before the first file is written, and each file is replaced
atomically. A corrupt record refuses by default because a report that quietly averages fewer
repeats than were run misstates its results, and a corrupt record usually means a bug to look at.
``--skip-bad`` reports around corrupt records instead and lists them in ``report.md`` (exit 0 if
at least one run is readable). Job folders without ``metrics.json`` yet (a ``.hydra`` folder but no
record: still running, or killed) and records with ``status: running`` never stop the report;
they are listed as incomplete.

Exit codes: 0 report written, 1 sweep cannot be reported, 2 bad command line (argparse).

Python API: :func:`load_runs`, :func:`load_run`, :func:`summarise`, :func:`make_figures`,
:func:`render_markdown`, :func:`write_report`, :func:`main`. Imports numpy and matplotlib only.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

matplotlib.use("Agg")  # figures are built with the object API (no pyplot); Agg renders them

__all__ = [
    "ReportError",
    "Run",
    "Sweep",
    "Stats",
    "Curve",
    "Group",
    "Summary",
    "load_run",
    "load_runs",
    "summarise",
    "make_figures",
    "render_markdown",
    "write_report",
    "main",
]

SCHEMA_VERSION = 1
STATUSES = ("completed", "diverged", "failed")
NC_KEYS = ("checks", "searches", "steps", "rejected", "hvps", "lambda_min", "time_s")
NC_COUNT_KEYS = ("checks", "searches", "steps", "rejected", "hvps")
DEFAULT_BASELINE = "heavyball"
REPORT_NAME = "report.md"

ACC_DECIMALS = 4
SECONDS_DECIMALS = 2
RATIO_DECIMALS = 2
COUNT_DECIMALS = 1
LAMBDA_DECIMALS = 4
DASH = "—"


class ReportError(Exception):
    """A sweep (or one run record) that cannot be reported; the message is for the user."""


# --------------------------------------------------------------------------- loading


@dataclass(eq=False)
class Run:
    """One validated run record (a ``metrics.json``)."""

    path: Path
    job: str  # the run's folder relative to the sweep root ("." for the root itself)
    status: str
    dataset: str
    method: str
    lr: float
    seed: int
    error: str | None
    stopped_at_step: int | None
    epochs: list[dict[str, Any]]
    loss_steps: np.ndarray  # int64
    loss_values: np.ndarray  # float64, NaN where the record has null
    final: dict[str, Any]
    nc: dict[str, float | None] | None
    duration_s: float | None

    @property
    def key(self) -> tuple[str, str, float]:
        """The group key (dataset, method, lr)."""
        return (self.dataset, self.method, self.lr)

    @property
    def final_test_acc(self) -> float | None:
        """``final["test/acc"]``, else the last epoch's ``test/acc``."""
        value = self.final.get("test/acc")
        if value is None:
            accs = [e.get("test/acc") for e in self.epochs if e.get("test/acc") is not None]
            value = accs[-1] if accs else None
        return value

    @property
    def epoch_seconds(self) -> float | None:
        """``final["time/epoch_s"]``, else the mean of the epochs' ``time/epoch_s``."""
        value = self.final.get("time/epoch_s")
        if value is None:
            times = [e["time/epoch_s"] for e in self.epochs if e.get("time/epoch_s") is not None]
            value = float(np.mean(times)) if times else None
        return value


@dataclass(eq=False)
class Sweep:
    """Everything found under a sweep folder."""

    root: Path
    runs: list[Run]
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    incomplete: list[str] = field(default_factory=list)  # job folders without metrics.json


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _num_or_none(x: Any, what: str) -> float | None:
    if x is None:
        return None
    if not _is_number(x):
        raise ReportError(f"{what} must be a number or null, got {x!r}")
    x = float(x)
    return x if math.isfinite(x) else None


def _require(record: dict[str, Any], key: str, kind: str) -> Any:
    if key not in record:
        raise ReportError(f"missing field {key!r}")
    value = record[key]
    ok = {
        "str": isinstance(value, str) and value != "",
        "int": isinstance(value, int) and not isinstance(value, bool),
        "positive number": _is_number(value) and math.isfinite(value) and value > 0,
    }[kind]
    if not ok:
        raise ReportError(f"field {key!r} must be a {kind}, got {value!r}")
    return value


def _metric_dict(d: Any, what: str) -> dict[str, Any]:
    """A dict of metric name → number/null (non-numeric extras such as strings are kept)."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ReportError(f"{what} must be an object, got {type(d).__name__}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        out[k] = _num_or_none(v, f"{what}[{k!r}]") if (v is None or _is_number(v)) else v
    return out


def _relative(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    return rel.as_posix() or "."


def load_run(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Run:
    """Read and validate one ``metrics.json``; raise :class:`ReportError` saying what is wrong."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read: {exc}") from exc
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise ReportError("not a JSON object")
    schema = record.get("schema")
    if schema != SCHEMA_VERSION:
        raise ReportError(f"unsupported schema {schema!r} (expected {SCHEMA_VERSION})")
    status = record.get("status")
    if status not in (*STATUSES, "running"):
        raise ReportError(f"field 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    dataset = _require(record, "dataset", "str")
    method = _require(record, "method", "str")
    lr = float(_require(record, "lr", "positive number"))
    seed = _require(record, "seed", "int")
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        error = str(error)
    stopped = record.get("stopped_at_step")
    if stopped is not None and not (isinstance(stopped, int) and not isinstance(stopped, bool)):
        raise ReportError(f"field 'stopped_at_step' must be an integer or null, got {stopped!r}")

    raw_epochs = record.get("epochs") or []
    if not isinstance(raw_epochs, list):
        raise ReportError("field 'epochs' must be a list")
    epochs = [_metric_dict(e, f"epochs[{i}]") for i, e in enumerate(raw_epochs)]
    for i, e in enumerate(epochs):
        if e.get("epoch") is None:
            raise ReportError(f"epochs[{i}] has no numeric 'epoch'")

    tl = record.get("train_loss") or {"step": [], "value": []}
    if not isinstance(tl, dict) or not isinstance(tl.get("step"), list):
        raise ReportError("field 'train_loss' must be an object with lists 'step' and 'value'")
    steps, values = tl.get("step"), tl.get("value")
    if not isinstance(values, list) or len(steps) != len(values):
        raise ReportError("train_loss 'step' and 'value' must be lists of the same length")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise ReportError("train_loss 'step' must hold integers")
    loss = [_num_or_none(v, "train_loss value") for v in values]

    nc_raw = record.get("nc")
    nc = None
    if nc_raw:
        nc = _metric_dict(nc_raw, "nc")
        nc = {k: nc.get(k) for k in NC_KEYS}
    return Run(
        path=path,
        job=_relative(path.parent, root),
        status=status,
        dataset=dataset,
        method=method,
        lr=lr,
        seed=seed,
        error=error,
        stopped_at_step=stopped,
        epochs=epochs,
        loss_steps=np.asarray(steps, dtype=np.int64),
        loss_values=np.asarray([np.nan if v is None else v for v in loss], dtype=np.float64),
        final=_metric_dict(record.get("final"), "final"),
        nc=nc,
        duration_s=_num_or_none(record.get("duration_s"), "duration_s"),
    )


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def load_runs(path: str | os.PathLike[str], *, strict: bool = True) -> Sweep:
    """Find and validate every ``metrics.json`` under ``path``.

    Raises :class:`ReportError` if ``path`` is not a folder, if no record is readable, or (with
    ``strict``) if any record is corrupt. Without ``strict`` corrupt records go to
    ``Sweep.unreadable``. Job folders (with a ``.hydra`` folder) lacking a record go to
    ``Sweep.incomplete``.
    """
    root = Path(path)
    if not root.exists():
        raise ReportError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (give the sweep folder)")
    runs: list[Run] = []
    running: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for f in sorted(root.rglob("metrics.json"), key=_natural_key):
        try:
            run = load_run(f, root)
        except ReportError as exc:
            unreadable.append((_relative(f, root), str(exc)))
            continue
        if run.status == "running":  # a provisional record: the job is not finished
            running.append(run.job)
        else:
            runs.append(run)
    incomplete = sorted(
        {
            _relative(h.parent, root)
            for h in root.rglob(".hydra")
            if h.is_dir() and not (h.parent / "metrics.json").exists()
        }.union(running),
        key=lambda s: _natural_key(Path(s)),
    )
    if unreadable and strict:
        lines = "\n".join(f"  {p}: {why}" for p, why in unreadable)
        raise ReportError(
            f"{len(unreadable)} corrupt or invalid metrics.json under {root}:\n{lines}\n"
            "nothing written; fix or remove them, or pass --skip-bad to report the rest"
        )
    if not runs:
        why = f"no metrics.json under {root}"
        if unreadable:
            why = f"no readable metrics.json under {root} ({len(unreadable)} unreadable)"
        if incomplete:
            why += f"; {len(incomplete)} job folder(s) have none yet (sweep still running?)"
        raise ReportError(why + "; nothing written")
    return Sweep(root=root, runs=runs, unreadable=unreadable, incomplete=incomplete)


# --------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Stats:
    """Mean, sample std (NaN for n < 2), min and max of n values."""

    n: int
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stats | None:
        """Stats of the non-null values, or None if there are none."""
        a = np.asarray([v for v in values if v is not None], dtype=np.float64)
        if a.size == 0:
            return None
        std = float(np.std(a, ddof=1)) if a.size > 1 else math.nan
        return cls(int(a.size), float(np.mean(a)), std, float(np.min(a)), float(np.max(a)))


@dataclass(frozen=True)
class Curve:
    """A mean curve over seeds with its min–max band."""

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int


@dataclass(eq=False)
class Group:
    """The runs of one (dataset, method, lr); statistics over its completed runs."""

    dataset: str
    method: str
    lr: float
    runs: list[Run]
    final_acc: Stats | None = None
    epoch_s: Stats | None = None
    ratio: float | None = None
    loss: Curve | None = None
    acc: Curve | None = None
    nc: dict[str, Stats | None] | None = None
    nc_fired: int = 0  # completed runs with at least one NC step

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "completed"]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)


@dataclass(eq=False)
class Summary:
    """Groups and notes of a sweep, ready to plot and tabulate."""

    sweep: Sweep
    baseline: str
    groups: dict[tuple[str, str, float], Group]
    notes: list[str]

    @property
    def datasets(self) -> list[str]:
        return sorted({k[0] for k in self.groups})

    def methods(self, dataset: str) -> list[str]:
        """Methods of a dataset, the baseline first, then alphabetical."""
        ms = {k[1] for k in self.groups if k[0] == dataset}
        return sorted(ms, key=lambda m: (m != self.baseline, m))

    def lrs(self, dataset: str) -> list[float]:
        """Learning rates of a dataset, largest first (the report's grid order)."""
        return sorted({k[2] for k in self.groups if k[0] == dataset}, reverse=True)

    def all_methods(self) -> list[str]:
        ms = {k[1] for k in self.groups}
        return sorted(ms, key=lambda m: (m != self.baseline, m))


def _loss_curve(runs: Sequence[Run]) -> Curve | None:
    runs = [r for r in runs if r.loss_steps.size]
    if not runs:
        return None
    common = runs[0].loss_steps
    for r in runs[1:]:
        common = np.intersect1d(common, r.loss_steps)
    if common.size == 0:
        return None
    rows = []
    for r in runs:
        # the last record of a repeated step wins
        index = {int(s): i for i, s in enumerate(r.loss_steps)}
        rows.append(r.loss_values[[index[int(s)] for s in common]])
    m = np.vstack(rows)
    keep = np.all(np.isfinite(m), axis=0)
    if not keep.any():
        return None
    m = m[:, keep]
    return Curve(common[keep], m.mean(axis=0), m.min(axis=0), m.max(axis=0), len(runs))


def _acc_curve(runs: Sequence[Run]) -> Curve | None:
    per_epoch: dict[int, list[float]] = {}
    for r in runs:
        for e in r.epochs:
            if e.get("test/acc") is not None:
                per_epoch.setdefault(int(e["epoch"]), []).append(e["test/acc"])
    if not per_epoch:
        return None
    xs = sorted(per_epoch)
    vals = [np.asarray(per_epoch[x]) for x in xs]
    return Curve(
        np.asarray(xs, dtype=np.int64) + 1,  # 1-based epoch numbers, as the report plots them
        np.asarray([v.mean() for v in vals]),
        np.asarray([v.min() for v in vals]),
        np.asarray([v.max() for v in vals]),
        len(runs),
    )


def _fmt_lr(lr: float) -> str:
    return format(lr, "g")


def summarise(sweep: Sweep | Sequence[Run], baseline: str = DEFAULT_BASELINE) -> Summary:
    """Group runs by (dataset, method, lr) and compute every statistic the report shows."""
    if not isinstance(sweep, Sweep):
        runs = list(sweep)
        if not runs:
            raise ReportError("no runs to summarise")
        sweep = Sweep(root=Path(os.path.commonpath([str(r.path.parent) for r in runs])), runs=runs)
    groups: dict[tuple[str, str, float], Group] = {}
    for r in sweep.runs:
        groups.setdefault(r.key, Group(r.dataset, r.method, r.lr, []))
        groups[r.key].runs.append(r)
    groups = dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2])))
    notes: list[str] = []
    for g in groups.values():
        done = g.completed
        seeds = [r.seed for r in g.runs]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            notes.append(
                f"{g.dataset} / {g.method} / lr {_fmt_lr(g.lr)}: seed(s) {dup} appear more "
                "than once; each record counts as a repeat"
            )
        g.final_acc = Stats.of(r.final_test_acc for r in done)
        g.epoch_s = Stats.of(r.epoch_seconds for r in done)
        g.loss = _loss_curve(done)
        g.acc = _acc_curve(done)
        with_nc = [r for r in done if r.nc is not None]
        if with_nc:
            g.nc = {k: Stats.of(r.nc.get(k) for r in with_nc) for k in NC_KEYS}
            g.nc_fired = sum((r.nc.get("steps") or 0) > 0 for r in with_nc)
    for (dataset, _method, lr), g in groups.items():
        base = groups.get((dataset, baseline, lr))
        if base is not None and base.epoch_s is not None and g.epoch_s is not None:
            g.ratio = g.epoch_s.mean / base.epoch_s.mean if base.epoch_s.mean > 0 else None
    for dataset, lr in sorted({(k[0], k[2]) for k in groups}):
        base = groups.get((dataset, baseline, lr))
        timed = any(g.epoch_s for k, g in groups.items() if (k[0], k[2]) == (dataset, lr))
        if not timed:
            continue
        if base is None:
            notes.append(f"{dataset} / lr {_fmt_lr(lr)}: no `{baseline}` run, so no ratios to it")
        elif base.epoch_s is None:
            notes.append(
                f"{dataset} / lr {_fmt_lr(lr)}: no completed `{baseline}` run with epoch "
                "times, so no ratios to it"
            )
    return Summary(sweep=sweep, baseline=baseline, groups=groups, notes=notes)


# --------------------------------------------------------------------------- figures


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def figure_names(dataset: str, lr: float) -> dict[str, str]:
    """File names of the figures of one (dataset, lr): kind → name."""
    stem = f"{_safe(dataset)}_lr{_fmt_lr(lr)}"
    return {
        "train_loss": f"train_loss_{stem}.png",
        "test_acc": f"test_acc_{stem}.png",
        "test_acc_zoom": f"test_acc_zoom_{stem}.png",
    }


def _colors(summary: Summary) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(summary.all_methods())}


def _acc_figure(groups: Sequence[Group], colors: dict[str, Any], title: str, zoom: bool) -> Figure:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    k = len(groups)
    for i, g in enumerate(groups):
        c = g.acc
        assert c is not None
        dx = (i - (k - 1) / 2) * 0.04  # small offsets so the error bars do not hide each other
        ax.errorbar(
            c.x + dx,
            c.mean,
            yerr=np.vstack([c.mean - c.lo, c.hi - c.mean]),
            marker="o",
            ms=4,
            capsize=3,
            color=colors[g.method],
            label=f"{g.method} (n={c.n})",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(sorted({int(x) for g in groups for x in g.acc.x}))
    if zoom:
        lo = min(g.acc.lo[-1] for g in groups)
        hi = max(g.acc.hi[-1] for g in groups)
        pad = max(0.25 * (hi - lo), 0.002)
        ax.set_ylim(lo - pad, min(hi + pad, 1.0 + pad / 4))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def make_figures(summary: Summary) -> dict[str, Figure]:
    """Every figure of the report, keyed by its file name (see :func:`figure_names`)."""
    colors = _colors(summary)
    figs: dict[str, Figure] = {}
    for dataset in summary.datasets:
        for lr in summary.lrs(dataset):
            names = figure_names(dataset, lr)
            gs = [
                summary.groups[(dataset, m, lr)]
                for m in summary.methods(dataset)
                if (dataset, m, lr) in summary.groups
            ]
            with_loss = [g for g in gs if g.loss is not None]
            with_acc = [g for g in gs if g.acc is not None]
            where = f"{dataset}, lr {_fmt_lr(lr)}"
            if with_loss:
                fig = Figure(figsize=(7, 4.5), layout="constrained")
                ax = fig.add_subplot()
                for g in with_loss:
                    c = g.loss
                    ax.fill_between(c.x, c.lo, c.hi, color=colors[g.method], alpha=0.2, lw=0)
                    ax.plot(
                        c.x, c.mean, color=colors[g.method], lw=0.8, label=f"{g.method} (n={c.n})"
                    )
                ax.set_xlabel("training step")
                ax.set_ylabel("training loss")
                ax.set_title(
                    f"{where}: training loss, mean over seeds, band = min–max", fontsize=10
                )
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
                figs[names["train_loss"]] = fig
            if with_acc:
                figs[names["test_acc"]] = _acc_figure(
                    with_acc,
                    colors,
                    f"{where}: test accuracy, mean over seeds, error bars = min–max",
                    zoom=False,
                )
                figs[names["test_acc_zoom"]] = _acc_figure(
                    with_acc,
                    colors,
                    f"{where}: test accuracy (zoomed on the final epochs), error bars = min–max",
                    zoom=True,
                )
    return figs


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


# --------------------------------------------------------------------------- markdown


def _f(x: float | None, decimals: int) -> str:
    return DASH if x is None or not math.isfinite(x) else f"{x:.{decimals}f}"


def _mean_std(s: Stats | None, decimals: int) -> str:
    if s is None:
        return DASH
    if s.n < 2:
        return _f(s.mean, decimals)
    return f"{_f(s.mean, decimals)} ± {_f(s.std, decimals)}"


def _range(s: Stats | None, decimals: int) -> str:
    return DASH if s is None else f"[{_f(s.min, decimals)}, {_f(s.max, decimals)}]"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _robustness_cell(g: Group | None) -> str:
    if g is None:
        return DASH
    n = len(g.runs)
    bad = [f"{s} ({g.count(s)}/{n})" for s in ("diverged", "failed") if g.count(s)]
    if not g.completed:
        return ", ".join(bad)
    acc = _mean_std(g.final_acc, ACC_DECIMALS)
    return acc + (" · " + ", ".join(bad) if bad else "")


def _nc_row(g: Group) -> list[str]:
    n = f"{len(g.completed)}/{len(g.runs)}"
    if g.nc is None:
        return [g.method, n, DASH] + [DASH] * (len(NC_COUNT_KEYS) + 2)
    counts = [_f(g.nc[k].mean if g.nc[k] else None, COUNT_DECIMALS) for k in NC_COUNT_KEYS]
    lam = g.nc["lambda_min"]
    lam_txt = DASH if lam is None else _range(lam, LAMBDA_DECIMALS)
    t = g.nc["time_s"]
    fired = f"{g.nc_fired}/{len(g.completed)}"
    return [g.method, n, fired, *counts, lam_txt, _f(t.mean if t else None, SECONDS_DECIMALS)]


def render_markdown(summary: Summary, figures: Iterable[str] | None = None) -> str:
    """The text of ``report.md``; ``figures`` are the file names written beside it.

    With ``figures=None`` (e.g. in a notebook that shows the figures itself) the text has the
    tables only, no figure links.
    """
    show_figures = figures is not None
    figures = set(figures or ())
    sweep = summary.sweep
    runs = sweep.runs
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in STATUSES)
    out = [
        "# Sweep report",
        "",
        f"Sweep folder: `{sweep.root.resolve()}`. Only the runs' `metrics.json` files are read.",
        "",
        f"- Run records: {len(runs)} ({counts}).",
        f"- Jobs not finished (no `metrics.json` yet, or status `running`; still running or "
        f"killed): {len(sweep.incomplete)}.",
        f"- Unreadable `metrics.json` (skipped with `--skip-bad`): {len(sweep.unreadable)}.",
        "",
        "Conventions: runs are grouped by (dataset, method, lr), repeats are seeds; statistics "
        "are over the **completed** runs of a group (`n` = completed/all runs). Mean ± sample "
        "std (ddof = 1; std omitted for one run), [min, max]. Accuracies 4 decimals, seconds and "
        "ratios 2, NC counts 1 (mean per completed run), λ_min 4. Loss bands and accuracy error "
        "bars are min–max over seeds. Seconds per epoch are training time only, on the machine "
        "that ran the sweep; compare ratios, not absolute times, across machines.",
    ]
    if summary.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in summary.notes]
    for dataset in summary.datasets:
        methods = summary.methods(dataset)
        lrs = summary.lrs(dataset)
        out += ["", f"## {dataset}", "", "### Learning-rate robustness", ""]
        out.append(
            "Final test accuracy (mean ± std over completed seeds); `diverged (k/n)` / "
            "`failed (k/n)`: k of the n runs of the cell did not complete."
        )
        out.append("")
        out.append(
            _table(
                ["method"] + [f"lr {_fmt_lr(lr)}" for lr in lrs],
                (
                    [m] + [_robustness_cell(summary.groups.get((dataset, m, lr))) for lr in lrs]
                    for m in methods
                ),
            )
        )
        for lr in lrs:
            gs = [
                summary.groups[(dataset, m, lr)]
                for m in methods
                if (dataset, m, lr) in summary.groups
            ]
            out += ["", f"### {dataset}, lr {_fmt_lr(lr)}", ""]
            if not any(g.completed for g in gs):
                out.append(
                    "No completed run at this learning rate (see the robustness table and the "
                    "jobs not completed): no figures or tables."
                )
                continue
            names = figure_names(dataset, lr)
            shown = [(k, v) for k, v in names.items() if v in figures]
            if show_figures and not shown:
                out += ["No curves in the completed runs: no figures.", ""]
            captions = {
                "train_loss": "Training loss per step (mean over seeds, band = min–max)",
                "test_acc": "Test accuracy per epoch (mean, error bars = min–max)",
                "test_acc_zoom": "Test accuracy, zoomed on the final accuracies",
            }
            for kind, name in shown:
                out += [f"![{captions[kind]}]({name})", ""]
            out += ["#### Final test accuracy", ""]
            out.append(
                _table(
                    ["method", "n", "mean ± std", "[min, max]"],
                    (
                        [
                            g.method,
                            f"{len(g.completed)}/{len(g.runs)}",
                            _mean_std(g.final_acc, ACC_DECIMALS),
                            _range(g.final_acc, ACC_DECIMALS),
                        ]
                        for g in gs
                    ),
                )
            )
            out += ["", "#### Seconds per epoch (training only)", ""]
            out.append(
                _table(
                    ["method", "n", "mean ± std", f"ratio to {summary.baseline}"],
                    (
                        [
                            g.method,
                            f"{len(g.completed)}/{len(g.runs)}",
                            _mean_std(g.epoch_s, SECONDS_DECIMALS),
                            _f(g.ratio, RATIO_DECIMALS),
                        ]
                        for g in gs
                    ),
                )
            )
            out += ["", "#### NC counters (mean per completed run)", ""]
            out.append(
                _table(
                    [
                        "method",
                        "n",
                        "runs with NC steps",
                        *NC_COUNT_KEYS,
                        "λ_min [min, max]",
                        "NC time s",
                    ],
                    (_nc_row(g) for g in gs),
                )
            )
    not_done = [r for r in runs if r.status != "completed"]
    out += ["", "## Jobs not completed", ""]
    if not_done or sweep.incomplete or sweep.unreadable:
        rows: list[list[Any]] = [
            [
                r.job,
                r.dataset,
                r.method,
                _fmt_lr(r.lr),
                r.seed,
                r.status,
                DASH if r.stopped_at_step is None else r.stopped_at_step,
                r.error or DASH,
            ]
            for r in not_done
        ]
        rows += [
            [j] + [DASH] * 4 + ["incomplete (not finished)", DASH, DASH] for j in sweep.incomplete
        ]
        rows += [
            [p] + [DASH] * 4 + ["unreadable metrics.json", DASH, why] for p, why in sweep.unreadable
        ]
        out.append(
            _table(
                ["job", "dataset", "method", "lr", "seed", "status", "stopped at step", "error"],
                rows,
            )
        )
    else:
        out.append("None: every job completed.")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- writing


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    strict: bool = True,
    baseline: str = DEFAULT_BASELINE,
) -> list[Path]:
    """Read the sweep at ``path`` and write ``report.md`` and the figures into ``out``.

    ``out`` defaults to ``path``. Everything is validated and rendered before anything is
    written; raises :class:`ReportError` (nothing written) if the sweep cannot be reported.
    Returns the written paths, ``report.md`` first.
    """
    sweep = load_runs(path, strict=strict)
    return _write(summarise(sweep, baseline=baseline), out)


def _write(summary: Summary, out: str | os.PathLike[str] | None) -> list[Path]:
    """Render everything in memory, then write the figures and ``report.md`` atomically."""
    figs = make_figures(summary)
    payload: dict[str, bytes] = {name: _png(fig) for name, fig in figs.items()}
    text = render_markdown(summary, payload.keys())
    dest = Path(out) if out is not None else summary.sweep.root
    if dest.exists() and not dest.is_dir():
        raise ReportError(f"{dest}: not a directory; nothing written")
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in payload.items():
        _atomic_write(dest / name, data)
    _atomic_write(dest / REPORT_NAME, text.encode("utf-8"))
    return [dest / REPORT_NAME] + [dest / name for name in payload]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m accelopt.report",
        description="Write report.md and PNG figures for a sweep folder, from its runs' "
        "metrics.json files only.",
        epilog=(
            "A missing path, a folder without readable run records, or (by default) any corrupt "
            "metrics.json: message on stderr, exit 1, nothing written. --skip-bad reports around "
            "corrupt records and lists them. Job folders without metrics.json yet are listed as "
            "incomplete. Precision: accuracies 4 decimals, seconds/ratios 2, NC counts 1; std is "
            "the sample std (ddof=1); bands and error bars are min-max over seeds. Exit codes: "
            "0 written, 1 sweep not reportable, 2 bad arguments."
        ),
    )
    p.add_argument("sweep", help="sweep folder (searched recursively for metrics.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--strict",
        dest="strict",
        action="store_true",
        default=True,
        help="refuse a sweep with any corrupt metrics.json (default)",
    )
    mode.add_argument(
        "--skip-bad",
        dest="strict",
        action="store_false",
        help="report the readable runs and list corrupt metrics.json files as unreadable",
    )
    p.add_argument(
        "--baseline",
        default=DEFAULT_BASELINE,
        help=f"method that seconds per epoch are divided by (default: {DEFAULT_BASELINE})",
    )
    p.add_argument("--out", default=None, help="write here instead of into the sweep folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 written, 1 not reportable)."""
    args = _parser().parse_args(argv)
    try:
        sweep = load_runs(args.sweep, strict=args.strict)
        written = _write(summarise(sweep, baseline=args.baseline), args.out)
    except (ReportError, OSError) as exc:
        print(f"accelopt.report: error: {exc}", file=sys.stderr)
        return 1
    for rel, why in sweep.unreadable:
        print(f"accelopt.report: warning: skipped unreadable {rel}: {why}", file=sys.stderr)
    if sweep.incomplete:
        print(
            f"accelopt.report: warning: {len(sweep.incomplete)} job(s) not finished, without "
            "metrics.json or with status running (listed as incomplete)",
            file=sys.stderr,
        )
    print(f"wrote {written[0]} and {len(written) - 1} figure(s) from {len(sweep.runs)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
