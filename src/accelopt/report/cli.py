"""Writing the report (``report.md`` and the PNG figures) and the command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from accelopt.fileio import atomic_write

from .aggregate import DEFAULT_BASELINE, DEFAULT_BASES, Summary, summarise
from .figures import make_figures, png
from .markdown import render_markdown
from .records import ReportError, load_runs

__all__ = ["REPORT_NAME", "write_report", "main"]

REPORT_NAME = "report.md"


def write_report(
    path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    strict: bool = True,
    baseline: str = DEFAULT_BASELINE,
    bases: Mapping[str, str] | None = None,
) -> list[Path]:
    """Read the sweep at ``path`` and write ``report.md`` and the figures into ``out``.

    ``out`` defaults to ``path``; ``bases`` (method → base of the paired comparisons) to
    :data:`DEFAULT_BASES`. Everything is validated and rendered before anything is
    written; raises :class:`ReportError` (nothing written) if the sweep cannot be reported.
    Returns the written paths, ``report.md`` first.
    """
    sweep = load_runs(path, strict=strict)
    return _write(summarise(sweep, baseline=baseline, bases=bases), out)


def _write(summary: Summary, out: str | os.PathLike[str] | None) -> list[Path]:
    """Render everything in memory, then write the figures and ``report.md`` atomically."""
    figs = make_figures(summary)
    payload: dict[str, bytes] = {name: png(fig) for name, fig in figs.items()}
    text = render_markdown(summary, payload.keys())
    dest = Path(out) if out is not None else summary.sweep.root
    if dest.exists() and not dest.is_dir():
        raise ReportError(f"{dest}: not a directory; nothing written")
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in payload.items():
        atomic_write(dest / name, data)
    atomic_write(dest / REPORT_NAME, text.encode("utf-8"))
    return [dest / REPORT_NAME] + [dest / name for name in payload]


def _pair(value: str) -> tuple[str, str]:
    """``METHOD=BASE`` → (method, base); argparse reports anything else (exit 2)."""
    method, sep, base = value.partition("=")
    method, base = method.strip(), base.strip()
    if not sep or not method or not base or "=" in base or method == base:
        raise argparse.ArgumentTypeError(
            f"invalid value {value!r}: expected METHOD=BASE with two different method names, "
            "e.g. gose=heavyball"
        )
    return method, base


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
    defaults = ", ".join(f"{m}={b}" for m, b in DEFAULT_BASES.items())
    p.add_argument(
        "--pair",
        action="append",
        type=_pair,
        default=[],
        metavar="METHOD=BASE",
        help="compare METHOD with BASE seed by seed (repeatable; replaces METHOD's default base; "
        f"defaults: {defaults})",
    )
    p.add_argument("--out", default=None, help="write here instead of into the sweep folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 written, 1 not reportable)."""
    args = _parser().parse_args(argv)
    try:
        sweep = load_runs(args.sweep, strict=args.strict)
        bases = {**DEFAULT_BASES, **dict(args.pair)}
        written = _write(summarise(sweep, baseline=args.baseline, bases=bases), args.out)
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
