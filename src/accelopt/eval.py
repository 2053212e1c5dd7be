"""``python -m accelopt.eval ckpt_path=<file> | run_dir=<folder>``: evaluate a training checkpoint.

The data module and the network are rebuilt from the run's own config (Hydra's
``<run>/.hydra/config.yaml``, or the ``config`` of its ``metrics.json``), the checkpoint's weights
are loaded strictly, and Lightning's ``Trainer.validate`` / ``Trainer.test`` evaluate them on
the run's validation and test sets (CPU by default, ``hardware=gpu`` for one GPU). The metrics
are printed and added atomically to ``<run>/eval.json``, which keeps every evaluation of the run
(one entry per checkpoint, step, hardware and batch limit; re-evaluating the same one replaces
its entry). A missing or unreadable checkpoint, one whose saved identity (the config it was
trained with) differs from the run's config or that does not match the run's model, or a run
folder without a config is refused with one line and exit status 2, and writes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from accelopt.cli import refuse_bad_config
from accelopt.confdir import CONFIG_DIR
from accelopt.data.sources import DataSourceError
from accelopt.errors import ConfigError
from accelopt.fileio import atomic_write
from accelopt.models.module import ClassifierModule
from accelopt.run.resume import IDENTITY_KEY, identity, identity_diff
from accelopt.train import build_trainer

EVAL_FILE = "eval.json"
EVAL_SCHEMA = 2
LOCK_FILE = ".eval.lock"
LAST_CKPT = Path("checkpoints") / "last.ckpt"


class EvalError(ConfigError):
    """A checkpoint or run folder cannot be evaluated; the message says which and why."""


def locate(ckpt_path: str | None, run_dir: str | None) -> tuple[Path, Path]:
    """The checkpoint file and its run folder (the one holding the run's config)."""
    if ckpt_path is None and run_dir is None:
        raise EvalError(
            "nothing to evaluate: give ckpt_path=<checkpoint file> or run_dir=<run folder> "
            "(whose checkpoints/last.ckpt is evaluated)."
        )
    run = Path(str(run_dir)).expanduser() if run_dir is not None else None
    if run is not None and not run.is_dir():
        raise EvalError(f"run_dir={str(run_dir)!r} is not a folder; give a training run's folder.")
    ckpt = Path(str(ckpt_path)).expanduser() if ckpt_path is not None else run / LAST_CKPT
    if not ckpt.is_file():
        given = f"ckpt_path={str(ckpt_path)!r}" if ckpt_path is not None else f"{str(ckpt)!r}"
        raise EvalError(
            f"{given} is not a file (resolved from {str(Path.cwd())!r}); give a checkpoint "
            "written by accelopt.train, e.g. <run>/checkpoints/last.ckpt."
        )
    if run is None:
        parents = [ckpt.parent, ckpt.parent.parent]
        run = next((p for p in parents if _has_config(p)), None)
        if run is None:
            raise EvalError(
                f"no run config found next to ckpt_path={str(ckpt_path)!r} (looked for "
                f".hydra/config.yaml or metrics.json in {', '.join(map(str, parents))}); "
                "give run_dir=<the run folder> too."
            )
    return ckpt.resolve(), run.resolve()


def _has_config(folder: Path) -> bool:
    return (folder / ".hydra" / "config.yaml").is_file() or (folder / "metrics.json").is_file()


def load_run_config(run: Path) -> DictConfig:
    """The training config of the run in ``run`` (Hydra's copy, else ``metrics.json``'s)."""
    hydra_cfg = run / ".hydra" / "config.yaml"
    try:
        if hydra_cfg.is_file():
            cfg = OmegaConf.load(hydra_cfg)
        else:
            record = json.loads((run / "metrics.json").read_text())
            cfg = OmegaConf.create(record["config"])
    except Exception as err:  # noqa: BLE001 - any unreadable config is one refusal
        raise EvalError(
            f"the run config in {str(run)!r} is unreadable: {_first_line(err)}"
        ) from err
    missing = [k for k in ("dataset", "model", "seed") if k not in cfg]
    if missing:
        raise EvalError(
            f"the run config in {str(run)!r} lacks {', '.join(missing)}: it is not the config of "
            "an accelopt.train run."
        )
    with open_dict(cfg):
        cfg.output_dir = str(run)  # was ${hydra:runtime.output_dir}
    return cfg


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_checkpoint(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's contents (tensors and plain data only: ``weights_only`` loading)."""
    try:
        data = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - empty, truncated, not a torch file, ...
        raise EvalError(
            f"ckpt_path={str(ckpt)!r} is not a readable checkpoint ({_first_line(err)}); "
            "give a .ckpt file written by accelopt.train."
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise EvalError(
            f"ckpt_path={str(ckpt)!r} is not a Lightning checkpoint (no state_dict); give a .ckpt "
            "file written by accelopt.train."
        )
    return data


def check_weights(module: torch.nn.Module, state: dict[str, Any], ckpt: Path, model: str) -> None:
    """Refuse a state dict whose keys or shapes differ from ``module``'s (one line)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and (not torch.is_tensor(state[k]) or state[k].shape != v.shape)
    ]
    problems = [
        f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", extra),
            ("shapes (checkpoint vs model)", shapes),
        )
        if items
    ]
    if problems:
        raise EvalError(
            f"ckpt_path={str(ckpt)!r} does not match the run's model ({model}): "
            + "; ".join(problems)
        )


def check_identity(data: dict[str, Any], run_cfg: DictConfig, ckpt: Path, run: Path) -> None:
    """Refuse a checkpoint whose saved identity differs from the run config (one line).

    The identity (``accelopt_identity``, saved in every checkpoint by accelopt.train) is what
    the weights were trained on; the config is what eval rebuilds data and network from. A
    checkpoint without one (written by other code) is evaluated unchecked.
    """
    saved = data.get(IDENTITY_KEY)
    if not isinstance(saved, dict):
        return
    diff = identity_diff(saved, identity(run_cfg))
    if diff:
        raise EvalError(
            f"ckpt_path={str(ckpt)!r} was not written by the run in {str(run)!r}: its config "
            f"differs ({'; '.join(diff)}). Give the checkpoint's own run folder with "
            "run_dir=<run>."
        )


def _eval_trainer_cfg(run_cfg: DictConfig, cfg: DictConfig) -> DictConfig:
    """The run's config with this command's hardware, no loggers or callbacks, full eval sets."""
    hw = cfg.hardware
    strategy = hw.get("strategy", "auto")
    if OmegaConf.is_dict(strategy):
        strategy = strategy.get("_target_", "?")
    if hw.get("devices") != 1 or strategy != "auto":
        raise EvalError(
            f"hardware with devices={hw.get('devices')!r}, strategy={strategy!r}: accelopt.eval "
            "runs in one process; use hardware=cpu (default) or hardware=gpu."
        )
    trainer: dict[str, Any] = {
        "enable_progress_bar": bool(cfg.get("progress_bar", False)),
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    limit = cfg.get("limit_batches")
    if limit is not None:
        trainer.update(limit_val_batches=limit, limit_test_batches=limit)
    ecfg = run_cfg.copy()
    with open_dict(ecfg):
        ecfg.hardware = hw
        ecfg.logger = {}
        ecfg.callbacks = {}
        ecfg.trainer = trainer
    return ecfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the checkpoint ``cfg`` names; return the record also written to ``eval.json``."""
    ckpt, run = locate(cfg.get("ckpt_path"), cfg.get("run_dir"))
    run_cfg = load_run_config(run)
    ecfg = _eval_trainer_cfg(run_cfg, cfg)
    data = load_checkpoint(ckpt)
    check_identity(data, run_cfg, ckpt, run)
    if cfg.hardware.get("num_threads"):
        torch.set_num_threads(int(cfg.hardware.num_threads))
    datamodule = instantiate(run_cfg.dataset, seed=run_cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("validate")
    module = ClassifierModule(
        net=instantiate(run_cfg.model),
        optimizer=None,  # type: ignore[arg-type]  # evaluation never builds the optimizer
        num_classes=run_cfg.dataset.num_classes,
    )
    check_weights(module, data["state_dict"], ckpt, str(run_cfg.model.get("_target_", "?")))
    module.load_state_dict(data["state_dict"], strict=True)

    t0 = time.perf_counter()
    trainer = build_trainer(ecfg, run, [])
    metrics: dict[str, float] = {}
    for result in trainer.validate(module, datamodule=datamodule, verbose=False):
        metrics.update(result)
    for result in trainer.test(module, datamodule=datamodule, verbose=False):
        metrics.update(result)
    record = {
        "ckpt_path": str(ckpt),
        "run_dir": str(run),
        "epoch": data.get("epoch"),
        "global_step": data.get("global_step"),
        "metrics": {k: _finite(float(metrics[k])) for k in sorted(metrics, key=_metric_order)},
        "hardware": OmegaConf.to_container(cfg.hardware, resolve=True),
        "limit_batches": cfg.get("limit_batches"),
        "duration_s": time.perf_counter() - t0,
        "evaluated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    add_evaluation(run, record)
    _print_summary(record, run / EVAL_FILE)
    return record


def _same_evaluation(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("ckpt_path", "global_step", "hardware", "limit_batches")
    return all(a.get(k) == b.get(k) for k in keys)


@contextlib.contextmanager
def _run_lock(run: Path) -> Iterator[None]:
    """Serialise read-modify-write of ``eval.json`` between processes (POSIX ``flock``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the write itself is still atomic
        yield
        return
    with open(run / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_evaluations(run: Path) -> list[dict[str, Any]]:
    """The evaluations recorded in ``<run>/eval.json``, oldest first (``[]`` if none).

    A schema-1 file (one evaluation at top level) reads as a list of one. An unreadable file
    raises ``ValueError``.
    """
    path = run / EVAL_FILE
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("evaluations"), list):
        return list(data["evaluations"])
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):  # schema 1
        return [data]
    raise ValueError(f"{str(path)!r} is not an accelopt eval record")


def add_evaluation(run: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``record`` to ``<run>/eval.json`` (replacing an entry of the same evaluation).

    Earlier evaluations of other checkpoints, steps or hardware are kept. An existing file that
    cannot be read is not overwritten: it is renamed to ``eval.json.unreadable-<time>`` first.
    """
    path = run / EVAL_FILE
    with _run_lock(run):
        try:
            entries = read_evaluations(run)
        except (ValueError, OSError) as err:
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
            aside = path.with_name(f"{EVAL_FILE}.unreadable-{stamp}")
            path.replace(aside)
            print(
                f"[accelopt] {str(path)!r} was unreadable ({_first_line(err)}); kept as "
                f"{str(aside)!r}",
                file=sys.stderr,
                flush=True,
            )
            entries = []
        entries = [e for e in entries if not _same_evaluation(e, record)] + [record]
        atomic_write(path, json.dumps({"schema": EVAL_SCHEMA, "evaluations": entries}, indent=1))
    return entries


def _metric_order(name: str) -> tuple[int, str]:
    split, _, metric = name.partition("/")
    return ({"val": 0, "test": 1}.get(split, 2), metric)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _print_summary(record: dict[str, Any], path: Path) -> None:
    shown = ", ".join(
        f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in record["metrics"].items()
    )
    print(
        f"[accelopt] eval of {record['ckpt_path']} (epoch {record['epoch']}, step "
        f"{record['global_step']}): {shown}\n[accelopt] written: {path}",
        flush=True,
    )


@refuse_bad_config("accelopt.eval")  # a config that does not fit its schema: one line, exit 2
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra's entry point; a refusal prints one line and exits with status 2."""
    try:
        record = evaluate(cfg)
    except (ConfigError, DataSourceError) as err:
        print(f"accelopt.eval: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    return record["metrics"].get("test/acc")


if __name__ == "__main__":
    main()
