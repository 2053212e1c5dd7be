"""Hydra entry point: ``python -m accelopt.train [overrides]`` trains one model, or sweeps with ``-m``.

:func:`train` is the whole job for one composed config: it checks the config (every error
before any work starts), builds data module, network, optimizer, loggers and callbacks from
their ``_target_`` configs, fits, and writes the run record ``metrics.json`` (schema in
``docs/architecture.md``) to the run's output folder, whatever the outcome. A run whose loss
becomes non-finite ends cleanly as ``diverged``; an unexpected error is recorded as ``failed``
and then raised, so in a multirun the other jobs still run and keep their results.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from accelopt.callbacks import EpochTimer, RunRecorder, nc_counters
from accelopt.checkpoint import AtomicCheckpointIO
from accelopt.config import ConfigError, check_config
from accelopt.data.sources import DataSourceError
from accelopt.models.module import ClassifierModule, Diverged

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # package data: works installed or editable


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


def _finite(x: Any) -> Any:
    """JSON-safe numbers: NaN / inf become None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _hydra_choices() -> tuple[dict[str, Any], list[str]]:
    if not HydraConfig.initialized():
        return {}, []
    hc = HydraConfig.get()
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    return choices, list(hc.overrides.task)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(_finite(data), indent=1))
    os.replace(tmp, path)


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
    return L.Trainer(
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
        **OmegaConf.to_container(cfg.trainer, resolve=True),
    )


CKPT_KEYWORDS = ("last", "best", "hpc")


def _ckpt_path(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path``: ``None``, a keyword Lightning resolves, or an existing file's path.

    ``last`` is resolved by Lightning: the newest ``last*.ckpt`` in the folders of the run's
    ``ModelCheckpoint`` callbacks (``<output_dir>/checkpoints``); when there is none, training
    starts from scratch (so ``ckpt_path=last`` can be set on every (re)submission of a job).
    """
    path = cfg.get("ckpt_path")
    if path is None or str(path) in CKPT_KEYWORDS:
        return None if path is None else str(path)
    if not Path(str(path)).expanduser().is_file():
        raise ConfigError(
            f"ckpt_path={str(path)!r} is not a file (resolved from {str(Path.cwd())!r}); give a "
            "checkpoint's path, or ckpt_path=last to resume from this run folder's last.ckpt."
        )
    return str(Path(str(path)).expanduser())


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as ``cfg`` says; return the run record that is also in ``metrics.json``."""
    check_config(cfg)
    ckpt_path = _ckpt_path(cfg)
    out = Path(cfg.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.hardware.get("num_threads"):
        torch.set_num_threads(int(cfg.hardware.num_threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.dataset, seed=cfg.seed)
    datamodule.prepare_data()  # data errors (missing files, failed download) surface here,
    datamodule.setup("fit")  # before any model or trainer is built
    module = ClassifierModule(
        net=instantiate(cfg.model),
        optimizer=instantiate(cfg.optimizer),
        num_classes=cfg.dataset.num_classes,
    )
    timer = EpochTimer()
    recorder = RunRecorder(timer)
    trainer = build_trainer(cfg, out, [timer, recorder])
    _refuse_relaunch_in_multirun(trainer)

    choices, overrides = _hydra_choices()
    record: dict[str, Any] = {
        "schema": 1,
        "status": "running",
        "error": None,
        "stopped_at_step": 0,
        "method": choices.get("optimizer", cfg.optimizer.get("_target_")),
        "dataset": cfg.dataset.name,
        "lr": float(cfg.optimizer.lr),
        "seed": int(cfg.seed),
        "config_groups": choices,
        "overrides": overrides,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "output_dir": str(out),
    }
    t0 = time.perf_counter()
    error: BaseException | None = None
    diverged_at = 0
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        record["status"] = "completed"
    except Diverged as exc:
        record["status"], record["error"] = "diverged", str(exc)
        diverged_at = exc.step
    except Exception as exc:  # recorded, then raised: other jobs of a sweep keep running
        record["status"] = "failed"
        record["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        record["traceback"] = traceback.format_exc()
        error = exc
    recorder.flush_steps(trainer, module)
    if record["status"] == "diverged" and diverged_at not in recorder.loss_steps[-1:]:
        recorder.loss_steps.append(diverged_at)  # the non-finite loss that stopped the run
        recorder.loss_values.append(None)

    epochs = recorder.epochs
    times = [e["time/epoch_s"] for e in epochs if e.get("time/epoch_s") is not None]
    final = {k: v for k, v in (epochs[-1] if epochs else {}).items() if "/" in k}
    final["time/epoch_s"] = sum(times) / len(times) if times else None
    record.update(
        stopped_at_step=diverged_at if record["status"] == "diverged" else trainer.global_step,
        epochs=epochs,
        train_loss={"step": recorder.loss_steps, "value": recorder.loss_values},
        final={k: v for k, v in final.items() if not k.startswith("nc/")},
        nc=nc_counters(trainer) or None,
        duration_s=time.perf_counter() - t0,
        resumed_from=trainer.ckpt_path,
        world_size=trainer.world_size,
    )
    if recorder.param_digests:
        record["param_digests"] = recorder.param_digests
    if trainer.is_global_zero:
        write_json_atomic(out / "metrics.json", record)
        _log_hparams(trainer, cfg, record)
        _print_summary(record, out)
    if error is not None:
        raise error
    return record


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, record: dict[str, Any]) -> None:
    """Write the run's hyper-parameters with its final metrics (TensorBoard's HParams tab)."""
    params = {
        "method": record["method"],
        "dataset": record["dataset"],
        "lr": record["lr"],
        "seed": record["seed"],
        "status": record["status"],
        "batch_size": cfg.dataset.batch_size,
        "activation": cfg.model.get("activation", ""),
    }
    metrics = {
        f"hp/{k.replace('/', '_')}": v
        for k, v in record["final"].items()
        if isinstance(v, float | int) and math.isfinite(v)
    }
    for lg in trainer.loggers:
        lg.log_hyperparams(params, metrics=metrics or {"hp/completed": 0.0})
        lg.save()


def _print_summary(record: dict[str, Any], out: Path) -> None:
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
    lines.append(f"[accelopt] run folder: {out} (metrics.json, config, TensorBoard events)")
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra's entry point; returns the final test accuracy (for sweepers that optimise it).

    A config or data error in a single run prints its one-paragraph message and exits with
    status 2 (no traceback); in a multirun it is raised, so Hydra records it for that job and
    runs the others.
    """
    try:
        record = train(cfg)
    except (ConfigError, DataSourceError) as err:
        if HydraConfig.get().mode != RunMode.RUN:
            raise
        print(f"accelopt: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    return record["final"].get("test/acc")


if __name__ == "__main__":
    main()
