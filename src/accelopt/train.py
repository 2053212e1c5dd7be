"""Hydra entry point: ``python -m accelopt.train [overrides]`` trains one model, or sweeps with ``-m``.

:func:`train` is the whole job for one composed config: compose, check, build, fit, finalise.
Every error in the config comes before any work starts; the data module, network, optimizer,
loggers and callbacks are built from their ``_target_`` configs; the run record ``metrics.json``
(schema in ``docs/architecture.md``) is written to the run's output folder whatever the outcome.
A run whose loss becomes non-finite ends cleanly as ``diverged``; an unexpected error is recorded
as ``failed`` and then raised, so in a multirun the other jobs still run and keep their results.
The run folder's management (lock, resume, record) is the run layer's, :mod:`accelopt.run`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from accelopt.cli import refuse_bad_config
from accelopt.confdir import CONFIG_DIR
from accelopt.data.sources import DataSourceError
from accelopt.errors import ConfigError
from accelopt.run.build import (
    build_datamodule,
    build_module,
    build_trainer,
    refuse_relaunch_in_multirun,
    seed_and_threads,
)
from accelopt.run.folder import check_writable, write_hydra_files
from accelopt.run.record import RunRecord
from accelopt.run.recorder import RunRecorder
from accelopt.run.resume import identity
from accelopt.run.session import (
    Job,
    Start,
    failure_recorded,
    fit,
    is_rank_zero,
    left_as_is,
    new_record,
    plan_start,
    run_lock,
)
from accelopt.run.signals import GracefulStop
from accelopt.run.timer import EpochTimer
from accelopt.schema import check_composed


def compose_config(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None
) -> DictConfig:
    """Compose ``conf/train.yaml`` with ``overrides`` as ``python -m accelopt.train`` would for one job.

    For notebooks, benchmarks and tests that call :func:`train` directly: Hydra's runtime
    information (the chosen config groups, which ``metrics.json`` records) is set as in a real
    run, and the run writes into ``output_dir``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.output_dir = str(output_dir)
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    check_composed(cfg)  # what the command line checks once Hydra has composed (accelopt.cli)
    return cfg


def build(cfg: DictConfig, out: Path, record: RunRecord, start: Start) -> Job:
    """The accepted run's objects: data (checked here), model, callbacks, trainer."""
    if is_rank_zero():
        write_hydra_files(out, cfg)  # accepted: Hydra's record of this run, only now
    seed_and_threads(cfg)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    timer, stop = EpochTimer(), GracefulStop()
    recorder = RunRecorder(record, timer, identity(cfg), out, start.targets, cfg.stop_at_target)
    trainer = build_trainer(cfg, out, [timer, recorder, stop])
    refuse_relaunch_in_multirun(trainer)
    record.resumed_from = start.ckpt_path
    return Job(trainer, module, datamodule, recorder, stop, start.ckpt_path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as ``cfg`` says; return the run record that is also in ``metrics.json``.

    Whatever happens, the run folder ends with a ``metrics.json`` saying so: ``completed``,
    ``diverged``, ``interrupted`` (SIGTERM / SIGINT: a checkpoint is saved, then ``SystemExit``
    with 128 + the signal number), or ``failed`` with the error (raised after writing), including
    errors before training starts; after every finished epoch it holds the record so far with
    status ``running`` (what a process killed outright leaves). A record of an earlier run that
    trained in the same folder is never replaced by a run that could not start. The folder is
    locked while the run uses it.
    """
    out = Path(cfg.output_dir).resolve()
    check_writable(out)
    record = new_record(cfg, out)
    with run_lock(out):
        with failure_recorded(record, out):
            start = plan_start(cfg, out)
            if start.reason is not None:
                return left_as_is(start, out)
            job = build(cfg, out, record, start)
        return fit(cfg, out, record, job)


@refuse_bad_config("accelopt")  # a config that does not fit its schema: one line, exit 2
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra's entry point; returns the final validation accuracy (what sweepers may optimise:
    never the test set).

    A config or data error prints its one-paragraph message (no traceback). A single run then
    exits with status 2. A multirun job returns NaN instead: its ``metrics.json`` says
    ``failed`` with the message, the other jobs go on, and sweepers count the job as a failed
    trial (raising would make Hydra's basic sweeper stop after the batch with a traceback).
    """
    try:
        record = train(cfg)
    except (ConfigError, DataSourceError) as err:
        print(f"accelopt: error: {err}", file=sys.stderr, flush=True)
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(2)
        return math.nan
    acc = record["final"].get("val/acc")  # None: diverged before any evaluation, or val_size=0
    return math.nan if acc is None else float(acc)  # Optuna marks a NaN trial as failed


if __name__ == "__main__":
    main()
