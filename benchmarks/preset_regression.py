"""The six NC presets' regression run: compare with a reference, write one, or measure drift.

The run, the platform fingerprint and the comparisons live in :mod:`accelopt.analysis.regression`
(shared with tests/test_preset_regression.py). A written reference records the fingerprint of the
machine that wrote it; the comparison is bit for bit where it matches, else to the tolerance.

    python benchmarks/preset_regression.py                     # compare with the reference
    python benchmarks/preset_regression.py --reference tests/data/preset_reference_pre_redesign.json
    python benchmarks/preset_regression.py --write tests/data/preset_reference_fingerprinted.json
    python benchmarks/preset_regression.py --drift             # rounding vs a real change

``--drift`` runs each preset as it is and then perturbed: by rounding only (other kernels' ISA
through ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA`` / ``MKL_ENABLE_INSTRUCTIONS`` in a
subprocess, the oneDNN convolution off, 2 threads, the initial weights scaled by 1 + 2⁻²³) and by
real changes (the NC step's cap 0.5 → 0.45, the rounds per phase → 2); it prints each one's largest relative
loss difference over the run and whether the counts changed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import accelopt.optim as optim
from accelopt.analysis import regression as reg

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "preset_reference.json"

# rounding-only perturbations run in a subprocess: environment variables read at import
ISA_RUNS = {
    "aten avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def _no_mkldnn(name: str) -> dict[str, Any]:
    with torch.backends.mkldnn.flags(enabled=False):
        return reg.run_preset(name)


def _changed(name: str) -> dict[str, Any]:
    """A real change: the NC step's cap 0.5 → 0.45 (CarmonStep.max_length / FixedStep.length)."""
    if name.endswith("_original"):
        return reg.run_preset(name, step=optim.FixedStep(length=0.45))
    return reg.run_preset(name, step=optim.CarmonStep(max_length=0.45))


IN_PROCESS: dict[str, Callable[[str], dict[str, Any]]] = {
    "mkldnn off": _no_mkldnn,
    "threads 2": lambda name: reg.run_preset(name, threads=2),
    "weights 1+2^-23": lambda name: reg.run_preset(name, nudge=2.0**-23),
    "CHANGE cap 0.45": _changed,
    "CHANGE rounds 2": lambda name: reg.run_preset(name, max_nc_steps=2),  # ancm 3, others 1
}


def _subprocess_runs(presets: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for label, env in ISA_RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ref.json"
            cmd = [sys.executable, __file__, "--write", str(path), "--presets", ",".join(presets)]
            subprocess.run(cmd, env={**os.environ, **env}, check=True, capture_output=True)
            out[label] = json.loads(path.read_text())["presets"]
    return out


def _counter_drift(ref: dict[str, Any], got: dict[str, Any]) -> float:
    """The largest relative difference of a ``CONTINUOUS`` counter (λ estimates, loss changes)."""
    pairs = [
        (float.fromhex(ref["counters"][k]), float.fromhex(got["counters"][k]))
        for k in reg.CONTINUOUS
        if k in ref["counters"]
    ]
    return max((abs(b - a) / abs(a) for a, b in pairs if math.isfinite(a) and a != 0), default=0.0)


def drift(presets: list[str]) -> None:
    """Print each perturbation's largest relative drift per preset (losses / continuous counters),
    and whether a count changed."""
    base = {name: reg.run_preset(name) for name in presets}
    runs = _subprocess_runs(presets)
    for label, fn in IN_PROCESS.items():
        runs[label] = {name: fn(name) for name in presets}
    print(f"{'perturbation':16s} " + " ".join(f"{n:>18s}" for n in presets))
    for label, res in runs.items():
        cells = []
        for name in presets:
            counts = reg.counter_diff(base[name], res[name], exact=False)
            mark = "*" if set(counts) - set(reg.CONTINUOUS) else " "
            losses, counters = (
                reg.loss_drift(base[name], res[name]),
                _counter_drift(base[name], res[name]),
            )
            cells.append(f"{losses:8.1e} / {counters:7.1e}{mark}")
        print(f"{label:16s} " + " ".join(cells))
    print(
        f"(losses / continuous counters; * = a count differs; RTOL {reg.RTOL:g}, {reg.RTOL_CONTINUOUS:g})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, default=None, help="write the reference here")
    ap.add_argument("--reference", type=Path, default=REFERENCE, help="compare with this")
    ap.add_argument("--presets", default=",".join(reg.PRESETS))
    ap.add_argument("--drift", action="store_true", help="measure rounding vs a real change")
    args = ap.parse_args()
    presets = args.presets.split(",")
    if args.drift:
        drift(presets)
        return 0
    results = {name: reg.run_preset(name) for name in presets}
    if args.write is not None:
        doc = {"platform": reg.fingerprint(), "steps": reg.STEPS, "presets": results}
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.write}")
        return 0
    ref = json.loads(args.reference.read_text())
    exact = reg.same_platform(ref)
    print(
        f"platform {'matches' if exact else 'differs'}: {'bit-identical' if exact else 'tolerant'}"
    )
    bad = 0
    for name, res in results.items():
        verdict = reg.compare(ref["presets"][name], res, exact=exact)
        bad += verdict not in ("identical", "within tolerance")
        print(f"{name:14s} {verdict}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
