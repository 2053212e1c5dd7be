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
        &\quad \textbf{if } \text{verify\_batch and } v^\top H_V v \ge -\epsilon_H/2
            \text{ on a fresh batch } V: \text{unverified}; \textbf{ break} \\
        &\quad \text{NC step along } \pm v \text{ (step rule)};\quad
            \textbf{if } \text{rejected}: \textbf{ break} \\
        &\quad \text{(heldout\_batch) judge the kept step on a fresh batch: } \texttt{nc\_log}
            \\
        &\hat\theta \leftarrow \theta \quad (\text{re-anchor; only when } \gamma_{\text{prox}} > 0) \\
        &\textbf{if } \text{an NC step was taken and reset\_momentum}:
            \text{momentum buffers} \leftarrow 0
    \end{aligned}

Every search follows a check, so ``searches ≤ checks`` and
``steps + rejected + unverified ≤ searches``. While
an anchor ``θ̂`` is set, the base step's gradient gets the pull ``2γ_prox(θ − θ̂)`` of the
proximal term ``γ_prox‖θ − θ̂‖²`` (ANCM's almost-convex subproblem).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

from accelopt.curvature.hvp import Closure, flat_grad
from accelopt.optim.component import Batch, Component, Probe, choice, count, flag, positive
from accelopt.optim.judge import heldout_judge, record_step, verify

if TYPE_CHECKING:
    from accelopt.optim.nc import NCEscape

__all__ = ["TIMINGS", "Schedule"]

TIMINGS = ("after", "before")


@dataclass
class Schedule(Component):
    """Cadence ``every``, ``timing``, rounds per phase (``max_nc_steps``), momentum reset, the
    proximal weight ``prox`` (``None``: the search's ``eps_h``), and the opt-in judgements on
    fresh probe batches (:mod:`accelopt.optim.judge`): ``verify_batch`` (use a direction only if
    its curvature there is < −ε_H/2) and ``heldout_batch`` (record each NC step's curvature and
    loss change there); ``None`` turns each off."""

    kind: ClassVar[str] = "schedule"
    every: int = 50
    timing: str = "after"
    max_nc_steps: int = 1
    reset_momentum: bool = False
    prox: float | None = 0.0
    verify_batch: int | None = None
    heldout_batch: int | None = None

    def __post_init__(self) -> None:
        count("Schedule", "every", self.every, minimum=1)
        choice("Schedule", "timing", self.timing, TIMINGS)
        count("Schedule", "max_nc_steps", self.max_nc_steps, minimum=1)
        flag("Schedule", "reset_momentum", self.reset_momentum)
        if self.prox is not None:
            positive("Schedule", "prox", self.prox, allow_zero=True)
            self.prox = float(self.prox)
        for name in ("verify_batch", "heldout_batch"):
            if getattr(self, name) is not None:
                count("Schedule", name, getattr(self, name), minimum=1)

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
            if not self._search_and_step(opt, probe, batch, int(size)):  # type: ignore[arg-type]
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

    def _search_and_step(self, opt: NCEscape, probe: Probe, batch: Batch | None, size: int) -> bool:
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
        v = result.direction.detach()
        entry: dict[str, Any] = {"step": opt._n_steps, "lambda": float(result.lam)}
        fresh = self.verify_batch is not None  # sign and acceptance on batches of their own
        if fresh:
            ok, entry["verify_curvature"] = verify(
                opt,
                probe(self.verify_batch),
                v,
                opt.search.eps_h,  # type: ignore[arg-type]
            )
            if not ok:
                c["unverified"] += 1
                return False
        closure, loss, grad = self._sign(opt, probe, batch, closure, size, fresh)
        rule = opt.step_rule
        if rule.accept and (rule.accept_batch is not None or fresh):
            closure, loss = probe(rule.accept_batch or size), None
        before = opt.flat_params() if self.heldout_batch is not None else None
        out = rule.apply(opt, v, result.lam, closure, loss, grad)
        if out is None:
            return False
        entry["alpha"] = out.length
        entry["search_loss_change"] = out.loss_change if rule.accept else None
        entry["heldout_curvature"] = entry["heldout_loss_change"] = None
        if before is not None:
            held = heldout_judge(opt, probe(self.heldout_batch), v, before)  # type: ignore[arg-type]
            entry["heldout_curvature"], entry["heldout_loss_change"] = held
        record_step(opt, entry)
        return True

    @staticmethod
    def _sign(
        opt: NCEscape,
        probe: Probe,
        batch: Batch | None,
        closure: Closure | None,
        size: int,
        fresh: bool,
    ) -> tuple[Closure | None, Tensor | None, Tensor]:
        """The sign batch ``(closure, loss, gradient)``: the search batch's, or a fresh one of
        ``sign_batch`` samples (with ``fresh``, of the search batch's size when that is None)."""
        loss = grad = None
        if batch is not None:
            closure, loss, grad = batch.closure, batch.loss, batch.grad
        sign_batch = opt.step_rule.sign_batch
        own = opt.search.search_batch is None and batch is not None  # batch is the sign batch
        if fresh and sign_batch is None and not own:
            sign_batch = size
        if sign_batch is not None and not own:
            closure, loss, grad = probe(sign_batch), None, None
        if grad is None:
            assert closure is not None
            loss, grad = flat_grad(closure, opt.params(), reduce=opt.reduce)
            opt.counters["grads"] += 1
        return closure, loss, grad
