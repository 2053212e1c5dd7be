"""Data parallelism (issue 6): NC steps on 2 gloo processes equal one process on the whole batch.

1. ``torch.multiprocessing`` spawns 2 CPU processes (gloo); each holds half of every batch and
   probe, and its ``NCEscape`` all-reduces with the module's ``_all_reduce_mean``. In float64 the
   search (λ, direction up to sign) and the parameters after the NC step equal one process on
   the whole batch (tolerance 1e-9 relative; the only difference is the order of the sums), and
   the two ranks' parameters are bitwise identical.
2. ``hardware=ddp_cpu`` through ``python -m accelopt.train`` (Lightning's DDP, 2 processes of
   batch 16) against ``hardware=cpu`` with batch 32 (the same global batches: rank r takes every
   2nd index of the same permutation): same per-step losses and final parameters (float32,
   atol 1e-5), identical parameters on both ranks, ``metrics.json`` written once, by rank 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from accelopt.optim import NCEscape

from .conftest import FAST

WORLD = 2
N_BATCH, N_PROBE = 16, 32
SETTINGS: dict[str, dict[str, Any]] = {
    # improved defaults' machinery: Lanczos on one probe batch, acceptance test on it
    "lanczos": {"check": "always", "search": "lanczos", "search_batch": N_PROBE, "max_hvps": 12},
    # the report's gradient-norm check (mean of probe gradients) with Neon2's first-order search
    # and the sign (no acceptance test) from a fresh probe batch
    "grad_norm_neon2": {
        "check": "grad_norm",
        "threshold": 1e6,  # always passes: the search runs
        "batches": 2,
        "batch_size": N_PROBE,
        "search": "neon2",
        "search_batch": N_PROBE,
        "max_grads": 30,
        "eps_h": 0.0,
        "sign_batch": N_PROBE,
        "step": "fixed",
        "length": 0.05,
        "accept": False,
    },
}


def _problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small smooth CNN (tanh: negative curvature at init) and fixed float64 data."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(3 * 4 * 4, 3),
    ).double()
    x = torch.randn(N_BATCH, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N_BATCH,), generator=g)
    px = torch.randn(4 * N_PROBE, 1, 6, 6, generator=g, dtype=torch.float64)
    py = torch.randint(0, 3, (4 * N_PROBE,), generator=g)
    return net, x, y, px, py


def _nc_step(setting: str, rank: int, world: int) -> dict[str, torch.Tensor | float]:
    """One NCEscape step (check, search, NC step, base step) on this rank's share of the data."""
    from accelopt.models.module import _all_reduce_mean

    net, x, y, px, py = _problem()
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = NCEscape(
        net.parameters(),
        lr=0.05,
        every=1,
        timing="before",
        seed=3,
        reduce=_all_reduce_mean if world > 1 else None,
        **SETTINGS[setting],
    )
    xs, ys = x[rank::world], y[rank::world]
    drawn = [0]

    def probe(n: int):  # the data module's stream: the same global samples, rank's share
        idx = (drawn[0] + torch.arange(n)) % len(px)
        drawn[0] += n
        bx, by = px[idx][rank::world], py[idx][rank::world]
        return lambda: loss_fn(net(bx), by)

    loss = opt.step(lambda: loss_fn(net(xs), ys), probe=probe, batch_idx=0)
    params = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return {
        "lambda": opt.counters["lambda_min"],
        "steps": opt.counters["steps"],
        "direction": opt.direction.clone(),
        "params": params,
        "loss": float(loss),
    }


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {s: _nc_step(s, rank, world) for s in SETTINGS}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, str(out / "pg_init"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_two_ranks_on_half_batches_take_the_one_process_nc_step(
    setting: str, ddp_results: list[dict[str, Any]]
) -> None:
    single = _nc_step(setting, 0, 1)
    assert single["steps"] == 1  # an NC step was taken: the comparison means something
    start = torch.cat([p.detach().reshape(-1) for p in _problem()[0].parameters()])
    assert not torch.allclose(single["params"], start)
    for res in ddp_results:
        r = res[setting]
        assert r["steps"] == 1
        assert r["lambda"] == pytest.approx(single["lambda"], rel=1e-9, abs=1e-12)
        cos = torch.dot(r["direction"], single["direction"]) / (
            r["direction"].norm() * single["direction"].norm()
        )
        assert abs(float(cos)) == pytest.approx(1.0, abs=1e-9)
        torch.testing.assert_close(r["params"], single["params"], rtol=1e-9, atol=1e-12)
    # the ranks agree bitwise (every reduced quantity is the same all-reduce result)
    a, b = (res[setting] for res in ddp_results)
    assert torch.equal(a["params"], b["params"])
    assert torch.equal(a["direction"], b["direction"])
    assert a["lambda"] == b["lambda"]


def _launch(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "accelopt.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


OPTIMIZERS = {
    # NC path: flat_grad / HVPs / acceptance losses all-reduced through opt.reduce
    "gose": ["optimizer=gose", "optimizer.every=3", "optimizer.check=always"],
    # plain path: manual_backward, gradients averaged by DDP's own hooks
    "agd": ["optimizer=agd"],
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Both optimizers, DDP (2 x batch 16) and one process (batch 32), all launched at once."""
    root = tmp_path_factory.mktemp("ddp_cli")
    procs = {}
    for opt, opt_args in OPTIMIZERS.items():
        common = [*FAST, "logger=none", "trainer.limit_train_batches=6", *opt_args]
        runs = {
            "ddp": [*common, "hardware=ddp_cpu", "dataset.batch_size=16"],
            "one": [*common, "hardware=cpu", "dataset.batch_size=32"],
        }
        for kind, args in runs.items():
            name = f"{opt}_{kind}"
            procs[name] = _launch([*args, f"hydra.run.dir={root / name}"], root)
    diverge = [*FAST, "logger=none", "hardware=ddp_cpu", "optimizer=sgd", "optimizer.lr=1e4"]
    procs["diverge_ddp"] = _launch([*diverge, f"hydra.run.dir={root / 'diverge_ddp'}"], root)
    outputs = {name: p.communicate(timeout=300)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outputs[name][-3000:]}"
    return root, outputs


@pytest.mark.slow  # two real gloo processes per optimizer; the NC all-reduce stays in the default set (two_ranks)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_ddp_cpu_training_matches_one_process(
    optimizer: str, cli_runs: tuple[Path, dict[str, str]]
) -> None:
    root, outputs = cli_runs
    ddp_dir, one_dir = root / f"{optimizer}_ddp", root / f"{optimizer}_one"
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    one = json.loads((one_dir / "metrics.json").read_text())

    assert ddp["status"] == one["status"] == "completed"
    assert ddp["world_size"] == 2 and one["world_size"] == 1
    # metrics.json and the summary come from rank 0 only
    assert outputs[f"{optimizer}_ddp"].count("[accelopt] run folder:") == 1
    assert not list(ddp_dir.glob("metrics.json.tmp*"))
    digests = ddp["param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]

    assert ddp["stopped_at_step"] == one["stopped_at_step"] == 6
    assert ddp["train_loss"]["step"] == one["train_loss"]["step"]
    torch.testing.assert_close(
        torch.tensor(ddp["train_loss"]["value"]),
        torch.tensor(one["train_loss"]["value"]),
        rtol=1e-5,
        atol=1e-5,
    )
    if one["nc"]:
        assert one["nc"]["steps"] > 0  # NC steps happened and were the same on both
        for key in ("checks", "searches", "steps", "rejected", "hvps"):
            assert ddp["nc"][key] == one["nc"][key], key
    a = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(one_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in b["state_dict"].items():
        torch.testing.assert_close(a["state_dict"][key], value, rtol=1e-5, atol=1e-5)
    # the runs trained (the loss moved), so equal trajectories are not vacuous
    assert len(set(one["train_loss"]["value"])) == len(one["train_loss"]["value"])


def test_hardware_configs_build_the_intended_trainers(make_cfg) -> None:
    from lightning.pytorch.strategies import DDPStrategy

    from accelopt.run.build import build_trainer
    from accelopt.run.checkpoint import AtomicCheckpointIO

    cfg = make_cfg("hardware=ddp_cpu")
    trainer = build_trainer(cfg, Path(cfg.output_dir), [])  # builds only: nothing is launched
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._process_group_backend == "gloo"
    assert trainer.num_devices == 2 and trainer.strategy.root_device.type == "cpu"
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    for name in ("gpu", "ddp"):
        hw = make_cfg(f"hardware={name}").hardware
        assert hw.accelerator == "gpu" and hw.precision == "32-true"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_with_an_nc_optimizer(make_cfg) -> None:
    from accelopt.train import train

    record = train(
        make_cfg(
            "hardware=gpu",
            "logger=none",
            "trainer.limit_train_batches=4",
            "optimizer=gose",
            "optimizer.every=2",
            "optimizer.check=always",
        )
    )
    assert record["status"] == "completed" and record["nc"]["searches"] > 0


def test_ddp_divergence_stops_every_rank_cleanly(cli_runs: tuple[Path, dict[str, str]]) -> None:
    """The rank-mean loss decides, so both ranks stop at the same step (no hung collective)."""
    root, outputs = cli_runs
    rec = json.loads((root / "diverge_ddp" / "metrics.json").read_text())
    assert rec["status"] == "diverged"
    steps, values = rec["train_loss"]["step"], rec["train_loss"]["value"]
    assert steps == list(range(len(steps))) and len(steps) >= 2
    assert values[-1] is None and all(v is not None for v in values[:-1])
    assert rec["stopped_at_step"] == steps[-1]
    assert outputs["diverge_ddp"].count("[accelopt] run folder:") == 1
