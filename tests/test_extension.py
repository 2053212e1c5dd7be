"""The extension example (examples/my_study): a user's own model and optimizer, run as documented.

The commands are read from examples/my_study/README.md (its ``export PYTHONPATH=`` line and every
``python -m accelopt.train`` line of its code block), so the text and this test cannot drift;
fast overrides are appended and each command runs in a subprocess from the repository root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from .conftest import FAST, ROOT, compose_cfg

EXAMPLE = ROOT / "examples" / "my_study"
README = EXAMPLE / "README.md"
FAST_QUIET = [*FAST, "logger=none"]
# TwoConvNet on the synthetic set (1×12×12 images, 4 classes, width 8, s = 12 // 4 = 3),
# counted by its docstring's formula (9·c·w + w) + (9·w·2w + 2w) + (2w·s²·k + k)
SYNTHETIC_PARAMS = (9 * 1 * 8 + 8) + (9 * 8 * 16 + 16) + (16 * 3 * 3 * 4 + 4)


def _code_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def _documented_pythonpath() -> str:
    """The README's ``export PYTHONPATH=...`` value, with ``$PWD`` as the repository root."""
    found = [ln for ln in _code_lines() if ln.startswith("export PYTHONPATH=")]
    assert len(found) == 1, f"expected one 'export PYTHONPATH=' line in {README}, got {found}"
    value = shlex.split(found[0].split("=", 1)[1], comments=True)[0]
    return value.replace("$PWD", str(ROOT))


def _documented_commands() -> list[list[str]]:
    commands = [
        shlex.split(ln, comments=True)
        for ln in _code_lines()
        if ln.startswith("python -m accelopt.train")
    ]
    assert len(commands) == 2, f"expected the two documented commands in {README}: {commands}"
    return commands


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Each documented command as written, plus FAST_QUIET, in its own folder (side by side)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_documented_pythonpath(), env.get("PYTHONPATH")) if p
    )
    jobs = []
    for i, cmd in enumerate(_documented_commands()):
        out = tmp_path_factory.mktemp(f"run{i}")
        args = [sys.executable, *cmd[1:], *FAST_QUIET, f"hydra.run.dir={out}"]
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        jobs.append((cmd, out, proc))
    for cmd, _, proc in jobs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{shlex.join(cmd)} failed:\n{output}"
        assert "[accelopt] signum on synthetic" in output, output
    return [out for _, out, _ in jobs]


def test_documented_commands_train_the_users_model_and_optimizer(runs: list[Path]) -> None:
    for out in runs:
        record = json.loads((out / "metrics.json").read_text())
        assert record["status"] == "completed"
        assert record["method"] == "signum"
        assert record["config_groups"]["model"] == "two_conv"
        assert record["config"]["model"]["_target_"] == "my_study.models.TwoConvNet"
        assert record["config"]["optimizer"]["_target_"] == "my_study.optim.Signum"
        # the trained network is the user's: its checkpoint has TwoConvNet's parameter count
        ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu")
        params = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        assert sum(v.numel() for v in params.values()) == SYNTHETIC_PARAMS
        assert "net.classifier.weight" in params
        # and Signum stepped it: its state is an exp_avg per parameter (torch's SGD keeps a
        # momentum_buffer instead)
        opt_state = ckpt["optimizer_states"][0]["state"]
        assert len(opt_state) == len(params)
        assert all(set(s) == {"exp_avg"} for s in opt_state.values())


def test_run_folder_is_named_after_the_users_options() -> None:
    """The default run folder (conf/train.yaml's template) carries the user's option names."""
    search = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
    try:
        compose_cfg([search, "model=two_conv", "optimizer=signum", "dataset=synthetic"])
        assert HydraConfig.get().run.dir.endswith("_synthetic_two_conv_signum")
    finally:
        GlobalHydra.instance().clear()


def test_signum_update_rule_closed_form() -> None:
    """Two Signum steps against m ← β m + (1 − β) g; θ ← θ − γ sign(m), computed by hand."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from my_study.optim import Signum
    finally:
        sys.path.remove(str(EXAMPLE))
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt = Signum([theta], lr=0.1, momentum=0.5)
    theta.grad = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    opt.step()  # m = [1.5, -0.5, 1.0]: θ = [0.9, -1.9, 0.4]
    theta.grad = torch.tensor([-4.0, -1.0, -1.0], dtype=torch.float64)
    opt.step()  # m = [-1.25, -0.75, 0.0]: sign = [-1, -1, 0]
    torch.testing.assert_close(
        theta.detach(), torch.tensor([1.0, -1.8, 0.4], dtype=torch.float64), rtol=0, atol=1e-15
    )
    with pytest.raises(ValueError, match="momentum=1.0"):
        Signum([theta], lr=0.1, momentum=1.0)
