"""The negative-curvature (NC) escape wrapper around a base optimizer (DESIGN.md §3)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from accelopt.curvature.hvp import HessianOperator, flat_grad, flatten, unflatten_like
from accelopt.curvature.search import SearchResult, lanczos, neon2, seed_power
from accelopt.curvature.step import step_length, take_nc_step
from accelopt.optim.check import NoiseCheck, seed_check

__all__ = ["NCEscape"]

Closure = Callable[[], Tensor]
Probe = Callable[[int], Closure]
Reduce = Callable[[Tensor], Tensor] | None

BASES = ("sgd", "heavyball", "nesterov", "adam")
TIMINGS = ("after", "before")
CHECKS = ("noise", "seed", "always", "never")
SEARCHES = ("lanczos", "neon2", "seed_power")
NC_STEPS = ("carmon", "fixed")
COUNTER_KEYS = (
    "checks",
    "rechecks",
    "searches",
    "steps",
    "rejected",
    "hvps",
    "lambda_min",
    "time_s",
    "check_time_s",
    "search_time_s",
    "grads",
    "loss_change",
)


@dataclass
class _Batch:
    """A reference batch at the current θ: its closure, loss, gradient and (Lanczos) operator."""

    closure: Closure
    loss: Tensor
    grad: Tensor
    op: HessianOperator | None


def _choice(name: str, value: Any, accepted: tuple[str, ...]) -> str:
    if value not in accepted:
        raise ValueError(f"unknown {name}={value!r}; accepted: {', '.join(map(repr, accepted))}")
    return value


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, int | float) and ok and math.isfinite(value)):
        need = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"invalid {name}={value!r}; accepted: a finite number {need}")


def _count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"invalid {name}={value!r}; accepted: an integer >= {minimum}")


class NCEscape(Optimizer):
    r"""A base optimizer plus negative-curvature escape: check → search → NC step, on a schedule.

    Each call of :meth:`step` does, with :math:`\theta` the parameters, :math:`g_t` the (reduced)
    minibatch gradient of ``closure`` and ``k`` = ``batch_idx`` (or the internal step count):

    .. math::
        \begin{aligned}
            &\textbf{if } k \bmod K = 0 \textbf{ and timing = before: } \text{NC phase} \\
            &g_t \leftarrow \nabla f_{B_t}(\theta_t)
                + 2\gamma_{\text{prox}}\,(\theta_t - \hat\theta)
                \quad (\text{the pull only while an anchor } \hat\theta \text{ is set}) \\
            &\theta_{t+1} \leftarrow \text{base.step}(\theta_t, g_t)
                \quad (\text{SGD / heavy ball / Nesterov / Adam, torch's own code}) \\
            &\textbf{if } k \bmod K = 0 \textbf{ and timing = after: } \text{NC phase}
        \end{aligned}

    The NC phase (``S_r`` a fresh probe batch of ``search_batch`` samples per round; for
    ``seed_power`` the sign batch plays its part):

    .. math::
        \begin{aligned}
            &\textbf{if not } \text{check}(\theta): \hat\theta \leftarrow \text{None};
                \textbf{ return} \\
            &\textbf{for } r = 0, 1, \dots, \text{max\_nc\_steps} - 1: \\
            &\quad \textbf{if } r > 0 \textbf{ and not } \text{recheck}(\theta): \textbf{ break}
                \quad (\text{counted in checks and rechecks}) \\
            &\quad (\lambda, v) \leftarrow \text{search}(\theta)
                \quad \text{(smallest eigenpair estimate of } H = \nabla^2 f_{S_r}) \\
            &\quad \textbf{if } \lambda > -\epsilon_H: \textbf{ break} \\
            &\quad d \leftarrow -v \textbf{ if } \langle g_{S_r}, v\rangle > 0 \textbf{ else } v
                \quad (\text{or } g \text{ from a fresh probe of sign\_batch}) \\
            &\quad \alpha \leftarrow 2|\lambda| / L_2 \ \text{(carmon)}
                \ \text{or}\ \alpha_0\ \text{(fixed)} \\
            &\quad \theta \leftarrow \theta + \alpha d;\ \textbf{if } \text{accept and }
                f_{S_r}(\theta) > f_{S_r}(\theta_{\text{old}}):
                \text{halve } \alpha \text{ up to } \text{backtracks} \text{ times, else undo
                (rejected) and break} \\
            &\hat\theta \leftarrow \theta \quad (\text{re-anchor; only stored when }
                \gamma_{\text{prox}} > 0) \\
            &\textbf{if } \text{an NC step was taken and reset\_momentum}:
                \text{momentum buffers} \leftarrow 0
        \end{aligned}

    **Every search is preceded by a check**, so ``searches ≤ checks`` and
    ``steps + rejected ≤ searches`` always hold. Carmon et al.'s NC descent is meant for the
    small-gradient region only, and an NC step of length ``2|λ|/L₂`` changes the gradient by about
    ``2λ²/L₂``; so before each further round of a phase (``max_nc_steps > 1``) the iterate is
    re-checked. The re-check of the ``"noise"`` check is free: building the next round's
    :class:`~accelopt.curvature.hvp.HessianOperator` computes ``g_{S_r}`` anyway (Neon2 and
    ``seed_power`` pay one gradient for it, which then serves as the sign / acceptance gradient),
    and it passes iff

    .. math::
        \|g_{S_r}\|^2 \le \|g_{S_0}\|^2
            + \max\big(0,\ \rho\hat\sigma^2 + \tau^2 - \widehat{\|\nabla f\|^2}\big)

    with ``σ̂², ‖∇f‖²^`` the estimates of the noise check that opened the phase (see
    :class:`~accelopt.optim.check.NoiseCheck`). ``S_0`` and ``S_r`` have the same size, hence
    the same noise floor ``E‖g_S − ∇f‖²``, so the difference estimates
    ``‖∇f(θ_r)‖² − ‖∇f(θ_0)‖²``: the re-check passes while the true gradient has grown by no more
    than the margin by which the phase's check passed (``ρσ̂² + τ² − ‖∇f‖²^``), i.e. while the
    iterate is still in the small-gradient region the check accepted. On a deterministic problem
    (no noise) it passes only while ``‖g‖`` has not grown at all. The ``"seed"`` check re-runs
    itself (``check_batches`` gradients), ``"always"`` passes.

    The check is ``"noise"`` (free; see :class:`accelopt.optim.check.NoiseCheck`), ``"seed"``
    (the report's: ‖mean of ``check_batches`` probe gradients of ``check_batch_size``‖ <
    ``check_threshold``), ``"always"`` or ``"never"``. The search is ``"lanczos"`` (on one fixed
    probe batch of ``search_batch``, ≤ ``max_hvps`` HVPs, warm-started from the last search's
    vector), ``"neon2"`` (≤ ``max_hvps`` gradients on one probe batch) or ``"seed_power"`` (the
    report's power iteration; knobs ``power_*``). ``GOSE``, ``ANCM`` and ``Combined`` in
    :mod:`accelopt.optim.presets` are named settings of these knobs.

    Args:
        params: parameters or parameter groups (as for any torch optimizer).
        lr: learning rate of the base optimizer (``param_groups`` are the base's own, so LR
            schedulers see and change the real value).
        base: ``"sgd"`` (no momentum), ``"heavyball"`` (``SGD(momentum)``), ``"nesterov"``
            (``SGD(momentum, nesterov=True)``), ``"adam"``, or any ``torch.optim.Optimizer``
            class (constructed as ``base(params, lr=lr, **base_kwargs)``).
        momentum, betas, eps, weight_decay: the base's hyper-parameters (``betas``/``eps``:
            Adam only; ``momentum``: heavy ball / Nesterov only).
        base_kwargs: further keyword arguments for the base optimizer.
        every: check cadence ``K`` (≥ 1): an NC phase runs when ``k % K == 0``.
        timing: ``"after"`` the base update (GOSE, Combined) or ``"before"`` it (ANCM).
        check, check_ratio, check_tol, check_batches, check_batch_size, check_threshold: the
            small-gradient check and its knobs (see above).
        search, search_batch, max_hvps, eps_h: the search, its batch, its budget (HVPs for
            Lanczos, gradients for Neon2) and the curvature threshold ``ε_H ≥ 0``.
        hvp_method: ``"double_backward"`` or ``"forward_over_reverse"`` (Lanczos only).
        power_outer, power_inner, power_step, power_lam, power_batch: ``seed_power``'s knobs.
        neon2_eta, neon2_sigma: Neon2's step η and start radius σ.
        nc_step: ``"carmon"`` (``α = 2|λ|/l2``) or ``"fixed"`` (``α = nc_length``).
        nc_length, l2, max_length: the fixed length, the Hessian-Lipschitz constant ``L₂`` and an
            optional cap on ``α``.
        sign_batch: ``None`` to take ``g_S`` (sign and acceptance test) on the search batch, or
            the size of a fresh probe batch for them (the report: 64).
        accept, backtracks: the acceptance test on that batch and how often to halve ``α``.
        reset_momentum: zero the base's momentum (``momentum_buffer`` dropped; Adam's ``exp_avg``
            zeroed) after a phase that moved the parameters.
        max_nc_steps: NC steps per phase (Carmon et al.: repeat until no direction is found).
        prox: the proximal weight ``γ_prox`` of ``f(θ) + γ_prox‖θ − θ̂‖²``; ``None`` = ``eps_h``.
        seed: seed of the optimizer's own ``torch.Generator`` (search starts).
        reduce: ``Tensor -> Tensor`` applied to every gradient, HVP and acceptance-test loss
            (DDP all-reduce mean); also settable as the attribute ``opt.reduce``.

    ``step(closure, probe=None, batch_idx=None)``: ``closure()`` returns the minibatch loss with
    its graph (no ``backward``); ``probe(n)`` returns such a closure over ``n`` fresh training
    samples (a fixed batch: calling it twice evaluates the same samples). A probe is required
    whenever an NC phase is due (unless ``check="never"``).

    ``counters`` (cumulative): ``checks`` (scheduled checks plus re-checks), ``rechecks``,
    ``searches``, ``steps`` (NC steps taken), ``rejected``,
    ``hvps`` (Hessian-vector products, or Neon2 gradients), ``lambda_min`` (λ estimate of the last
    search; NaN before any), ``time_s`` (all NC work), ``check_time_s``, ``search_time_s``,
    ``grads`` (extra gradients: seed checks, operator set-up, sign batches) and ``loss_change``
    (sum of ``f_S(after) − f_S(before)`` over accepted NC steps with the acceptance test on).
    """

    needs_hvp = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        *,
        base: str | type[Optimizer] = "heavyball",
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        base_kwargs: dict[str, Any] | None = None,
        every: int = 50,
        timing: str = "after",
        check: str = "noise",
        check_ratio: float = 1.0,
        check_tol: float = 0.0,
        check_batches: int = 8,
        check_batch_size: int = 128,
        check_threshold: float = 1e-3,
        search: str = "lanczos",
        search_batch: int = 64,
        max_hvps: int = 20,
        eps_h: float = 0.05,
        hvp_method: str = "double_backward",
        neon2_eta: float = 0.05,
        neon2_sigma: float = 1e-3,
        power_outer: int = 2,
        power_inner: int = 8,
        power_step: float = 0.5,
        power_lam: float = 5.0,
        power_batch: int = 8,
        nc_step: str = "carmon",
        nc_length: float = 0.5,
        l2: float = 1.0,
        max_length: float | None = None,
        sign_batch: int | None = None,
        accept: bool = True,
        backtracks: int = 3,
        reset_momentum: bool = False,
        max_nc_steps: int = 1,
        prox: float | None = 0.0,
        seed: int = 0,
        reduce: Reduce = None,
    ) -> None:
        _positive("lr", lr)
        if isinstance(base, str):
            _choice("base", base, BASES)
        elif not (isinstance(base, type) and issubclass(base, Optimizer)):
            raise ValueError(
                f"invalid base={base!r}; accepted: {', '.join(map(repr, BASES))} "
                "or a torch.optim.Optimizer subclass"
            )
        _positive("momentum", momentum, allow_zero=True)
        _positive("weight_decay", weight_decay, allow_zero=True)
        _count("every", every, minimum=1)
        _choice("timing", timing, TIMINGS)
        _choice("check", check, CHECKS)
        _positive("check_ratio", check_ratio, allow_zero=True)
        _positive("check_tol", check_tol, allow_zero=True)
        _count("check_batches", check_batches, minimum=1)
        _count("check_batch_size", check_batch_size, minimum=1)
        _positive("check_threshold", check_threshold)
        _choice("search", search, SEARCHES)
        _count("search_batch", search_batch, minimum=1)
        _count("max_hvps", max_hvps, minimum=4 if search == "neon2" else 1)
        _positive("neon2_eta", neon2_eta)
        _positive("neon2_sigma", neon2_sigma)
        _positive("eps_h", eps_h, allow_zero=True)
        _choice("hvp_method", hvp_method, ("double_backward", "forward_over_reverse"))
        _count("power_outer", power_outer, minimum=1)
        _count("power_inner", power_inner, minimum=1)
        _positive("power_step", power_step)
        _positive("power_lam", power_lam)
        _count("power_batch", power_batch, minimum=1)
        _choice("nc_step", nc_step, NC_STEPS)
        _positive("nc_length", nc_length)
        _positive("l2", l2)
        if max_length is not None:
            _positive("max_length", max_length)
        if sign_batch is not None:
            _count("sign_batch", sign_batch, minimum=1)
        elif search == "seed_power":
            raise ValueError(
                "invalid sign_batch=None with search='seed_power' (it has no single search batch); "
                "accepted: an integer >= 1 (the report: 64)"
            )
        _count("backtracks", backtracks, minimum=0)
        _count("max_nc_steps", max_nc_steps, minimum=1)
        if prox is not None:
            _positive("prox", prox, allow_zero=True)
        _count("seed", seed, minimum=0)
        if reduce is not None and not callable(reduce):
            raise ValueError(f"invalid reduce={reduce!r}; accepted: None or a callable")

        kwargs = dict(base_kwargs or {})
        if base == "sgd":
            cls: type[Optimizer] = torch.optim.SGD
            kwargs = {"weight_decay": weight_decay, **kwargs}
        elif base in ("heavyball", "nesterov"):
            cls = torch.optim.SGD
            kwargs = {
                "momentum": momentum,
                "nesterov": base == "nesterov",
                "weight_decay": weight_decay,
                **kwargs,
            }
        elif base == "adam":
            cls = torch.optim.Adam
            kwargs = {"betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, **kwargs}
        else:
            cls = base  # type: ignore[assignment]
        self.base: Optimizer = cls(params, lr=lr, **kwargs)

        # Share the base's param_groups (same list, same dicts) and state.
        super().__init__(self.base.param_groups, {})
        self._link()

        self.every = every
        self.timing = timing
        self.check = check
        self.check_batches = check_batches
        self.check_batch_size = check_batch_size
        self.check_threshold = float(check_threshold)
        self.search = search
        self.search_batch = search_batch
        self.max_hvps = max_hvps
        self.eps_h = float(eps_h)
        self.hvp_method = hvp_method
        self.neon2 = {"eta": float(neon2_eta), "sigma": float(neon2_sigma)}
        self.power = {
            "outer": power_outer,
            "inner": power_inner,
            "step": float(power_step),
            "lam": float(power_lam),
            "batch": power_batch,
        }
        self.nc_step = nc_step
        self.nc_length = float(nc_length)
        self.l2 = float(l2)
        self.max_length = None if max_length is None else float(max_length)
        self.sign_batch = sign_batch
        self.accept = bool(accept)
        self.backtracks = backtracks
        self.reset_momentum = bool(reset_momentum)
        self.max_nc_steps = max_nc_steps
        self.prox = float(self.eps_h if prox is None else prox)
        self.seed = seed
        self.reduce: Reduce = reduce

        ref = self._params()[0]
        self._generator = torch.Generator(device=ref.device)
        self._generator.manual_seed(seed)
        self._noise = NoiseCheck(ratio=check_ratio, tol=check_tol)
        self._n_steps = 0
        self._anchor: Tensor | None = None
        self._direction: Tensor | None = None
        self.counters: dict[str, float] = {k: 0.0 for k in COUNTER_KEYS}
        self.counters["lambda_min"] = float("nan")

    # ----------------------------------------------------------------- plumbing
    def _link(self) -> None:
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self.defaults = self.base.defaults
        self._linked = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "_linked", False):
            self.base.add_param_group(param_group)
        else:
            super().add_param_group(param_group)

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _flat_params(self) -> Tensor:
        return flatten([p.detach() for p in self._params()])

    @torch.no_grad()
    def _set_flat(self, vec: Tensor) -> None:
        params = self._params()
        for p, v in zip(params, unflatten_like(vec, params), strict=True):
            if p.requires_grad:
                p.copy_(v)

    def _reduce_loss(self, loss: Tensor) -> float:
        loss = loss.detach().reshape(1)
        if self.reduce is not None:
            loss = self.reduce(loss)
        return float(loss[0])

    def _reduced(self, closure: Closure) -> Closure:
        """``closure`` whose loss is reduced across ranks (so all ranks accept or reject alike)."""

        def run() -> Tensor:
            loss = closure().detach().reshape(1)
            return (loss if self.reduce is None else self.reduce(loss))[0]

        return run

    # ----------------------------------------------------------------- step
    def step(  # type: ignore[override]
        self,
        closure: Closure | None = None,
        probe: Probe | None = None,
        batch_idx: int | None = None,
    ) -> Tensor:
        """One base update, with an NC phase before or after it when one is due.

        Returns the (detached) loss of ``closure`` at the point the gradient step was taken from.
        """
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs a loss closure (it takes its own gradients and "
                "Hessian-vector products); 16-mixed precision calls step() without one: use "
                "precision '32-true' or 'bf16-mixed'"
            )
        k = self._n_steps if batch_idx is None else int(batch_idx)
        due = self.check != "never" and k % self.every == 0
        if due and probe is None:
            raise ValueError(
                f"{type(self).__name__}.step: an NC check is due at step {k} (every={self.every}) "
                "but no probe was given; pass probe=<n -> loss closure over n fresh samples>"
            )
        if due and self.timing == "before":
            self._nc_phase(probe)  # type: ignore[arg-type]

        params = self._params()
        loss, g = flat_grad(closure, params, reduce=self.reduce)
        if self.check == "noise":
            self._noise.observe(g)
        if self._anchor is not None:
            g = g + (2.0 * self.prox) * (self._flat_params() - self._anchor)
        for p, gi in zip(params, unflatten_like(g, params), strict=True):
            p.grad = gi if p.requires_grad else None
        self.base.step()

        if due and self.timing == "after":
            self._nc_phase(probe)  # type: ignore[arg-type]
        self._n_steps += 1
        return loss

    # ----------------------------------------------------------------- NC phase
    def _check_fires(self, probe: Probe) -> bool:
        if self.check == "always":
            return True
        if self.check == "noise":
            return self._noise.fires()
        norm = seed_check(
            probe,
            self._params(),
            batches=self.check_batches,
            batch_size=self.check_batch_size,
            reduce=self.reduce,
        )
        self.counters["grads"] += self.check_batches
        return norm < self.check_threshold

    def _nc_phase(self, probe: Probe) -> None:
        c = self.counters
        t0 = time.perf_counter()
        c["checks"] += 1
        fires = self._check_fires(probe)
        t1 = time.perf_counter()
        c["check_time_s"] += t1 - t0
        if not fires:
            self._anchor = None
            c["time_s"] += t1 - t0
            return
        moved = False
        ref_sq: float | None = None  # ‖g_S‖² at the phase's first search point (for re-checks)
        noise = self.check == "noise"
        for r in range(self.max_nc_steps):
            if r > 0 and not noise and not self._recheck(probe, None, None):
                break  # "seed" / "always": re-check before drawing the next batch
            # Lanczos builds its operator (and so g_S) anyway; the other searches compute g_S
            # ahead only when the noise re-check needs it (one gradient).
            need = self.search == "lanczos" or (self.max_nc_steps > 1 and noise)
            batch = self._reference_batch(probe) if need else None
            if r == 0:
                ref_sq = None if batch is None else float(batch.grad.dot(batch.grad))
            elif noise and not self._recheck(probe, batch, ref_sq):
                break
            if not self._search_and_step(probe, batch):
                break
            moved = True
        if self.prox > 0:
            self._anchor = self._flat_params().clone()
        if moved and self.reset_momentum:
            self._zero_momentum()
        c["time_s"] += time.perf_counter() - t0

    def _reference_batch(self, probe: Probe) -> _Batch:
        """Draw the search (or, for ``seed_power``, the sign) batch and its gradient at θ."""
        c = self.counters
        params = self._params()
        if self.search == "lanczos":
            closure = probe(self.search_batch)
            op = HessianOperator(closure, params, method=self.hvp_method, reduce=self.reduce)
            c["grads"] += 1
            return _Batch(closure, op.loss, op.grad, op)
        size = self.search_batch if self.search == "neon2" else self.sign_batch
        closure = probe(int(size))  # type: ignore[arg-type]
        loss, grad = flat_grad(closure, self._params(), reduce=self.reduce)
        c["grads"] += 1
        return _Batch(closure, loss, grad, None)

    def _recheck(self, probe: Probe, batch: _Batch | None, ref_sq: float | None) -> bool:
        """The check before every search after the first of a phase (counted in ``checks``)."""
        c = self.counters
        t0 = time.perf_counter()
        c["checks"] += 1
        c["rechecks"] += 1
        if self.check == "noise":
            assert batch is not None and ref_sq is not None
            grad_sq, noise = self._noise.last_grad_sq, self._noise.last_noise
            margin = self._noise.ratio * max(noise, 0.0) + self._noise.tol**2 - grad_sq
            fires = float(batch.grad.dot(batch.grad)) <= ref_sq + max(margin, 0.0)
        else:
            fires = self._check_fires(probe)
        c["check_time_s"] += time.perf_counter() - t0
        return fires

    def _search_and_step(self, probe: Probe, batch: _Batch | None = None) -> bool:
        """One search and (if it found a direction) one NC step; True iff the step was kept.

        ``batch``: the reference batch from :meth:`_reference_batch` (required for Lanczos); for
        Neon2 it is the search batch, for ``seed_power`` the sign batch.
        """
        c = self.counters
        params = self._params()
        t0 = time.perf_counter()
        ref_closure: Closure | None = None
        ref_loss = ref_grad = None
        if batch is not None:
            ref_closure, ref_loss, ref_grad = batch.closure, batch.loss, batch.grad
        if self.search == "lanczos":
            assert batch is not None and batch.op is not None
            result: SearchResult = lanczos(
                batch.op,
                max_hvps=self.max_hvps,
                eps_h=self.eps_h,
                v0=self._direction,
                generator=self._generator,
            )
            batch.op = None  # free the retained first-order graph
        elif self.search == "neon2":
            if ref_closure is None:
                ref_closure = probe(self.search_batch)
            result = neon2(
                ref_closure,
                params,
                max_grads=self.max_hvps,
                eps_h=self.eps_h,
                generator=self._generator,
                reduce=self.reduce,
                **self.neon2,
            )
        else:
            result = seed_power(
                probe,
                params,
                outer=self.power["outer"],
                inner=self.power["inner"],
                step=self.power["step"],
                lam=self.power["lam"],
                batch=self.power["batch"],
                eps_h=self.eps_h,
                generator=self._generator,
                reduce=self.reduce,
            )
        c["searches"] += 1
        c["hvps"] += result.hvps
        if result.lam == result.lam:
            c["lambda_min"] = float(result.lam)
        c["search_time_s"] += time.perf_counter() - t0
        # warm start of the next Lanczos: the vector behind λ, found or not
        warm = result.direction if result.found else getattr(result, "candidate", None)
        if warm is not None:
            self._direction = warm.detach().clone()
        if not result.found or result.direction is None:
            return False
        v = result.direction.detach()

        if self.sign_batch is not None and not (self.search == "seed_power" and batch is not None):
            ref_closure = probe(self.sign_batch)
            ref_loss = ref_grad = None
        if ref_grad is None:
            assert ref_closure is not None
            ref_loss, ref_grad = flat_grad(ref_closure, params, reduce=self.reduce)
            c["grads"] += 1
        alpha = step_length(
            result.lam,
            rule=self.nc_step,
            length=self.nc_length,
            L2=self.l2,
            max_length=self.max_length,
        )
        if not self.accept:
            if take_nc_step(params, v, alpha, grad=ref_grad).accepted:
                c["steps"] += 1
                return True
            c["rejected"] += 1  # a zero or non-finite length
            return False
        assert ref_closure is not None and ref_loss is not None
        test = self._reduced(ref_closure)
        before = self._reduce_loss(ref_loss)
        for _ in range(self.backtracks + 1):
            out = take_nc_step(
                params, v, alpha, grad=ref_grad, closure=test, accept=True, loss_before=before
            )
            if out.accepted:
                c["steps"] += 1
                c["loss_change"] += out.loss_change
                return True
            alpha *= 0.5
        c["rejected"] += 1
        return False

    def _zero_momentum(self) -> None:
        for state in self.base.state.values():
            state.pop("momentum_buffer", None)
            if "exp_avg" in state:
                state["exp_avg"].zero_()

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict`` plus an ``"nc"`` entry with everything else."""
        sd = self.base.state_dict()
        sd["nc"] = {
            "n_steps": self._n_steps,
            "counters": dict(self.counters),
            "anchor": None if self._anchor is None else self._anchor.clone(),
            "direction": None if self._direction is None else self._direction.clone(),
            "generator": self._generator.get_state(),
            "noise_check": self._noise.state_dict(),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        nc = state_dict.pop("nc", None)
        if nc is None:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state has no 'nc' entry "
                "(not saved by an NCEscape optimizer)"
            )
        self.base.load_state_dict(state_dict)
        self._link()
        ref = self._flat_params()

        def vec(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().clone().to(dtype=ref.dtype, device=ref.device)

        self._n_steps = int(nc["n_steps"])
        self.counters = {k: 0.0 for k in COUNTER_KEYS}  # keys added since the save start at 0
        self.counters["lambda_min"] = float("nan")
        self.counters.update({k: float(v) for k, v in nc["counters"].items()})
        self._anchor = vec(nc["anchor"])
        self._direction = vec(nc["direction"])
        self._generator.set_state(nc["generator"].cpu())
        self._noise.load_state_dict(nc["noise_check"], like=ref)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base={type(self.base).__name__}, lr={self.param_groups[0]['lr']}, "
            f"every={self.every}, timing={self.timing!r}, check={self.check!r}, "
            f"search={self.search!r}, nc_step={self.nc_step!r})"
        )
