"""Sweep report: the study's figures and tables from a folder of runs' ``metrics.json`` files.

Usage::

    python -m accelopt.report SWEEP_DIR [--skip-bad] [--baseline heavyball]
        [--pair METHOD=BASE ...] [--out DIR]

Reads **only** the ``metrics.json`` run records (:mod:`accelopt.run.record`, schema in
docs/architecture.md) found recursively under ``SWEEP_DIR`` (Hydra multirun layout
``<sweep>/<job>/metrics.json``, possibly nested deeper, e.g. one sweep per dataset) and writes
into ``SWEEP_DIR`` (or ``--out``) ``report.md`` and, for each (dataset, learning rate) with at
least one completed run, these PNG figures:

- ``train_loss_<dataset>_lr<lr>.png``: training loss per step per method, mean over seeds, the
  band is the min–max over seeds (steps common to all completed seeds);
- ``test_acc_<dataset>_lr<lr>.png``: test accuracy per epoch per method, mean over seeds, error
  bars min–max over seeds;
- ``test_acc_zoom_<dataset>_lr<lr>.png``: the same, y-range zoomed around the final accuracies;
- ``curvature_<dataset>_lr<lr>.png`` (only when records carry curvature-monitor measurements):
  Hessian λ_min and λ_max per training step per method, mean over seeds, band min–max;
- ``val_acc_time_<dataset>_lr<lr>.png`` (only when records carry evaluations, schema 3):
  validation accuracy per evaluation vs training seconds, one line per run, the ``val/acc``
  targets dashed;

and, for each dataset with completed runs at two or more learning rates,

- ``test_acc_vs_lr_<dataset>.png``: final test accuracy per learning rate (log axis) per method,
  mean over completed seeds, error bars min–max over seeds; a (method, lr) cell with no completed
  run (diverged/failed/interrupted) is an ``x`` at the bottom of the axis, labelled
  "<method>: did not complete" in the legend.

``report.md`` holds, per dataset: the learning-rate robustness table (methods × learning rates,
diverged/failed/interrupted cells marked as ``diverged (k/n)``) with the accuracy-vs-lr figure,
and per learning rate the final test accuracy (mean ± std, [min, max]), the paired comparison
with each method's base (below), seconds per epoch (the report's Table 1) with the ratio to
the baseline method (``heavyball`` unless ``--baseline``; ratios skipped, and said so, when it is
absent) and the NC counters (with the share of each run's training time spent in NC work,
``nc.time_s`` / Σ ``time/epoch_s``, and the slowdown 1/(1 − share) it implies — one run's own
clock, so machine load hardly moves it — and the mean held-out curvature and loss change when the
records have them); then every job that is not completed (diverged, failed, interrupted, no
``metrics.json`` yet, unreadable) — nothing is silently dropped.

Runs are grouped by *variant* (:mod:`accelopt.variant`: the whole resolved config except the
seed and the keys that may change on resume) and lr: a group never pools runs whose configs
differ in anything but the seed. A group's label — the "method" column — is the optimizer's
config-group name plus every config key that tells it apart from the data set's other runs
(``heavyball model.activation=softplus``; a config group whose choice differs shows as
``model=cnn_softplus``; optimizer keys only where they vary within one method); each data set's
section lists those keys. Repeats are seeds. Statistics use the **completed** runs of a group
only; the others are counted and listed. A method's base (paired comparison, seconds-per-epoch
ratio, time-to-target ratio) is the base method's group with the same non-optimizer keys.

Time to target (:mod:`.ttt`, records of schema 3 with ``targets``): per data set, per group
and target, reached k/n, the median training seconds (a run that never reached it counts as
infinitely slow: "not reached" once half missed it), [min, max] over the runs that reached it,
the median CPU seconds, and the ratio to the base's seconds seed by seed (median [min, max]).

Paired comparison (:func:`paired`). Each method is compared with its base (:data:`DEFAULT_BASES`:
gose, gose_original → heavyball; ancm, ancm_original, combined, combined_original → agd; ``--pair
METHOD=BASE`` replaces a method's base, repeatable) at the same (dataset, lr), seed by seed: only
seeds where both methods' runs completed (a seed with several completed runs in a group is left
out), the others are listed below the table. Shown per pair: n pairs, the mean difference
(method − base) of final test accuracy ± its sample std (omitted for n = 1), [min, max] of the
differences, "better in k/n" (pairs where the method is higher) and a verdict: **within noise**
if n < 2, or [min, max] of the differences includes 0, or |mean difference| ≤ the larger of the
two methods' seed std of final test accuracy (over all their completed seeds, as in the
final-accuracy table); otherwise **higher** or **lower** (all pairs agree in sign and the mean
exceeds that spread). n = 0 (both methods ran, no seed completed by both): "no pairs". A table
is shown only where at least one pair of methods is present.

Numbers (fixed precision, so they can be recomputed from the ``metrics.json`` files): accuracies
4 decimals, seconds and ratios 2 decimals, NC counts (mean per completed run) 1 decimal, λ_min and
held-out numbers 4 decimals, NC seconds 2 decimals. ``std`` is the sample standard deviation
(ddof = 1), omitted for a single run. A run's final test accuracy is ``final["test/acc"]`` (else
its last epoch's); its seconds per epoch is ``final["time/epoch_s"]`` (else the mean of its
epochs' ``time/epoch_s``). The ratio is mean seconds per epoch of the method / that of the
baseline, same dataset and lr.

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

Exit codes: 0 report written, 1 sweep cannot be reported, 2 bad command line (argparse, e.g. a
``--pair`` that is not ``METHOD=BASE``).

One job per module: :mod:`.records` (find and load runs), :mod:`.aggregate` (groups and
statistics), :mod:`.paired` (method vs base), :mod:`.ttt` (time to target), :mod:`.figures`,
:mod:`.markdown`, :mod:`.cli` (writing files, the command line). Python API: :func:`load_runs`, :func:`load_run`,
:func:`summarise`, :func:`paired` (:class:`Paired`), :func:`make_figures` (file names:
:func:`figure_names`, :func:`dataset_figure_names`), :func:`render_markdown`,
:func:`write_report`, :func:`main`. Imports numpy and matplotlib only
(and :mod:`accelopt.variant`, stdlib only).
"""

from .aggregate import (
    DEFAULT_BASELINE,
    DEFAULT_BASES,
    NC_COUNT_KEYS,
    Curve,
    Group,
    Stats,
    Summary,
    summarise,
)
from .cli import REPORT_NAME, main, write_report
from .figures import dataset_figure_names, figure_names, make_figures, png
from .markdown import render_markdown
from .paired import Paired, paired
from .records import ReportError, Run, Sweep, load_run, load_runs

__all__ = [
    "ReportError",
    "Run",
    "Sweep",
    "Stats",
    "Curve",
    "Group",
    "Summary",
    "Paired",
    "load_run",
    "load_runs",
    "summarise",
    "paired",
    "make_figures",
    "figure_names",
    "dataset_figure_names",
    "png",
    "render_markdown",
    "write_report",
    "main",
    "DEFAULT_BASELINE",
    "DEFAULT_BASES",
    "NC_COUNT_KEYS",
    "REPORT_NAME",
]
