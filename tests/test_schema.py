"""The config schemas (accelopt.schema) and their refusals at the command line (accelopt.cli).

A wrong type or an unknown key is refused while Hydra composes, naming the key; the schemas change
no shipped config (not a key, not a value's type); every Lightning Trainer argument still passes
with ``++trainer.<arg>=``; the command line says it in one line with exit status 2, for a single
run, for ``accelopt.eval`` and for any point of a ``-m`` sweep before its first job.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from accelopt import schema
from accelopt.cli import FULL_ERROR, refusal, refuse_bad_config, sweep_points
from accelopt.schema import SchemaError, check_composed
from accelopt.train import train

from .conftest import CONF_DIR, FAST, ROOT, compose_cfg, run_cli

TYPED_GROUPS = ("dataset", "hardware", "scheduler", "model")  # the group node itself
TYPED_ENTRIES = ("callbacks", "logger")  # each entry of the group node
OPTIONS = [
    (g, f.stem)
    for g in (*TYPED_GROUPS, *TYPED_ENTRIES)
    for f in sorted((CONF_DIR / g).glob("*.yaml"))
]


def _yaml_only(group: str, option: str) -> Any:
    """The option as its yaml files alone make it (sibling defaults followed, schemas skipped)."""
    node = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
    defaults = list(node.pop("defaults", []))
    if "_self_" not in defaults:
        defaults.append("_self_")
    merged = OmegaConf.create()
    for entry in defaults:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, node)
        elif not str(entry).startswith("/schema/"):
            merged = OmegaConf.merge(merged, _yaml_only(group, str(entry)))
    return OmegaConf.to_container(merged, resolve=False)


def _exact(value: Any) -> str:
    """JSON with the types: 0 and 0.0, 1 and "1" differ."""
    return json.dumps(value, sort_keys=True)


# -- the schemas change no shipped config, and type every shipped option -----------------------
@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_a_shipped_option_composes_to_exactly_its_yaml_and_is_typed(group, option, tmp_path):
    cfg = compose_cfg([f"{group}={option}"], tmp_path)
    node = cfg[group]
    assert _exact(OmegaConf.to_container(node, resolve=False)) == _exact(_yaml_only(group, option))
    typed = [node] if group in TYPED_GROUPS else [node[k] for k in node]
    for sub in typed:  # each names its schema (callbacks=none and logger=none have no entry)
        assert dataclasses.is_dataclass(OmegaConf.get_type(sub)), f"{group}={option}: untyped"


def test_the_run_config_is_train_yaml_and_typed(tmp_path: Path) -> None:
    cfg = compose_cfg([], tmp_path)
    own = OmegaConf.load(CONF_DIR / "train.yaml")
    assert _exact(OmegaConf.to_container(cfg.trainer)) == _exact(
        OmegaConf.to_container(own.trainer)
    )
    assert tuple(own.trainer) == schema.TRAINER_KEYS
    assert OmegaConf.get_type(cfg) is schema.TrainConf
    assert OmegaConf.get_type(cfg.trainer) is schema.TrainerConf
    root = {k for k in own if k not in ("defaults", "hydra")}
    groups = {str(k) for d in own.defaults if OmegaConf.is_dict(d) for k in d if " " not in k}
    assert set(cfg) == root | (groups - {"experiment", "hparams_search", "debug"})


# -- a wrong type or an unknown key is refused while Hydra composes ----------------------------
@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc'", "an integer or null"),
        (["trainer.max_steps=abc"], "trainer.max_steps='abc' is invalid", "an integer"),
        (["dataset.batch_size=1.5"], "dataset.batch_size=1.5", "an integer"),
        (["dataset.batch_size=true"], "dataset.batch_size=True", "an integer"),
        (["dataset.mean=[0.5,x]"], "dataset.mean[1]='x'", "a number"),
        (["hardware.num_threads=two"], "hardware.num_threads='two'", "an integer or null"),
        (["scheduler=step", "scheduler.gamma=fast"], "scheduler.gamma='fast'", "a number"),
        (["scheduler=step", "scheduler.milestones=[3,x]"], "scheduler.milestones[1]='x'", "int"),
        (["model=resnet20", "model.depth=deep"], "model.depth='deep'", "an integer"),
        (
            ["callbacks.checkpoint.every_n_train_steps=2.5"],
            "callbacks.checkpoint.every_n_train_steps=2.5",
            "an integer or null",
        ),
        (["logger.tensorboard.default_hp_metric=maybe"], "default_hp_metric='maybe'", "true or"),
        (["seed=one"], "seed='one'", "an integer"),
        (["stop_at_target=perhaps"], "stop_at_target='perhaps'", "true or false"),
        (["dataset.batchsize=64"], "dataset.batchsize is not a key", "dataset.batch_size?"),
        (["hardware.numthreads=1"], "hardware.numthreads is not a key", "num_threads?"),
    ],
)
def test_a_wrong_type_or_key_is_refused_at_compose_time(overrides, key, expected, tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(overrides, tmp_path)
    line = refusal(err.value)
    assert line is not None and "\n" not in line
    assert key in line and expected in line, line


def test_the_valid_values_of_those_keys_compose(tmp_path: Path) -> None:
    cfg = compose_cfg(
        ["trainer.max_epochs=null", "dataset.batch_size=64", "hardware.num_threads=null"], tmp_path
    )
    assert cfg.trainer.max_epochs is None and cfg.dataset.batch_size == 64


# -- the trainer: any Lightning Trainer argument, typed; a misspelt one refused ----------------
def test_the_trainer_arguments_are_lightnings() -> None:
    params = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    checked = {f.name for f in dataclasses.fields(schema.trainer_schema())}
    assert checked == params - set(schema.SET_ELSEWHERE) and set(schema.SET_ELSEWHERE) < params


@pytest.mark.parametrize(
    "override",
    [
        "++trainer.gradient_clip_val=1.0",
        "++trainer.gradient_clip_algorithm=value",
        "++trainer.accumulate_grad_batches=2",
        "++trainer.max_time=00:00:01:00",
        "++trainer.fast_dev_run=true",
        "++trainer.benchmark=false",
        "trainer.min_epochs=1",  # the trainer node is open: no + needed
    ],
)
def test_any_trainer_argument_composes(override: str, tmp_path: Path) -> None:
    cfg = compose_cfg([override], tmp_path)
    key = override.lstrip("+").split("=")[0].split(".")[1]
    assert key in cfg.trainer


@pytest.mark.parametrize(
    ("override", "phrase"),
    [
        ("++trainer.gradint_clip_val=1.0", "trainer.gradint_clip_val is not an argument of"),
        ("trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
        ("++trainer.accumulate_grad_batches=two", "trainer.accumulate_grad_batches='two' is inv"),
        ("++trainer.detect_anomaly=sometimes", "it must be true or false"),
        ("++trainer.precision=bf16-mixed", "use hardware.precision=bf16-mixed"),
        ("++trainer.logger=false", "use logger=<option>"),
    ],
)
def test_a_misspelt_or_misplaced_trainer_key_is_refused(override, phrase, tmp_path):
    with pytest.raises(SchemaError) as err:
        compose_cfg([override], tmp_path)
    assert phrase in str(err.value) and "\n" not in str(err.value)


def test_a_value_left_missing_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"dataset\.batch_size is missing \(\?\?\?\)"):
        check_composed(OmegaConf.create({"dataset": {"batch_size": "???"}, "trainer": {}}))


def test_gradient_clipping_with_plus_plus_still_trains(tmp_path: Path) -> None:
    over = ["logger=none", "callbacks=none", "++trainer.gradient_clip_val=1.0"]
    over += ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    record = train(compose_cfg([*FAST, *over], tmp_path))
    assert record["status"] == "completed" and record["stopped_at_step"] == 2
    assert record["config"]["trainer"]["gradient_clip_val"] == 1.0


# -- the command line: one line, exit status 2 -------------------------------------------------
def test_the_decorated_entry_point_exits_2_with_one_line(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(FULL_ERROR, "0")
    seen = []

    def hydra_main() -> None:  # as @hydra.main: Hydra raises while HYDRA_FULL_ERROR=1
        seen.append(os.environ[FULL_ERROR])
        compose_cfg(["dataset.batch_size=1.5"], tmp_path)

    with pytest.raises(SystemExit) as code:
        refuse_bad_config("accelopt")(hydra_main)()
    assert code.value.code == 2 and seen == ["1"] and os.environ[FULL_ERROR] == "0"
    err = capsys.readouterr().err.strip()
    assert err.startswith("accelopt: error: dataset.batch_size=1.5 is invalid") and "\n" not in err


def test_sweep_points_are_jobs_of_hydras_sweep_covering_every_value() -> None:
    params = {"optimizer": "heavyball,agd", "seed": "1,2,3"}
    task = ["optimizer.lr=0.1,0.2", "seed=5", "dataset=synthetic"]  # the command line wins
    cfg = OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}})
    points = sweep_points(cfg)
    lines = [f"{k}={v}" for k, v in params.items()] + task
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)[0]
    assert all(sorted(p) in [sorted(j) for j in jobs] for p in points)  # Hydra's own product
    assert {o for p in points for o in p} == {o for j in jobs for o in j}  # every value once
    assert len(points) == 3 < len(jobs) == 4
    assert (
        sweep_points(OmegaConf.create({"hydra": {"sweeper": {}, "overrides": {"task": task[1:]}}}))
        == []
    )


def _one_line(proc: subprocess.CompletedProcess, prog: str, *phrases: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "UserWarning: Callback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1 and all(p in lines[0] for p in phrases), proc.stderr[-2000:]


@pytest.mark.slow  # subprocesses: each imports torch and Lightning afresh (~10-30 s)
def test_cli_single_run_and_sweep_refuse_a_bad_value_before_any_job(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = run_cli([*FAST, "trainer.max_epochs=abc", f"hydra.run.dir={run}"], cwd=tmp_path)
    _one_line(proc, "accelopt", "trainer.max_epochs='abc' is invalid", "an integer or null")
    assert not run.exists()
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "logger=none", "dataset.batch_size=32,1.5", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, cwd=tmp_path)
    _one_line(proc, "accelopt", "dataset.batch_size=1.5 is invalid", "an integer")
    assert not sweep.exists()  # refused before the first job (which would have trained)


@pytest.mark.slow
def test_cli_eval_refuses_a_bad_value(tmp_path: Path) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "accelopt.eval", "hardware.num_threads=two", "run_dir=x"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    _one_line(proc, "accelopt.eval", "hardware.num_threads='two' is invalid")
