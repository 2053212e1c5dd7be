"""A cadence (when a phase is due) as a component: the Plateau worked example of
docs/optimizers.md, run as the doc shows it, and the doc's copy checked against the source."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from accelopt.optim import GOSE, NCEscape, Plateau

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "optimizers.md"
INCLUDE = re.compile(r"<!-- include: (\S+) (\w+) -->\n```python\n(.*?)```", re.S)


def test_the_doc_shows_the_source_verbatim() -> None:
    found = INCLUDE.findall(DOC.read_text())
    assert [(path, name) for path, name, _ in found] == [
        ("src/accelopt/optim/cadence.py", "plateau")
    ]
    path, name, shown = found[0]
    source = (ROOT / path).read_text()
    start, end = f"# --8<-- [start:{name}]\n", f"# --8<-- [end:{name}]"
    assert shown.rstrip() == source.split(start)[1].split(end)[0].rstrip()


def _phases(losses: Callable[[int], float], steps: int = 20) -> list[int]:
    """The steps at which a Plateau(window=3) cadence ran a phase (check 'always', a search that
    finds nothing on a flat loss), the loss of step k being ``losses(k)``."""
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = NCEscape([p], lr=0.1, check="always", cadence=Plateau(window=3), search_batch=2)
    at = []
    for k in range(steps):
        before = opt.counters["checks"]
        value = losses(k)
        opt.step(lambda v=value: v + 0.0 * (p**2).sum(), probe=lambda n: lambda: (p**2).sum())
        if opt.counters["checks"] > before:
            at.append(k)
    return at


def test_a_flat_loss_is_a_plateau_every_two_windows() -> None:
    assert _phases(lambda k: 1.0) == [6, 12, 18]


def test_a_falling_loss_is_never_a_plateau() -> None:
    assert _phases(lambda k: 0.9**k) == []


def test_plateau_validates_and_round_trips() -> None:
    with pytest.raises(ValueError, match=r"Plateau: invalid window=0; accepted: an integer >= 1"):
        Plateau(window=0)
    p = nn.Parameter(torch.zeros(2))
    opt = GOSE([p], cadence="plateau", window=4)  # by name, knob routed to it
    assert isinstance(opt.cadence, Plateau) and opt.cadence.window == 4
    opt.cadence.losses = [1.0, 2.0]
    fresh = GOSE([nn.Parameter(torch.zeros(2))], cadence="plateau", window=4)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.cadence.losses == [1.0, 2.0]


def test_the_yaml_replaces_only_the_cadence(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("optimizer=gose", "optimizer/cadence=plateau", "+optimizer.cadence.window=7")
    opt = instantiate(cfg.optimizer)(nn.Linear(2, 2).parameters())
    ref = GOSE(nn.Linear(2, 2).parameters())
    assert isinstance(opt, GOSE) and opt.cadence == Plateau(window=7)
    assert opt.schedule == ref.schedule and opt.schedule.verify_batch is not None
