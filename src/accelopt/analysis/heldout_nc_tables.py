"""Markdown tables and the summary of the held-out NC measurement (:mod:`.heldout_nc`).

Every number comes from the measured rows; nothing is typed in by hand.
"""

from __future__ import annotations

import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from accelopt.analysis.heldout_nc import ALPHAS


def _med(values: list[float], fmt: str = "+.3g") -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}} … {max(values):{fmt}})"


def _cells(rows: list[dict]) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["stage"], str(r["b"]), r["budget"]), []).append(r)
    return cells


def curvature_table(rows: list[dict], facts: dict) -> str:
    """Per (stage, b, budget): search λ, held-out vᵀHv, and costs relative to a training step."""
    lines = [
        "| stage (epoch) | search b | HVPs | search-batch λ: median (range) | λ < 0 | held-out vᵀHv: "
        "median (range) | held-out vᵀHv < 0 | search s | search × step | verify + sign + LS × step |",
        "|" + "---|" * 10,
    ]  # fmt: skip
    for (stage, b, k), rs in _cells(rows).items():
        step, n, nc = facts[stage]["step_s"], len(rs), b != "random"
        secs = [r["seconds"] for r in rs]
        extra = [(r["t_graph_h"] + r["t_curv"] + r["t_sign"] + r["t_select"]) / step for r in rs]
        lam = [r["lam"] for r in rs] if nc else []
        short = sum(r["iters"] < k for r in rs) if nc else 0
        hvps = (f"{k} (fewer in {short})" if short else str(k)) if nc else "–"
        lines.append(
            f"| {stage} ({facts[stage]['epoch']:.2f}) | {b} | {hvps} | {_med(lam)} | "
            + (f"{sum(x < 0 for x in lam)}/{n}" if nc else "–")
            + f" | {_med([r['curv'] for r in rs])} | {sum(r['curv'] < 0 for r in rs)}/{n} | "
            + (f"{_med(secs, '.2f')} | {_med([x / step for x in secs], '.0f')}" if nc else "– | –")
            + f" | {_med(extra, '.0f')} |"
        )
    return "\n".join(lines)


def loss_table(rows: list[dict], alphas: tuple[float, ...] = ALPHAS) -> str:
    """Per (stage, b, budget): held-out loss change per α and of the line search's α."""
    head = "| stage | search b | HVPs | " + " | ".join(f"ΔL_h α={a:g}" for a in alphas)
    head += " | line search: α chosen | line search: ΔL_h |"
    lines = [head, "|" + "---|" * (len(alphas) + 5)]
    for (stage, b, k), rs in _cells(rows).items():
        cols = [[r["heldout"][i] for r in rs] for i in range(len(alphas))]
        cols.append([r["ls_heldout"] for r in rs])
        cells = [f"{statistics.median(c):+.2g} ({sum(x < 0 for x in c)}/{len(c)}↓)" for c in cols]
        cells.insert(-1, ", ".join(f"{r['ls_alpha']:g}" for r in rs))
        lines.append(f"| {stage} | {b} | {k or '–'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _spread(vals: list[float]) -> str:
    return f"{statistics.median(vals):+.2g} (range {min(vals):+.2g} … {max(vals):+.2g})"


def _descent(cells: dict[tuple, list[dict]], alphas: tuple[float, ...]) -> list[str]:
    """NC cells with step lengths that lowered the held-out loss in every rep, vs random."""
    out = []
    for (stage, b, k), rs in cells.items():
        good = [i for i in range(len(alphas)) if all(r["heldout"][i] < 0 for r in rs)]
        if b == "random" or not good:
            continue
        i = min(good, key=lambda i: statistics.median(r["heldout"][i] for r in rs))
        rand = [r["heldout"][i] for r in cells.get((stage, "random", 0), [])]
        ctrl = (
            f"; random {_spread(rand)}, {sum(x < 0 for x in rand)}/{len(rand)} down" if rand else ""
        )
        cost = statistics.median(r["seconds"] / r["step_s"] for r in rs)
        curv = statistics.median(r["curv"] for r in rs)
        out.append(
            f"stage {stage}, b = {b}, {k} HVPs (search {cost:.0f}× a training step, held-out vᵀHv "
            f"median {curv:+.2g}): α ∈ {{{', '.join(f'{alphas[j]:g}' for j in good)}}}, best "
            f"α = {alphas[i]:g}: {_spread([r['heldout'][i] for r in rs])}{ctrl}"
        )
    return out


def summary(rows: list[dict], alphas: tuple[float, ...] = ALPHAS) -> str:
    """The closing paragraph, computed from the rows (nothing typed in by hand)."""
    reps = max(r["rep"] for r in rows) + 1
    cells = _cells(rows)
    parts = [f"Every cell has {reps} reps (independent search, sign and selection batches)."]
    pooled = ["Pooled over stages and budgets (the slope is the first-order part, ≈ g_hᵀd):"]
    for b in dict.fromkeys(str(r["b"]) for r in rows):
        rs = [r for r in rows if str(r["b"]) == b]
        ls = [r["ls_heldout"] for r in rs]
        slope = statistics.median(r["heldout"][0] / alphas[0] for r in rs)
        pooled.append(
            f"b = {b}: held-out vᵀHv < 0 in {sum(r['curv'] < 0 for r in rs)}/{len(rs)}, held-out "
            f"slope ΔL_h(α = {alphas[0]:g})/α median {slope:+.2g}, "
            f"line search held-out change {_spread(ls)}, down in {sum(x < 0 for x in ls)}, "
            f"no step chosen in {sum(r['ls_alpha'] == 0 for r in rs)};"
        )
    parts.append(" ".join(pooled)[:-1] + ".")
    down = _descent(cells, alphas)
    parts.append(
        "Held-out loss down in every rep along Lanczos directions: "
        + ("; ".join(down) if down else "no cell at any α") + "."
    )  # fmt: skip
    costs: dict[tuple, list[float]] = {}
    for (_, b, k), rs in cells.items():
        if k:
            costs.setdefault((b, k), []).extend(r["seconds"] / r["step_s"] for r in rs)
    parts.append(
        "Search cost in training steps (median over stages and reps): "
        + "; ".join(f"b = {b}, {k} HVPs: {statistics.median(v):.0f}×" for (b, k), v in costs.items())
        + ". Timings come from a shared 2-core machine and move by up to 2× between runs."
    )  # fmt: skip
    return "\n".join(f"- {p}" for p in parts)


def write_report(path: Path, blob: dict[str, Any]) -> None:
    """The results file: command, machine, date, settings, both tables and the summary."""
    rows, facts = blob["rows"], {int(k): v for k, v in blob["facts"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    stage_lines = ["| stage | epoch | held-out loss | median training step (s) | steps timed |"]
    stage_lines += ["|---|---|---|---|---|"] + [
        f"| {s} | {f['epoch']:.2f} | {f['base']:.4f} | {f['step_s']:.3f} | {f['steps_timed']} |"
        for s, f in facts.items()
    ]
    text = (
        "# Held-out check of Lanczos negative-curvature directions (report CNN, "
        f"{blob.get('dataset', 'mnist').replace('cifar10', 'CIFAR-10').replace('mnist', 'MNIST')})\n\n"
        f"Command: `{blob['command']}`  \nDate: {blob['date']}; total wall {blob['wall']:.0f} s "
        f"(stages done: {', '.join(str(s) for s in facts)}).  \n"
        f"Machine: 2-core CPU container, shared and noisy (other jobs ran alongside), torch "
        f"{torch.__version__}, 1 thread, Python {platform.python_version()}.  \n"
        f"Settings: {blob['cfg']}.\n\n"
        "Held-out = training images set aside before training (never trained on, never in a "
        "search, sign or selection batch). ΔL_h = held-out loss at θ + αd minus at θ, "
        "d = −sign(gᵀv)v with g from an independent sign batch. Cells: median (range) over "
        "reps; `k/n↓` = reps where the held-out loss went down. `random`: a random unit "
        "direction, same sign rule. Line search: α ∈ {0} ∪ grid minimising an independent "
        "selection batch's loss (0 = no step). Costs: wall seconds / median training step; "
        "search = graph build + Lanczos; verify + sign + LS = held-out graph build and one "
        "HVP, the sign batch's gradient and the line search's losses.\n\n"
        "## Stages\n\n" + "\n".join(stage_lines) + "\n\n"
        "## Curvature and cost\n\n" + curvature_table(rows, facts) + "\n\n"
        "## Held-out loss change along the direction\n\n" + loss_table(rows) + "\n\n"
        "## What this says\n\n" + summary(rows) + "\n"
    )
    path.write_text(text)
