"""The NC presets' regression run, the platform fingerprint and the comparisons with a reference.

Each preset (``gose``, ``ancm``, ``combined`` and their ``*_original`` variants) trains a small conv
net (float32, CPU, one thread, fixed seeds) on synthetic data for ``STEPS`` steps through the
public factory API (``GOSE(params, lr=..., variant=...)`` plus overrides), with a ``probe(n)``
that draws from its own seeded generator. ``every`` is lowered to 10 and, for the original presets,
the report's check is forced to pass (threshold 1e9) so that searches and NC steps really happen.
Losses and counters are stored as ``float.hex`` strings (exact); time counters are skipped.

Bit-identity is a same-machine property: a float32 kernel's rounding depends on the CPU's
instruction set, the torch / MKL / oneDNN build and the thread count. A reference therefore
records the :func:`fingerprint` of the machine that wrote it; :func:`compare` demands bit-identical
losses and counters only where the fingerprints match. Elsewhere the losses must agree to
``RTOL`` and the discrete counters exactly (``benchmarks/preset_regression.py --drift`` measures
how far rounding moves the losses; tests/test_preset_regression.py's docstring has the figures).

Used by tests/test_preset_regression.py and benchmarks/preset_regression.py; the references
they compare with are test data (``tests/data/preset_reference*.json``).
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import accelopt.optim as optim

PRESETS = ("gose", "ancm", "combined", "gose_original", "ancm_original", "combined_original")
STEPS = 80
N_SAMPLES, BATCH, LR = 512, 32, 0.05
TIME_KEYS = ("time_s", "check_time_s", "search_time_s")
# counters that are real numbers (compared to a tolerance off the reference's machine); every
# other counter is a count and must be equal everywhere
CONTINUOUS = (
    "lambda_min",
    "lambda_last",
    "loss_change",
    "heldout_curvature",
    "heldout_loss_change",
)
# Relative tolerance on each step's loss off the reference's machine (see the test's docstring):
# rounding-only perturbations (other ISA, other conv kernel, 1-ulp weights) moved the losses at
# most 2.3e-4 in 80 steps; a one-value preset change moved them by 1.9e-3 or more.
RTOL = 1e-3
RTOL_CONTINUOUS = 1e-2  # λ estimates, summed loss changes: rounding ≤ 1.7e-3, a change ≥ 2.2e-2
NAN = float("nan")
# counters added after the reference was written -> their value with their knobs off
ADDED = {
    "unverified": 0.0,
    "heldout_steps": 0.0,
    "heldout_down": 0.0,
    "heldout_curvature": NAN,
    "heldout_loss_change": NAN,
}
INIT_SCALE = 0.1  # small weights: near the saddle at 0, so even the report's search finds λ < 0
# environment variables that change which kernels (so which rounding) torch, MKL and oneDNN use
ISA_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")


def _cpu() -> tuple[str, str]:
    """The CPU's model name and a digest of its feature flags (``/proc/cpuinfo`` where present)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)
    name = model.group(1).strip() if model else platform.processor() or platform.machine()
    digest = " ".join(sorted(flags.group(1).split())) if flags else ""
    return name, hashlib.sha256(digest.encode()).hexdigest()[:16]


def _build(pattern: str) -> str:
    found = re.search(pattern, torch.__config__.show())
    return found.group(1) if found else "none"


def fingerprint(threads: int = 1) -> dict[str, Any]:
    """What decides a float32 CPU run's rounding: CPU, kernels' ISA, library builds, and the
    run's intra-op ``threads`` (:func:`run_preset` sets them; 1 by default)."""
    model, flags = _cpu()
    return {
        "machine": platform.machine(),
        "cpu": model,
        "cpu_flags_sha256": flags,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": _build(r"Math Kernel Library Version ([^\s]+)"),
        "onednn": _build(r"MKL-DNN (v[^\s]+)"),
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "threads": threads,
        "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
    }


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 10),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(INIT_SCALE)
    return net


def _data() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_SAMPLES, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (N_SAMPLES,), generator=g)
    return x, y


# The improved presets' search, step and schedule as they were when the references were written
# (their defaults were re-chosen on held-out data afterwards): pinned here, so this stays a test of
# the optimizer's code, independent of the presets' current values.
FIRST_SCHEDULE: dict[str, dict[str, Any]] = {
    "gose": {"timing": "after"},
    "combined": {"timing": "after"},
    "ancm": {"timing": "before", "max_nc_steps": 3, "reset_momentum": True, "prox": 0.05},
}


def overrides(name: str) -> dict[str, Any]:
    """``every=10``, the improved presets' first components, the original presets' check on."""
    method, _, variant = name.partition("_")
    if variant == "original":
        return {"every": 10, "check": optim.GradNormCheck(threshold=1e9)}
    schedule = optim.Schedule(every=10, **FIRST_SCHEDULE[method])
    return {"search": optim.Lanczos(), "step": optim.CarmonStep(), "schedule": schedule}


def run_preset(
    name: str, steps: int = STEPS, *, threads: int = 1, nudge: float = 0.0, **changes: Any
) -> dict[str, Any]:
    """Train one preset; return ``{"losses": [hex...], "counters": {key: hex}}``.

    ``changes`` replace keywords of :func:`overrides`; ``nudge`` scales the initial weights by
    ``1 + nudge`` (``2**-23``: one float32 ulp, a rounding-sized perturbation)."""
    torch.set_num_threads(threads)
    method, _, variant = name.partition("_")
    factory: Callable[..., Any] = {"gose": optim.GOSE, "ancm": optim.ANCM}.get(
        method, optim.Combined
    )
    model = _net()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0 + nudge)
    x, y = _data()
    loss_fn = nn.CrossEntropyLoss()
    knobs = {**overrides(name), **changes}
    opt = factory(model.parameters(), lr=LR, variant=variant or "improved", seed=3, **knobs)
    probe_gen = torch.Generator().manual_seed(2)

    def closure_over(idx: Tensor) -> Callable[[], Tensor]:
        return lambda: loss_fn(model(x[idx]), y[idx])

    def probe(n: int) -> Callable[[], Tensor]:
        return closure_over(torch.randint(0, N_SAMPLES, (n,), generator=probe_gen))

    batch_gen = torch.Generator().manual_seed(4)
    losses = []
    for k in range(steps):
        idx = torch.randint(0, N_SAMPLES, (BATCH,), generator=batch_gen)
        loss = opt.step(closure_over(idx), probe=probe, batch_idx=k)
        losses.append(float(loss).hex())
    counters = {k: float(v).hex() for k, v in opt.counters.items() if k not in TIME_KEYS}
    return {"losses": losses, "counters": counters}


def expected_counters(ref: dict[str, Any]) -> dict[str, str]:
    """The reference's counters plus the ``ADDED`` ones at their knobs-off values (hex)."""
    return {**{k: float(v).hex() for k, v in ADDED.items()}, **ref["counters"]}


def loss_drift(ref: dict[str, Any], got: dict[str, Any]) -> float:
    """The largest relative difference of a step's loss, max_k |got_k − ref_k| / |ref_k|."""
    pairs = zip(ref["losses"], got["losses"], strict=True)
    return max(abs(float.fromhex(b) - float.fromhex(a)) / abs(float.fromhex(a)) for a, b in pairs)


def counter_agrees(key: str, a: float, b: float, *, exact: bool) -> bool:
    """Counter ``key``: equal (NaN = NaN) if ``exact`` or a count, else to ``RTOL_CONTINUOUS``."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if exact or key not in CONTINUOUS:
        return a == b
    return math.isclose(a, b, rel_tol=RTOL_CONTINUOUS)


def counter_diff(
    ref: dict[str, Any], got: dict[str, Any], *, exact: bool
) -> dict[str, tuple[float | None, float | None]]:
    """The counters (reference's, now) that do not agree (:func:`counter_agrees`)."""
    want = {k: float.fromhex(v) for k, v in expected_counters(ref).items()}
    have = {k: float.fromhex(v) for k, v in got["counters"].items()}
    return {
        k: (want.get(k), have.get(k))
        for k in sorted(set(want) | set(have))
        if k not in want or k not in have or not counter_agrees(k, want[k], have[k], exact=exact)
    }


def same_platform(reference: dict[str, Any]) -> bool:
    """Whether the reference file was written on a machine with this one's fingerprint."""
    return reference.get("platform") == fingerprint()


def loss_difference(ref: dict[str, Any], got: dict[str, Any], *, exact: bool) -> str | None:
    """``None`` if the losses agree (bit for bit where ``exact``, else to ``RTOL``), else the
    first differing step."""
    for k, (a, b) in enumerate(zip(ref["losses"], got["losses"], strict=True)):
        x, y = float.fromhex(a), float.fromhex(b)
        if a != b if exact else not math.isclose(x, y, rel_tol=RTOL):
            worst = loss_drift(ref, got)
            return f"first differing step {k}: {x!r} vs {y!r} (largest drift {worst:.2e})"
    return None


def compare(ref: dict[str, Any], got: dict[str, Any], *, exact: bool = True) -> str:
    """``"identical"`` / ``"within tolerance"``, or a description of the first difference.

    ``exact``: losses and counters bit for bit (same machine); else losses to ``RTOL``, counts
    equal, the ``CONTINUOUS`` counters to ``RTOL_CONTINUOUS``."""
    losses = loss_difference(ref, got, exact=exact)
    if losses is not None:
        return losses
    diff = counter_diff(ref, got, exact=exact)
    if diff:
        return f"losses agree, counters differ (reference, now): {diff}"
    return "identical" if exact else "within tolerance"
