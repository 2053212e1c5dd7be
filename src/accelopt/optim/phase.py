r"""The NC phase: check → search → verify → NC step → judge → re-anchor, as :class:`Phase`.

Run when the :class:`~accelopt.optim.schedule.Schedule` says a phase is due; with ``S_r`` the
reference batch of round ``r``:

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
``steps + rejected + unverified ≤ searches``. The reference batch ``S_r`` has the search's
``search_batch`` samples; a search that draws its own batches (``search_batch = None``:
``VRPower``) has none, and the phase's batch (re-checks, sign) is then the step rule's
``sign_batch`` (:func:`reference_size`). The phase talks to the optimizer only through
:class:`~accelopt.optim.component.Context`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from accelopt.curvature.hvp import Closure, flat_grad
from accelopt.optim.anchor import Anchor
from accelopt.optim.check import Check
from accelopt.optim.component import Batch, Context, Probe
from accelopt.optim.judge import heldout_judge, record_step, verify
from accelopt.optim.schedule import Schedule
from accelopt.optim.search import Search
from accelopt.optim.step import StepRule

__all__ = ["Phase", "reference_size"]


def reference_size(search: Search, step: StepRule) -> int:
    """Samples of a round's reference batch: the search's ``search_batch``, or (a search that
    draws its own batches) the step rule's ``sign_batch``."""
    size = search.search_batch if search.search_batch is not None else step.sign_batch
    if size is None:
        raise ValueError(
            f"NCEscape: invalid sign_batch=None with search={search!r} (it has no single "
            "search batch); accepted: an integer >= 1 (the report: 64)"
        )
    return int(size)


@dataclass
class Phase:
    """One NC phase's parts: the schedule's knobs, the check, search, step rule and anchor."""

    schedule: Schedule
    check: Check
    search: Search
    step: StepRule
    anchor: Anchor

    def run(self, ctx: Context, probe: Probe) -> None:
        """One NC phase: check, then up to ``max_nc_steps`` rounds of search and NC step."""
        c = ctx.counters
        t0 = time.perf_counter()
        c["checks"] += 1
        fires = self.check.passes(ctx, probe)
        t1 = time.perf_counter()
        c["check_time_s"] += t1 - t0
        if not fires:
            self.anchor.drop()
            c["time_s"] += t1 - t0
            return
        moved = self._rounds(ctx, probe)
        self.anchor.reanchor(ctx)
        if moved and self.schedule.reset_momentum:
            ctx.zero_momentum()
        c["time_s"] += time.perf_counter() - t0

    def _rounds(self, ctx: Context, probe: Probe) -> bool:
        """The search rounds of a phase; True iff an NC step was kept."""
        moved = False
        ref_sq: float | None = None  # ‖g_S‖² at the phase's first search point (for re-checks)
        on_batch = self.check.recheck_on_batch
        rounds = self.schedule.max_nc_steps
        size = reference_size(self.search, self.step)
        for r in range(rounds):
            if r > 0 and not on_batch and not self._recheck(ctx, probe, None, None):
                break  # a check that does not need the batch: re-check before drawing it
            need = self.search.needs_reference or (rounds > 1 and on_batch)
            batch = self.search.reference(ctx, probe(size)) if need else None
            if r == 0:
                ref_sq = None if batch is None else float(batch.grad.dot(batch.grad))
            elif on_batch and not self._recheck(ctx, probe, batch, ref_sq):
                break
            if not self._search_and_step(ctx, probe, batch, size):
                break
            moved = True
        return moved

    def _recheck(
        self, ctx: Context, probe: Probe, batch: Batch | None, ref_sq: float | None
    ) -> bool:
        c = ctx.counters
        t0 = time.perf_counter()
        c["checks"] += 1
        c["rechecks"] += 1
        fires = self.check.recheck(ctx, probe, batch, ref_sq)
        c["check_time_s"] += time.perf_counter() - t0
        return fires

    def _search(
        self, ctx: Context, probe: Probe, batch: Batch | None
    ) -> tuple[Any, Closure | None]:
        """One search, counted; the warm start of the next one is the vector behind λ."""
        c = ctx.counters
        t0 = time.perf_counter()
        result, closure = self.search.run(ctx, probe, batch)
        c["searches"] += 1
        c["hvps"] += result.hvps
        c["grads"] += result.grads
        if result.lam == result.lam:
            c["lambda_last"] = float(result.lam)  # the last estimate, found or not
            if result.found:
                c["lambda_min"] = float(result.lam)  # the last direction found
        c["search_time_s"] += time.perf_counter() - t0
        warm = result.direction if result.found else result.candidate
        if warm is not None:
            ctx.direction = warm.detach().clone()
        return result, closure

    def _search_and_step(self, ctx: Context, probe: Probe, batch: Batch | None, size: int) -> bool:
        """One search and (if it found a direction) one NC step; True iff the step was kept."""
        sched, rule = self.schedule, self.step
        result, closure = self._search(ctx, probe, batch)
        if not result.found or result.direction is None:
            return False
        v = result.direction.detach()
        entry: dict[str, Any] = {"step": ctx.n_steps, "lambda": float(result.lam)}
        fresh = sched.verify_batch is not None  # sign and acceptance on batches of their own
        if sched.verify_batch is not None:
            eps_h = self.search.eps_h
            ok, entry["verify_curvature"] = verify(
                ctx, probe(sched.verify_batch), v, eps_h, method=sched.hvp_method
            )
            if not ok:
                ctx.counters["unverified"] += 1
                return False
        closure, loss, grad = self._sign(ctx, probe, batch, closure, size, fresh)
        if rule.accept and (rule.accept_batch is not None or fresh):
            closure, loss = probe(rule.accept_batch or size), None
        before = ctx.flat_params() if sched.heldout_batch is not None else None
        out = rule.apply(ctx, v, result.lam, closure, loss, grad)
        if out is None:
            return False
        entry["alpha"] = out.length
        entry["search_loss_change"] = out.loss_change if rule.accept else None
        entry["heldout_curvature"] = entry["heldout_loss_change"] = None
        if before is not None and sched.heldout_batch is not None:
            held = heldout_judge(ctx, probe(sched.heldout_batch), v, before, sched.hvp_method)
            entry["heldout_curvature"], entry["heldout_loss_change"] = held
        record_step(ctx, entry)
        return True

    def _sign(
        self,
        ctx: Context,
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
        sign_batch = self.step.sign_batch
        own = self.search.search_batch is None and batch is not None  # batch is the sign batch
        if fresh and sign_batch is None and not own:
            sign_batch = size
        if sign_batch is not None and not own:
            closure, loss, grad = probe(sign_batch), None, None
        if grad is None:
            assert closure is not None
            loss, grad = flat_grad(closure, ctx.params(), reduce=ctx.reduce)
            ctx.counters["grads"] += 1
        return closure, loss, grad
