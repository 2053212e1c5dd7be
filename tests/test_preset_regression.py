"""Every NC preset gives bit-identical per-step losses and counters to the stored references.

``tests/data/preset_reference_pre_redesign.json`` was written by
``python benchmarks/preset_regression.py --write ...`` from the single-class optimizer, before
its redesign into components; ``tests/data/preset_reference.json`` after the counter fixes that
followed (same losses; ``lambda_min`` only for directions found, the new ``lambda_last``, and
``grads`` counting the HVP batches of the report's power iteration). Counters added later
(``regression.ADDED``: ``unverified``, ``heldout_*``) are checked at their knobs-off values; the
losses are still bit-identical to both files. See that script for the run.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "preset_regression", ROOT / "benchmarks" / "preset_regression.py"
)
assert _spec is not None and _spec.loader is not None
regression = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regression)

DATA = ROOT / "tests" / "data"
REFERENCE = json.loads((DATA / "preset_reference.json").read_text())
PRE_REDESIGN = json.loads((DATA / "preset_reference_pre_redesign.json").read_text())
FIXED = ("grads", "lambda_min", "lambda_last")  # the counters the fixes changed
POWER_GRADS = 2 * 2 * 8  # seed_power: outer 2 × (m + m) HVP batches of m = 8, one gradient each


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    return {
        name: regression.run_preset(name, steps=REFERENCE["steps"]) for name in regression.PRESETS
    }


@pytest.mark.parametrize("name", regression.PRESETS)
def test_preset_bit_identical_to_the_reference(name: str, runs: dict[str, dict]) -> None:
    ref, got = REFERENCE["presets"][name], runs[name]
    assert got["losses"] == ref["losses"], regression.compare(ref, got)
    assert got["counters"] == regression.expected_counters(ref), regression.compare(ref, got)
    assert float.fromhex(got["counters"]["steps"]) > 0  # the run exercises NC steps


@pytest.mark.parametrize("name", regression.PRESETS)
def test_preset_bit_identical_to_the_single_class_optimizer(
    name: str, runs: dict[str, dict]
) -> None:
    old, got = PRE_REDESIGN["presets"][name], runs[name]
    assert got["losses"] == old["losses"], regression.compare(old, got)
    new = {k: float.fromhex(v) for k, v in got["counters"].items() if k not in regression.ADDED}
    before = {k: float.fromhex(v) for k, v in old["counters"].items()}
    assert {k: v for k, v in new.items() if k not in FIXED} == {
        k: v for k, v in before.items() if k not in FIXED
    }
    # the old lambda_min was the last estimate, found or not: now lambda_last
    assert new["lambda_last"] == before["lambda_min"]
    assert new["lambda_min"] < 0  # a direction found (λ ≤ −ε_H/2 < 0 or, with ε_H = 0, λ < 0)
    if new["steps"] == new["searches"]:  # every search found: the last estimate was found too
        assert new["lambda_min"] == before["lambda_min"]
    power = name.endswith("_seed")
    assert new["grads"] - before["grads"] == (POWER_GRADS * new["searches"] if power else 0)
