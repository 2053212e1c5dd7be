"""The end of a run, for the people watching it: hyper-parameters with final metrics in the
loggers (TensorBoard's HParams tab), and a few lines on the console saying how it ended and what
it wrote."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig

from accelopt.run.record import RECORD_NAME
from accelopt.variant import hparams

__all__ = ["summarise"]


def summarise(trainer: L.Trainer, cfg: DictConfig, record: dict[str, Any], out: Path) -> None:
    """Log the run's hyper-parameters with its final metrics, and print its summary."""
    log_hparams(trainer, cfg, record)
    print_summary(record, out, written(trainer, out))


def log_hparams(trainer: L.Trainer, cfg: DictConfig, record: dict[str, Any]) -> None:
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


def written(trainer: L.Trainer, out: Path) -> list[str]:
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


def print_summary(record: dict[str, Any], out: Path, written: list[str]) -> None:
    """Print how the run ended: status, test accuracy, seconds per epoch, NC counters, files."""
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
