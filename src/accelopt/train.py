"""Hydra entry point: ``python -m accelopt.train [overrides]`` trains one model, or sweeps with ``-m``.

:func:`train` is the whole job for one composed config: it checks the config (every error
before any work starts), builds data module, network, optimizer, loggers and callbacks from
their ``_target_`` configs, fits, and writes the run record ``metrics.json`` (schema in
``docs/architecture.md``) to the run's output folder, whatever the outcome. A run whose loss
becomes non-finite ends cleanly as ``diverged``; an unexpected error is recorded as ``failed``
and then raised, so in a multirun the other jobs still run and keep their results.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from accelopt.run.recorder import EpochTimer, GracefulStop, RunRecorder
from accelopt.run.checkpoint import AtomicCheckpointIO
from accelopt.confdir import CONFIG_DIR
from accelopt.config import ConfigError, check_config
from accelopt.data.sources import DataSourceError
from accelopt.models.module import ClassifierModule, Diverged
from accelopt.optim_protocol import clip_settings, method_label, optimizer_factory, trainer_kwargs
from accelopt.run.record import RECORD_NAME, RecordError, RunRecord
from accelopt.run.resume import check_start, checkpoint_dir, identity, resolve_checkpoint
from accelopt.run.folder import RunLock, check_writable, write_hydra_files
from accelopt.targets import parse_targets
from accelopt.variant import hparams


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
    return cfg


def _hydra_choices() -> tuple[dict[str, Any], list[str]]:
    if not HydraConfig.initialized():
        return {}, []
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    return choices, list(hc.overrides.task)


def build_trainer(cfg: DictConfig, out: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning trainer of ``cfg``: hardware, loggers, callbacks, atomic checkpoint files.

    ``hardware.strategy`` is a Lightning strategy name (``auto``, ``ddp``, ...) or a config with
    a ``_target_`` (e.g. ``DDPStrategy`` with ``process_group_backend: gloo``).
    """
    hw = cfg.hardware
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    extra = [instantiate(cb) for cb in (cfg.get("callbacks") or {}).values()]
    strategy = hw.strategy
    if OmegaConf.is_dict(strategy):
        strategy = instantiate(strategy)
    has_ckpt = any(isinstance(cb, ModelCheckpoint) for cb in extra)
    return L.Trainer(
        enable_checkpointing=has_ckpt,  # callbacks=none: no checkpoints at all
        accelerator=hw.accelerator,
        devices=hw.devices,
        strategy=strategy,
        precision=hw.precision,
        num_nodes=hw.get("num_nodes", 1),
        logger=loggers or False,
        callbacks=callbacks + extra,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(out),
        use_distributed_sampler=False,  # the data module shards batches itself
        **trainer_kwargs(cfg.trainer),  # the gradient_clip_* keys go to the module
    )


def _refuse_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """DDP that starts its own processes (``hardware=ddp_cpu``/``ddp`` outside SLURM) cannot run
    inside a Hydra multirun: Lightning relaunches the command line, ``-m`` and all."""
    if trainer.world_size <= 1 or getattr(trainer.strategy, "launcher", None) is None:
        return
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError(
            "hardware with several processes (e.g. hardware=ddp_cpu or hardware=ddp) cannot be "
            "used in a local multirun (-m): Lightning would relaunch the whole sweep once per "
            "rank. Run each point as a single run, or sweep on SLURM (hydra/launcher=slurm with "
            "hydra.launcher.tasks_per_node = GPUs per node), where SLURM starts the ranks."
        )


# records of runs that trained there (``running``: one killed after writing an epoch)
KEEP = ("completed", "diverged", "interrupted", "running")


def _is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def _container(cfg: DictConfig) -> dict[str, Any]:
    try:
        return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - an unresolvable interpolation: keep it as written
        return dict(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]


def _new_record(cfg: DictConfig, out: Path) -> RunRecord:
    """The record of a run about to start: identity, config, status ``running``."""
    choices, overrides = _hydra_choices()
    lr, seed = cfg.optimizer.get("lr"), cfg.get("seed")
    numeric = isinstance(lr, int | float) and not isinstance(lr, bool)
    return RunRecord(
        method=method_label(cfg.optimizer, choices.get("optimizer")),
        dataset=str(cfg.dataset.get("name")),
        lr=float(lr) if numeric else math.nan,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else -1,
        config_groups=choices,
        overrides=overrides,
        config=_container(cfg),
        output_dir=str(out),
        env={"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")},
    )


def _existing(out: Path) -> RunRecord | None:
    try:
        return RunRecord.read(out / RECORD_NAME)
    except (RecordError, OSError):
        return None


def _one_line(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def _record_failure(record: RunRecord, out: Path, err: BaseException) -> None:
    """Write ``status: failed`` for a run that could not start, unless a run trained here."""
    earlier = _existing(out)
    if earlier is not None and earlier.status in KEEP:
        print(f"[accelopt] {out / RECORD_NAME} (an earlier {earlier.status} run) left as it was")
        return
    user = isinstance(err, ConfigError | DataSourceError)
    tb = None if user else "".join(traceback.format_exception(err))
    message = str(err) if user else _one_line(err)
    record.finalize("failed", stopped_at_step=0, error=message, traceback=tb)
    record.write(out)


@dataclass
class _Job:
    trainer: L.Trainer
    module: ClassifierModule
    datamodule: L.LightningDataModule
    recorder: RunRecorder
    stop: GracefulStop
    ckpt: str | None


def _build_net(cfg: DictConfig) -> torch.nn.Module:
    """The network of ``cfg.model``; a constructor's one-line ValueError becomes a ConfigError."""
    try:
        return instantiate(cfg.model)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError):
            raise ConfigError(f"{err.__cause__} (model={cfg.model._target_})") from None
        raise


def _prepare(cfg: DictConfig, out: Path, record: RunRecord) -> _Job | tuple[RunRecord, str]:
    """Check everything and build the job; or the earlier record (and why) if it is left as is."""
    check_config(cfg)
    targets = parse_targets(
        cfg.get("targets"), has_val=cfg.dataset.get("val_size", 1) != 0, stop=cfg.stop_at_target
    )
    ckpt_dir = checkpoint_dir(cfg, out)
    if (cfg.get("callbacks") or {}).get("checkpoint") is not None and "://" not in str(ckpt_dir):
        check_writable(ckpt_dir, "checkpoint folder")
    point = resolve_checkpoint(cfg, ckpt_dir, out)
    earlier = _existing(out)
    reason = check_start(cfg, point, earlier, out)
    if reason is not None and earlier is not None:
        return earlier, reason
    if _is_rank_zero():
        write_hydra_files(out, cfg)  # accepted: Hydra's record of this run, only now
    if cfg.hardware.get("num_threads"):
        torch.set_num_threads(int(cfg.hardware.num_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    except InstantiationException as err:  # Hydra wraps the constructor's own clear error
        if isinstance(err.__cause__, ConfigError | DataSourceError):
            raise err.__cause__ from None
        raise
    datamodule.prepare_data()  # data errors (missing files, failed download) surface here,
    datamodule.setup("fit")  # before any model or trainer is built
    module = ClassifierModule(
        net=_build_net(cfg),
        optimizer=optimizer_factory(cfg.optimizer),
        num_classes=cfg.dataset.num_classes,
        memory_format=cfg.hardware.get("memory_format", "contiguous"),
        scheduler=_container(cfg.scheduler) if cfg.get("scheduler") else None,
        protocol=cfg.optimizer.get("protocol"),
        **clip_settings(cfg.trainer),
    )
    timer, stop = EpochTimer(), GracefulStop()
    recorder = RunRecorder(record, timer, identity(cfg), out, targets, cfg.stop_at_target)
    trainer = build_trainer(cfg, out, [timer, recorder, stop])
    _refuse_relaunch_in_multirun(trainer)
    record.resumed_from = None if point is None else str(point.path)
    ckpt = None if point is None else str(point.path)
    return _Job(trainer, module, datamodule, recorder, stop, ckpt)


@contextlib.contextmanager
def _quiet_after_fit() -> Iterator[Callable[[], None]]:
    """Yields ``fit_ended``: from its call to the block's end, Ctrl+C is ignored.

    During fit Lightning and :class:`GracefulStop` handle SIGINT (an interrupted fit can end with
    GracefulStop's handler still set); after it, a second Ctrl+C would break the writing of the
    record and the loggers' hyper-parameters with a traceback, while the run is ending anyway.
    """
    main = threading.current_thread() is threading.main_thread()  # else: SIGINT left alone
    previous = signal.getsignal(signal.SIGINT) if main else None

    def fit_ended() -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        yield fit_ended
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _fit(cfg: DictConfig, out: Path, record: RunRecord, job: _Job) -> dict[str, Any]:
    """Fit, then finalise and write the record whatever happened; re-raise errors after."""
    trainer = job.trainer
    status, error, tb, stopped = "completed", None, None, None
    reraise: BaseException | None = None
    with _quiet_after_fit() as fit_ended:
        try:
            trainer.fit(job.module, datamodule=job.datamodule, ckpt_path=job.ckpt)
        except Diverged as exc:
            status, error, stopped = "diverged", str(exc), exc.step
            record.add_step_loss(exc.step, None)  # the non-finite loss that stopped the run
        except SystemExit as exc:  # SIGTERM (Lightning's SIGTERMException), SIGINT, 2nd Ctrl+C
            fit_ended()
            sig = job.stop.signal or (signal.SIGTERM if isinstance(exc, SIGTERMException) else 2)
            status, error = "interrupted", f"interrupted by {signal.Signals(sig).name}"
            reraise = SystemExit(128 + sig)
        except Exception as exc:  # recorded, then raised: other jobs of a sweep keep running
            status, error, tb, reraise = "failed", _one_line(exc), traceback.format_exc(), exc
        fit_ended()
        job.recorder.collect(trainer)  # duration_s: since fit started
        at = stopped if stopped is not None else trainer.global_step
        record.finalize(status, stopped_at_step=at, error=error, traceback=tb)
        result = record.to_dict()
        if trainer.is_global_zero:
            record.write(out)
            _log_hparams(trainer, cfg, result)
            _print_summary(result, out, _written(trainer, out))
    if reraise is not None:
        raise reraise
    return result


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
    record = _new_record(cfg, out)
    lock = RunLock(out) if _is_rank_zero() else None
    if lock is not None:
        lock.acquire()  # refused: ConfigError, and nothing is written
    try:
        try:
            job = _prepare(cfg, out, record)
        except Exception as err:
            if _is_rank_zero():
                _record_failure(record, out, err)
            raise
        if isinstance(job, tuple):
            earlier, reason = job
            print(
                f"[accelopt] {earlier.method} on {earlier.dataset}: {reason}; "
                f"{out / RECORD_NAME} left as it was",
                flush=True,
            )
            return earlier.to_dict()
        return _fit(cfg, out, record, job)
    finally:
        if lock is not None:
            lock.release()


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, record: dict[str, Any]) -> None:
    """Write the run's hyper-parameters with its final metrics (TensorBoard's HParams tab)."""
    params = {"method": record["method"], "status": record["status"], **hparams(cfg)}
    metrics = {
        f"hp/{k.replace('/', '_')}": v
        for k, v in record["final"].items()
        if isinstance(v, float | int) and math.isfinite(v)
    }
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):  # the HParams tab pairs them with final metrics
            lg.log_hyperparams(params, metrics=metrics or {"hp/completed": 0.0})
        else:
            lg.log_hyperparams(params)
        lg.save()


def _written(trainer: L.Trainer, out: Path) -> list[str]:
    """What this run wrote into its folder: record, config, checkpoint, logger files."""
    names = [RECORD_NAME, ".hydra/config.yaml"]
    ckpt = trainer.checkpoint_callback
    last = Path(str(getattr(ckpt, "dirpath", None) or out)) / "last.ckpt"
    if ckpt is not None and last.is_file():
        names.append(str(last.relative_to(out)) if last.is_relative_to(out) else str(last))
    for lg in trainer.loggers:
        kind = {TensorBoardLogger: "TensorBoard events", CSVLogger: "CSV metrics"}.get(type(lg))
        names.append(kind or f"{type(lg).__name__} logs")
    return names


def _print_summary(record: dict[str, Any], out: Path, written: list[str]) -> None:
    final, nc = record["final"], record.get("nc") or {}

    def fmt(v: Any, spec: str) -> str:
        return format(v, spec) if isinstance(v, float | int) else "n/a"

    lines = [
        f"[accelopt] {record['method']} on {record['dataset']} (lr {record['lr']}, seed "
        f"{record['seed']}): {record['status']} at step {record['stopped_at_step']}",
        f"[accelopt] test accuracy {fmt(final.get('test/acc'), '.4f')}, "
        f"{fmt(final.get('time/epoch_s'), '.2f')} s per epoch (training only)",
    ]
    if nc:
        lines.append(
            "[accelopt] NC: "
            + ", ".join(f"{k} {v:g}" for k, v in nc.items() if isinstance(v, float | int))
        )
    lines.append(f"[accelopt] run folder: {out} ({', '.join(written)})")
    print("\n".join(lines), flush=True)


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
