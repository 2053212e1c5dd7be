"""The text of ``report.md``: header, per-dataset tables, and every job that did not complete."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from accelopt.run.record import NC_HELDOUT_KEYS

from .aggregate import NC_COUNT_KEYS, Group, Stats, Summary, fmt_lr
from .curvature import curvature_summary
from .figures import dataset_figure_names, figure_names
from .paired import Paired, paired
from .records import Sweep
from .ttt import TimeToTarget, time_to_targets

__all__ = ["render_markdown"]

ACC_DECIMALS = 4
SECONDS_DECIMALS = 2
RATIO_DECIMALS = 2
COUNT_DECIMALS = 1
LAMBDA_DECIMALS = 4
HELDOUT_DECIMALS = 4
DASH = "—"
# statuses counted in the header; "interrupted" is added when a sweep has such runs
COUNTED = ("completed", "diverged", "failed")
NOT_COMPLETED = ("diverged", "failed", "interrupted")
HELDOUT_HEADERS = {
    "heldout_curvature": "held-out curvature",
    "heldout_loss_change": "held-out loss change",
}
CAPTIONS = {
    "train_loss": "Training loss per step (mean over seeds, band = min–max)",
    "test_acc": "Test accuracy per epoch (mean, error bars = min–max)",
    "test_acc_zoom": "Test accuracy, zoomed on the final accuracies",
    "curvature": "Hessian λ_min and λ_max per step (curvature monitor, mean over seeds)",
    "val_acc_time": "Validation accuracy vs training seconds (each run; dashed: the targets)",
    "test_acc_vs_lr": "Final test accuracy vs learning rate (mean, error bars = min–max; "
    "× = did not complete)",
}
CURVATURE_PREAMBLE = (
    "λ_min/λ_max of the monitor's fixed probe batch (a few Lanczos steps: λ_max is a lower bound "
    "of the largest eigenvalue, λ_min an upper bound of the smallest). *first*: the first "
    "measurement (step 0); *median*: each run's median over its later measurements, then the "
    "median over runs; *last*: the last measurement; the count of later measurements with "
    "λ_min < 0, all runs together."
)
PAIRED_PREAMBLE = (
    "Each method against its base (`--pair METHOD=BASE`), paired by seed: only seeds where both "
    "runs completed. Difference = method − base final test accuracy: mean ± std over the pairs, "
    "[min, max]; `better in` = pairs where the method is higher. Verdict: *within noise* if "
    "n < 2, or [min, max] includes 0, or |mean| ≤ the larger of the two methods' seed std (the "
    "final-accuracy table); otherwise *higher* / *lower* (every pair agrees in sign and the mean "
    "exceeds the seed spread). n = 0: no pairs, no verdict."
)


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
    bad = [f"{s} ({g.count(s)}/{n})" for s in NOT_COMPLETED if g.count(s)]
    if not g.completed:
        return ", ".join(bad)
    acc = _mean_std(g.final_acc, ACC_DECIMALS)
    return acc + (" · " + ", ".join(bad) if bad else "")


def _mean(s: Stats | None, decimals: int) -> str:
    return _f(s.mean if s else None, decimals)


def _nc_row(g: Group, heldout: Sequence[str]) -> list[str]:
    n = f"{len(g.completed)}/{len(g.runs)}"
    if g.nc is None:
        return [g.method, n, DASH] + [DASH] * (len(NC_COUNT_KEYS) + 3 + len(heldout))
    counts = [_mean(g.nc[k], COUNT_DECIMALS) for k in NC_COUNT_KEYS]
    lam = g.nc["lambda_min"]
    lam_txt = DASH if lam is None else _range(lam, LAMBDA_DECIMALS)
    fired = f"{g.nc_fired}/{len(g.completed)}"
    held = [_mean(g.nc.get(k), HELDOUT_DECIMALS) for k in heldout]
    share = g.nc_share
    share_txt = (
        DASH if share is None else f"{100 * share.mean:.1f} % (→ {1 / (1 - share.mean):.2f}×)"
    )
    nc_s = _mean(g.nc["time_s"], SECONDS_DECIMALS)
    return [g.method, n, fired, *counts, lam_txt, nc_s, share_txt, *held]


def _nc_table(gs: Sequence[Group]) -> str:
    """The NC counters; held-out columns only when some run of the table has them."""
    heldout = [k for k in NC_HELDOUT_KEYS if any(g.nc and g.nc.get(k) for g in gs)]
    header = ["method", "n", "runs with NC steps", *NC_COUNT_KEYS, "λ_min [min, max]"]
    header += ["NC time s", "NC share of training time (→ slowdown)"]
    header += [f"{HELDOUT_HEADERS[k]} (mean)" for k in heldout]
    return _table(header, (_nc_row(g, heldout) for g in gs))


def _header(summary: Summary) -> list[str]:
    sweep = summary.sweep
    runs = sweep.runs
    counted = COUNTED + (("interrupted",) if any(r.status == "interrupted" for r in runs) else ())
    counts = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in counted)
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
        "Conventions: runs are grouped by variant — their whole config but the seed — and lr "
        "(a method's label adds the config keys that tell its runs apart, e.g. `heavyball "
        "model.activation=tanh`); repeats are seeds; statistics "
        "are over the **completed** runs of a group (`n` = completed/all runs). Mean ± sample "
        "std (ddof = 1; std omitted for one run), [min, max]. Accuracies 4 decimals, seconds and "
        "ratios 2, NC counts 1 (mean per completed run), λ_min 4. Loss bands and accuracy error "
        "bars are min–max over seeds. Seconds per epoch are training time only, on the machine "
        "that ran the sweep; compare ratios, not absolute times, across machines.",
    ]
    if summary.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in summary.notes]
    return out


def _robustness(summary: Summary, dataset: str, figures: set[str] | None) -> list[str]:
    lrs = summary.lrs(dataset)
    out = [
        "",
        f"## {dataset}",
        "",
        _varying(summary, dataset),
        "",
        "### Learning-rate robustness",
        "",
    ]
    out.append(
        "Final test accuracy (mean ± std over completed seeds); `diverged (k/n)` / "
        "`failed (k/n)`: k of the n runs of the cell did not complete."
    )
    out.append("")
    rows = (
        [m] + [_robustness_cell(summary.groups.get((dataset, m, lr))) for lr in lrs]
        for m in summary.methods(dataset)
    )
    out.append(_table(["method"] + [f"lr {fmt_lr(lr)}" for lr in lrs], rows))
    for kind, name in dataset_figure_names(dataset).items():
        if name in (figures or ()):
            out += ["", f"![{CAPTIONS[kind]}]({name})"]
    return out


def _varying(summary: Summary, dataset: str) -> str:
    keys = summary.varying.get(dataset) or []
    if not keys:
        return "Config keys that vary here (besides optimizer, lr and seed): none."
    return (
        "Config keys that vary here (besides optimizer, lr and seed; each group holds one "
        f"config, repeated over seeds): {', '.join(f'`{k}`' for k in keys)}."
    )


TTT_PREAMBLE = (
    "Training seconds (evaluation and monitors excluded) until the first evaluation that "
    "reached the target (`trainer.val_check_interval` evaluates within epochs). Median over the "
    "runs, a run that never reached it counting as infinitely slow (*not reached* once half "
    "missed it); [min, max] over the runs that reached it. Ratio: method / base seconds, seed by "
    "seed where both reached it (base as in the paired comparison, else the baseline): median "
    "[min, max] (k pairs), of wall seconds and of CPU seconds. Steps and the process's CPU "
    "seconds do not move when other work shares the machine; wall seconds do."
)


def _ratio_cell(ratios: Sequence[float]) -> str:
    if not ratios:
        return DASH
    r = sorted(ratios)
    mid, lo, hi = (_f(x, RATIO_DECIMALS) for x in (statistics.median(r), r[0], r[-1]))
    return f"{mid} [{lo}, {hi}] ({len(r)} pairs)"


def _ttt_row(t: TimeToTarget) -> list[str]:
    def secs(x: float, decimals: int = SECONDS_DECIMALS) -> str:
        return "not reached" if math.isinf(x) else _f(x, decimals)

    span = DASH if t.lo is None else f"[{_f(t.lo, SECONDS_DECIMALS)}, {_f(t.hi, SECONDS_DECIMALS)}]"
    side = "≤" if t.metric.endswith("loss") else "≥"
    return [
        t.group.method,
        fmt_lr(t.group.lr),
        f"{t.metric} {side} {t.threshold:g}",
        f"{t.reached}/{t.n}",
        secs(t.steps_median, 0),
        secs(t.median),
        span,
        secs(t.cpu_median),
        t.base or DASH,
        _ratio_cell(t.ratios),
        _ratio_cell(t.cpu_ratios),
    ]


def _ttt_section(rows: Sequence[TimeToTarget]) -> list[str]:
    if not rows:
        return []
    header = ["method", "lr", "target", "reached", "median steps", "median s", "[min, max] s"]
    header += ["median CPU s", "base", "ratio to base", "CPU ratio to base"]
    out = ["", "### Time to target", "", TTT_PREAMBLE, ""]
    return out + [_table(header, (_ttt_row(t) for t in rows))]


def _paired_table(pairs: Sequence[Paired]) -> list[str]:
    """The paired comparisons of one (dataset, lr), and the seeds left out of them."""
    out = ["", "#### Paired comparison with the base method", "", PAIRED_PREAMBLE, ""]
    rows = (
        [
            p.method,
            p.base,
            p.n,
            _mean_std(p.diff, ACC_DECIMALS),
            _range(p.diff, ACC_DECIMALS),
            f"{p.better}/{p.n}",
            p.verdict,
        ]
        for p in pairs
    )
    header = ["method", "base", "n pairs", "difference mean ± std", "[min, max]", "better in"]
    out.append(_table([*header, "verdict"], rows))
    left = [
        f"{p.method} vs {p.base}: {', '.join(map(str, p.unpaired))}" for p in pairs if p.unpaired
    ]
    if left:
        out += ["", "Seeds not paired (not completed by both methods): " + "; ".join(left) + "."]
    return out


def _lr_section(
    summary: Summary, dataset: str, lr: float, figures: set[str] | None, pairs: list[Paired]
) -> list[str]:
    """Figures and tables of one (dataset, lr); ``figures`` None: no figure links at all."""
    gs = summary.at(dataset, lr)
    out = ["", f"### {dataset}, lr {fmt_lr(lr)}", ""]
    if not any(g.completed for g in gs):
        out.append(
            "No completed run at this learning rate (see the robustness table and the "
            "jobs not completed): no figures or tables."
        )
        return out
    shown = [(k, v) for k, v in figure_names(dataset, lr).items() if v in (figures or ())]
    if figures is not None and not shown:
        out += ["No curves in the completed runs: no figures.", ""]
    for kind, name in shown:
        out += [f"![{CAPTIONS[kind]}]({name})", ""]
    n = {id(g): f"{len(g.completed)}/{len(g.runs)}" for g in gs}
    out += ["#### Final test accuracy", ""]
    rows = (
        [
            g.method,
            n[id(g)],
            _mean_std(g.final_acc, ACC_DECIMALS),
            _range(g.final_acc, ACC_DECIMALS),
        ]
        for g in gs
    )
    out.append(_table(["method", "n", "mean ± std", "[min, max]"], rows))
    order = summary.methods(dataset)
    here = [p for p in pairs if (p.dataset, p.lr) == (dataset, lr)]
    if here:
        out += _paired_table(sorted(here, key=lambda p: order.index(p.method)))
    out += ["", "#### Seconds per epoch (training only)", ""]
    rows = (
        [g.method, n[id(g)], _mean_std(g.epoch_s, SECONDS_DECIMALS), _f(g.ratio, RATIO_DECIMALS)]
        for g in gs
    )
    out.append(_table(["method", "n", "mean ± std", f"ratio to {summary.baseline}"], rows))
    out += ["", "#### NC counters (mean per completed run)", "", _nc_table(gs)]
    return out + _curvature_table(gs)


def _curvature_table(gs: Sequence[Group]) -> list[str]:
    """The curvature monitor's λ_min/λ_max per group, when the runs used it."""
    rows = []
    for g in gs:
        c = curvature_summary(g)
        if c is None:
            continue
        lam = [c.first_min, c.first_max, c.median_min, c.median_max, c.last_min, c.last_max]
        rows.append([g.method, c.runs, *(_f(x, 2) for x in lam), f"{c.negative}/{c.points}"])
    if not rows:
        return []
    header = ["method", "runs", "λ_min first", "λ_max first", "λ_min median", "λ_max median"]
    header += ["λ_min last", "λ_max last", "later λ_min < 0"]
    return ["", "#### Curvature monitor (median over runs)", "", CURVATURE_PREAMBLE, ""] + [
        _table(header, rows)
    ]


def _jobs(sweep: Sweep) -> list[str]:
    """Every job that did not complete: diverged, failed, interrupted, incomplete, unreadable."""
    not_done = [r for r in sweep.runs if r.status != "completed"]
    out = ["", "## Jobs not completed", ""]
    if not (not_done or sweep.incomplete or sweep.unreadable):
        return out + ["None: every job completed."]
    rows: list[list[Any]] = [
        [
            r.job,
            r.dataset,
            r.method,
            fmt_lr(r.lr),
            r.seed,
            r.status,
            DASH if r.stopped_at_step is None else r.stopped_at_step,
            r.error or DASH,
        ]
        for r in not_done
    ]
    rows += [[j] + [DASH] * 4 + ["incomplete (not finished)", DASH, DASH] for j in sweep.incomplete]
    rows += [
        [p] + [DASH] * 4 + ["unreadable metrics.json", DASH, why] for p, why in sweep.unreadable
    ]
    header = ["job", "dataset", "method", "lr", "seed", "status", "stopped at step", "error"]
    return out + [_table(header, rows)]


def render_markdown(summary: Summary, figures: Iterable[str] | None = None) -> str:
    """The text of ``report.md``; ``figures`` are the file names written beside it.

    With ``figures=None`` (e.g. in a notebook that shows the figures itself) the text has the
    tables only, no figure links.
    """
    shown = None if figures is None else set(figures)
    out = _header(summary)
    pairs = paired(summary)
    for dataset in summary.datasets:
        out += _robustness(summary, dataset, shown)
        out += _ttt_section(time_to_targets(summary, dataset))
        for lr in summary.lrs(dataset):
            out += _lr_section(summary, dataset, lr, shown, pairs)
    out += _jobs(summary.sweep)
    return "\n".join(out) + "\n"
