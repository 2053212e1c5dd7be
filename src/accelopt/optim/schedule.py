r"""When the NC phase runs and what it does: :class:`Schedule`.

An NC phase is due at step ``k`` (the step index within the epoch, or the optimizer's own count)
when ``k % every == 0``; it runs ``"after"`` the base update (GOSE, Combined) or ``"before"`` it
(ANCM). The phase, with ``S_r`` the reference batch of round ``r``:

.. math::
    \begin{aligned}
        &\textbf{if not } \text{check}(\theta): \hat\theta \leftarrow \text{None};
            \textbf{ return} \\
        &\textbf{for } r = 0, 1, \dots, \text{max\_nc\_steps} - 1: \\
        &\quad \textbf{if } r > 0 \textbf{ and not } \text{recheck}(\theta): \textbf{ break}
            \quad (\text{counted in checks and rechecks}) \\
        &\quad (\lambda, v) \leftarrow \text{search}(\theta); \quad
            \textbf{if } \text{nothing found}: \textbf{ break} \\
        &\quad \text{NC step along } \pm v \text{ (step rule)};\quad
            \textbf{if } \text{rejected}: \textbf{ break} \\
        &\hat\theta \leftarrow \theta \quad (\text{re-anchor; only when } \gamma_{\text{prox}} > 0) \\
        &\textbf{if } \text{an NC step was taken and reset\_momentum}:
            \text{momentum buffers} \leftarrow 0
    \end{aligned}

Every search follows a check, so ``searches ≤ checks`` and ``steps + rejected ≤ searches``. While
an anchor ``θ̂`` is set, the base step's gradient gets the pull ``2γ_prox(θ − θ̂)`` of the
proximal term ``γ_prox‖θ − θ̂‖²`` (ANCM's almost-convex subproblem).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from accelopt.curvature.hvp import flat_grad
from accelopt.optim.component import Batch, Component, Probe, choice, count, flag, positive

if TYPE_CHECKING:
    from accelopt.optim.nc import NCEscape

__all__ = ["TIMINGS", "Schedule"]

TIMINGS = ("after", "before")


@dataclass
class Schedule(Component):
    """Cadence ``every``, ``timing``, rounds per phase (``max_nc_steps``), momentum reset and the
    proximal weight ``prox`` (``None``: the search's ``eps_h``)."""

    kind: ClassVar[str] = "schedule"
    every: int = 50
    timing: str = "after"
    max_nc_steps: int = 1
    reset_momentum: bool = False
    prox: float | None = 0.0

    def __post_init__(self) -> None:
        count("Schedule", "every", self.every, minimum=1)
        choice("Schedule", "timing", self.timing, TIMINGS)
        count("Schedule", "max_nc_steps", self.max_nc_steps, minimum=1)
        flag("Schedule", "reset_momentum", self.reset_momentum)
        if self.prox is not None:
            positive("Schedule", "prox", self.prox, allow_zero=True)
            self.prox = float(self.prox)

    def due(self, opt: NCEscape, k: int) -> bool:
        """Whether an NC phase runs at step ``k``."""
        return opt.check.schedules and k % self.every == 0

    def phase(self, opt: NCEscape, probe: Probe) -> None:
        """One NC phase: check, then up to ``max_nc_steps`` rounds of search and NC step."""
        c = opt.counters
        t0 = time.perf_counter()
        c["checks"] += 1
        fires = opt.check.passes(opt, probe)
        t1 = time.perf_counter()
        c["check_time_s"] += t1 - t0
        if not fires:
            opt.anchor = None
            c["time_s"] += t1 - t0
            return
        moved = self._rounds(opt, probe)
        if opt.prox > 0:
            opt.anchor = opt.flat_params().clone()
        if moved and self.reset_momentum:
            opt.zero_momentum()
        c["time_s"] += time.perf_counter() - t0

    def _rounds(self, opt: NCEscape, probe: Probe) -> bool:
        """The search rounds of a phase; True iff an NC step was kept."""
        moved = False
        ref_sq: float | None = None  # ‖g_S‖² at the phase's first search point (for re-checks)
        on_batch = opt.check.recheck_on_batch
        # the reference batch: the search's own batch (or, when it draws its own, the sign batch)
        size = opt.search.search_batch or opt.step_rule.sign_batch
        for r in range(self.max_nc_steps):
            if r > 0 and not on_batch and not self._recheck(opt, probe, None, None):
                break  # a check that does not need the batch: re-check before drawing it
            need = opt.search.needs_reference or (self.max_nc_steps > 1 and on_batch)
            batch = opt.search.reference(opt, probe(int(size))) if need else None  # type: ignore[arg-type]
            if r == 0:
                ref_sq = None if batch is None else float(batch.grad.dot(batch.grad))
            elif on_batch and not self._recheck(opt, probe, batch, ref_sq):
                break
            if not self._search_and_step(opt, probe, batch):
                break
            moved = True
        return moved

    @staticmethod
    def _recheck(opt: NCEscape, probe: Probe, batch: Batch | None, ref_sq: float | None) -> bool:
        c = opt.counters
        t0 = time.perf_counter()
        c["checks"] += 1
        c["rechecks"] += 1
        fires = opt.check.recheck(opt, probe, batch, ref_sq)
        c["check_time_s"] += time.perf_counter() - t0
        return fires

    @staticmethod
    def _search_and_step(opt: NCEscape, probe: Probe, batch: Batch | None) -> bool:
        """One search and (if it found a direction) one NC step; True iff the step was kept."""
        c = opt.counters
        t0 = time.perf_counter()
        result, closure = opt.search.run(opt, probe, batch)
        c["searches"] += 1
        c["hvps"] += result.hvps
        c["grads"] += result.grads
        if result.lam == result.lam:
            c["lambda_last"] = float(result.lam)  # the last estimate, found or not
            if result.found:
                c["lambda_min"] = float(result.lam)  # the last direction found
        c["search_time_s"] += time.perf_counter() - t0
        # warm start of the next search: the vector behind λ, found or not
        warm = result.direction if result.found else result.candidate
        if warm is not None:
            opt.direction = warm.detach().clone()
        if not result.found or result.direction is None:
            return False
        loss = grad = None
        if batch is not None:
            closure, loss, grad = batch.closure, batch.loss, batch.grad
        sign_batch = opt.step_rule.sign_batch
        own = opt.search.search_batch is None and batch is not None  # batch is the sign batch
        if sign_batch is not None and not own:
            closure, loss, grad = probe(sign_batch), None, None
        if grad is None:
            assert closure is not None
            loss, grad = flat_grad(closure, opt.params(), reduce=opt.reduce)
            c["grads"] += 1
        assert loss is not None
        return opt.step_rule.apply(opt, result.direction.detach(), result.lam, closure, loss, grad)
