"""The report's figures, built with matplotlib's object API (no pyplot) and rendered by Agg."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from .aggregate import Curve, Group, Summary, fmt_lr

matplotlib.use("Agg")  # figures are built with the object API (no pyplot); Agg renders them

__all__ = ["dataset_figure_names", "figure_names", "make_figures", "png"]

DPI = 110
DID_NOT_COMPLETE = "did not complete"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def figure_names(dataset: str, lr: float) -> dict[str, str]:
    """File names of the figures of one (dataset, lr): kind → name."""
    stem = f"{_safe(dataset)}_lr{fmt_lr(lr)}"
    return {
        "train_loss": f"train_loss_{stem}.png",
        "test_acc": f"test_acc_{stem}.png",
        "test_acc_zoom": f"test_acc_zoom_{stem}.png",
        "curvature": f"curvature_{stem}.png",
        "val_acc_time": f"val_acc_time_{stem}.png",
    }


def dataset_figure_names(dataset: str) -> dict[str, str]:
    """File names of the figures of one dataset across its learning rates: kind → name."""
    return {"test_acc_vs_lr": f"test_acc_vs_lr_{_safe(dataset)}.png"}


def _colors(summary: Summary) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(summary.all_methods())}


def _finish(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _loss_figure(groups: Sequence[Group], colors: dict[str, Any], where: str) -> Figure:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for g in groups:
        c = g.loss
        assert c is not None
        ax.fill_between(c.x, c.lo, c.hi, color=colors[g.method], alpha=0.2, lw=0)
        ax.plot(c.x, c.mean, color=colors[g.method], lw=0.8, label=f"{g.method} (n={c.n})")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    _finish(ax, f"{where}: training loss, mean over seeds, band = min–max")
    return fig


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
    _finish(ax, title)
    return fig


def _curvature_figure(groups: Sequence[Group], colors: dict[str, Any], where: str) -> Figure:
    """λ_min (top) and λ_max (bottom) of the curvature monitor per step, mean over seeds."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax, attr, label in ((top, "lambda_min", "λ_min"), (bottom, "lambda_max", "λ_max")):
        for g in groups:
            c: Curve | None = getattr(g, attr)
            if c is None:
                continue
            ax.fill_between(c.x, c.lo, c.hi, color=colors[g.method], alpha=0.2, lw=0)
            ax.plot(
                c.x,
                c.mean,
                color=colors[g.method],
                marker=".",
                ms=3,
                lw=0.8,
                label=f"{g.method} (n={c.n})",
            )
        ax.set_ylabel(label)
        if attr == "lambda_min":
            ax.axhline(0.0, color="0.5", lw=0.6)
        _finish(ax, f"{where}: Hessian {label} per step, mean over seeds, band = min–max")
    bottom.set_xlabel("training step")
    return fig


def _val_time_figure(groups: Sequence[Group], colors: dict[str, Any], where: str) -> Figure:
    """Validation accuracy per evaluation vs training seconds, one line per run; the runs'
    ``val/acc`` targets as dashed lines."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    thresholds: set[float] = set()
    for g in groups:
        runs = [r for r in g.runs if any("val/acc" in e for e in r.evals)]
        for i, r in enumerate(runs):
            rows = [e for e in r.evals if e.get("val/acc") is not None]
            ax.plot(
                [e.get("time/train_s") or 0.0 for e in rows],
                [e["val/acc"] for e in rows],
                color=colors[g.method],
                lw=0.8,
                marker=".",
                ms=3,
                label=f"{g.method} (n={len(runs)})" if i == 0 else None,
            )
        thresholds |= {
            float(t["threshold"]) for r in runs for t in r.targets if t["metric"] == "val/acc"
        }
    for t in sorted(thresholds):
        ax.axhline(t, color="0.4", lw=0.7, ls="--")
    ax.set_xlabel("training seconds (evaluation and monitors excluded)")
    ax.set_ylabel("validation accuracy")
    _finish(ax, f"{where}: validation accuracy vs training time, one line per run")
    return fig


def _acc_vs_lr_figure(summary: Summary, dataset: str, colors: dict[str, Any]) -> Figure:
    """Final test accuracy per learning rate per method; cells without a completed run: ×."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    bottom = blended_transform_factory(ax.transData, ax.transAxes)  # x: lr, y: axes fraction
    lrs = sorted(summary.lrs(dataset))
    methods = summary.methods(dataset)
    for i, m in enumerate(methods):
        gs = [summary.groups[k] for k in ((dataset, m, lr) for lr in lrs) if k in summary.groups]
        shift = 1.04 ** (i - (len(methods) - 1) / 2)  # so the error bars do not hide each other
        done = [g for g in gs if g.final_acc is not None]
        if done:
            mean = np.asarray([g.final_acc.mean for g in done])
            lo = np.asarray([g.final_acc.min for g in done])
            hi = np.asarray([g.final_acc.max for g in done])
            ax.errorbar(
                np.asarray([g.lr for g in done]) * shift,
                mean,
                yerr=np.vstack([mean - lo, hi - mean]),
                marker="o",
                ms=4,
                capsize=3,
                color=colors[m],
                label=m,
            )
        failed = [g.lr * shift for g in gs if not g.completed]
        if failed:
            ax.plot(
                failed,
                [0.03] * len(failed),
                transform=bottom,
                ls="none",
                marker="x",
                ms=8,
                mew=2,
                color=colors[m],
                clip_on=False,
                label=f"{m}: {DID_NOT_COMPLETE}",
            )
    ax.set_xticks(lrs, labels=[fmt_lr(lr) for lr in lrs])
    ax.minorticks_off()
    ax.set_xlim(lrs[0] / 1.5, lrs[-1] * 1.5)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("final test accuracy")
    title = f"{dataset}: final test accuracy vs lr, mean over seeds, error bars = min–max"
    _finish(ax, f"{title}\n× at the bottom: no completed run ({DID_NOT_COMPLETE})")
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: DID_NOT_COMPLETE in labels[i])
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8)
    return fig


def make_figures(summary: Summary) -> dict[str, Figure]:
    """Every figure of the report, keyed by its file name (see :func:`figure_names` and
    :func:`dataset_figure_names`)."""
    colors = _colors(summary)
    figs: dict[str, Figure] = {}
    for dataset in summary.datasets:
        groups = summary.groups.items()
        done = {k[2] for k, g in groups if k[0] == dataset and g.final_acc is not None}
        if len(done) >= 2:
            name = dataset_figure_names(dataset)["test_acc_vs_lr"]
            figs[name] = _acc_vs_lr_figure(summary, dataset, colors)
        for lr in summary.lrs(dataset):
            names = figure_names(dataset, lr)
            gs = summary.at(dataset, lr)
            with_loss = [g for g in gs if g.loss is not None]
            with_acc = [g for g in gs if g.acc is not None]
            with_curv = [g for g in gs if g.lambda_min is not None or g.lambda_max is not None]
            where = f"{dataset}, lr {fmt_lr(lr)}"
            if with_loss:
                figs[names["train_loss"]] = _loss_figure(with_loss, colors, where)
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
            if with_curv:
                figs[names["curvature"]] = _curvature_figure(with_curv, colors, where)
            with_evals = [
                g for g in gs if any(e.get("val/acc") is not None for r in g.runs for e in r.evals)
            ]
            if with_evals:
                figs[names["val_acc_time"]] = _val_time_figure(with_evals, colors, where)
    return figs


def png(fig: Figure) -> bytes:
    """The PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
