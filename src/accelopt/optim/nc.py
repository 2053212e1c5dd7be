r"""The negative-curvature (NC) escape wrapper around a base optimizer: :class:`NCEscape`.

Each :meth:`NCEscape.step`, with :math:`g_t` the (reduced) minibatch gradient of ``closure`` and
``k`` = ``batch_idx`` (or the internal step count):

.. math::
    \begin{aligned}
        &\textbf{if } \text{schedule.due}(k) \textbf{ and timing = before: } \text{NC phase} \\
        &g_t \leftarrow \nabla f_{B_t}(\theta_t) + 2\gamma_{\text{prox}}\,(\theta_t - \hat\theta)
            \quad (\text{the pull only while an anchor } \hat\theta \text{ is set}) \\
        &\theta_{t+1} \leftarrow \text{base.step}(\theta_t, g_t)
            \quad (\text{SGD / heavy ball / Nesterov / Adam, torch's own code}) \\
        &\textbf{if } \text{schedule.due}(k) \textbf{ and timing = after: } \text{NC phase}
    \end{aligned}

The schedule (:mod:`accelopt.optim.schedule`) says when; the phase (:mod:`accelopt.optim.phase`)
composes a check (:mod:`accelopt.optim.check`), a search (:mod:`accelopt.optim.search`), a step
rule (:mod:`accelopt.optim.step`), the judgements (:mod:`accelopt.optim.judge`) and ANCM's anchor
(:mod:`accelopt.optim.anchor`). The wrapper owns only what they share, the
:class:`~accelopt.optim.component.Context`: the base optimizer, the counters, the generator, the
warm-start direction, the step count, ``nc_log``, ``reduce`` and ``module``; and the
``state_dict``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from accelopt.checks import count
from accelopt.curvature.hvp import flat_grad, flatten, unflatten_like
from accelopt.optim.anchor import Anchor
from accelopt.optim.cadence import Cadence
from accelopt.optim.check import Check
from accelopt.optim.component import Probe, Reduce, build
from accelopt.optim.compose import make_base, route_knobs
from accelopt.optim.phase import Phase, reference_size
from accelopt.optim.schedule import Schedule
from accelopt.optim.search import Search
from accelopt.optim.step import StepRule

__all__ = ["COUNTER_KEYS", "STATE_VERSION", "NCEscape", "state_version"]

Closure = Callable[[], Tensor]
COUNTER_KEYS = (
    "checks",
    "rechecks",
    "searches",
    "steps",
    "rejected",
    "hvps",
    "lambda_min",
    "lambda_last",
    "time_s",
    "check_time_s",
    "search_time_s",
    "grads",
    "loss_change",
    "unverified",
    "heldout_steps",
    "heldout_down",
    "heldout_curvature",
    "heldout_loss_change",
)
NAN_KEYS = "lambda_min", "lambda_last", "heldout_curvature", "heldout_loss_change"  # NaN until set
STATE_VERSION = 2  # of state_dict()["nc"]; states of older code have no "version" entry


def state_version(nc: dict[str, Any]) -> int:
    """The version of a saved ``state_dict()["nc"]``; one without a ``version`` entry is 1."""
    return nc.get("version", 1)


def _assemble(
    check: Check | str | None,
    search: Search | str | None,
    step: StepRule | str | None,
    schedule: Schedule | str | None,
    cadence: Cadence | str | None,
    knobs: dict[str, Any],
) -> dict[str, Any]:
    """The components (copies: one config's objects may serve several optimizers), knobs applied."""
    parts = {
        "schedule": build("schedule", "every" if schedule is None else schedule, Schedule),
        "check": build("check", "noise" if check is None else check, Check),
        "search": build("search", "lanczos" if search is None else search, Search),
        "step": build("step", "carmon" if step is None else step, StepRule),
    }
    if cadence is not None:
        parts["cadence"] = build("cadence", cadence, Cadence)
    parts = route_knobs(parts, knobs)
    parts = {kind: copy.deepcopy(part) for kind, part in parts.items()}
    reference_size(parts["search"], parts["step"])  # refuses a phase without a reference batch
    return parts


class NCEscape(Optimizer):
    """A base optimizer plus negative-curvature escape: check → search → NC step, on a schedule.

    Args:
        params: parameters or parameter groups (``None`` when ``base`` is a built optimizer).
        lr: learning rate of the base optimizer (``param_groups`` are the base's own, so LR
            schedulers see and change the real value).
        base: ``"sgd"``, ``"heavyball"``, ``"nesterov"``, ``"adam"``, a built
            ``torch.optim.Optimizer``, or a class / factory called as
            ``base(params, lr=lr, **base_kwargs)``.
        momentum, betas, eps, weight_decay, base_kwargs: the named base's hyper-parameters
            (``0 <= momentum < 1``).
        check, search, step: the components (instances, or registered names such as
            ``"noise"``, ``"lanczos"``, ``"carmon"``, built with their defaults; ``None``: those).
        schedule: a :class:`~accelopt.optim.schedule.Schedule` or a registered name (default
            ``Schedule()``, ``"every"``).
        cadence: a :class:`~accelopt.optim.cadence.Cadence` or a registered name (``"plateau"``)
            that decides when a phase is due instead of the schedule's ``every`` (default None).
        seed: seed of the optimizer's own ``torch.Generator`` (search starts).
        reduce: ``Tensor -> Tensor`` applied to every gradient, HVP and acceptance-test loss
            (DDP all-reduce mean); also settable as the attribute ``opt.reduce``.
        module: the ``nn.Module`` the closures call (needed only by
            ``hvp_method="forward_over_reverse"``); also settable as ``opt.module``.
        grad_transform (attribute, default ``None``): ``f(params)`` called after the base step's
            gradient is in ``p.grad`` and before ``base.step()`` (the training module's gradient
            clipping); the check, search and NC step never see it.
        **knobs: flat knob overrides routed to every component that has them
            (see :mod:`accelopt.optim.compose`), e.g. ``every=10``, ``eps_h=0.1``.

    ``step(closure, probe=None, batch_idx=None)``: ``closure()`` returns the minibatch loss with
    its graph (no ``backward``); ``probe(n)`` returns such a closure over ``n`` fresh training
    samples. A probe is required whenever an NC phase is due.

    ``counters`` (cumulative): ``checks`` (scheduled checks plus re-checks), ``rechecks``,
    ``searches``, ``steps`` (NC steps kept), ``rejected``, ``hvps`` (Hessian-vector products,
    or Neon2 gradients), ``lambda_min`` (λ of the last direction found, i.e. with
    λ ≤ −ε_H/2; NaN before any), ``lambda_last`` (the last search's estimate, found or not),
    ``time_s`` (all NC work), ``check_time_s``, ``search_time_s``, ``grads`` (extra gradients:
    gradient-norm checks, reference and sign batches, the report's power iteration's HVP batches),
    ``loss_change`` (sum of ``f_S(after) − f_S(before)`` over NC steps kept under the acceptance
    test), ``unverified`` (directions refused by the schedule's ``verify_batch``), and with the
    schedule's ``heldout_batch``: ``heldout_steps``, ``heldout_down`` (steps that lowered the
    held-out loss), ``heldout_curvature`` and ``heldout_loss_change`` (means over NC steps of
    vᵀHv and of the loss change on a fresh batch; NaN before any; :mod:`accelopt.optim.judge`).

    ``nc_log``: one dict per NC step kept (``step``, ``lambda``, ``alpha``,
    ``search_loss_change``, ``heldout_curvature``, ``heldout_loss_change``, and
    ``verify_curvature`` with verification; ``None`` where not computed), kept in
    ``state_dict()["nc"]["log"]``.
    """

    uses_closure = True  # step(closure, probe=..., batch_idx=...): accelopt.optim_protocol

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | None = None,
        lr: float = 0.02,
        *,
        base: str | type[Optimizer] | Callable[..., Optimizer] | Optimizer = "heavyball",
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        base_kwargs: dict[str, Any] | None = None,
        check: Check | str | None = "noise",
        search: Search | str | None = "lanczos",
        step: StepRule | str | None = "carmon",
        schedule: Schedule | str | None = None,
        cadence: Cadence | str | None = None,
        seed: int = 0,
        reduce: Reduce = None,
        module: torch.nn.Module | None = None,
        **knobs: Any,
    ) -> None:
        parts = _assemble(check, search, step, schedule, cadence, knobs)
        count("NCEscape", "seed", seed, minimum=0)
        if reduce is not None and not callable(reduce):
            raise ValueError(f"NCEscape: invalid reduce={reduce!r}; accepted: None or a callable")
        self.base: Optimizer = make_base(
            base,
            params,
            lr,
            momentum=momentum,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            base_kwargs=base_kwargs,
        )
        super().__init__(self.base.param_groups, {})  # share the base's groups and state
        self._link()
        self.schedule: Schedule = parts["schedule"]  # type: ignore[assignment]
        self.check: Check = parts["check"]  # type: ignore[assignment]
        self.search: Search = parts["search"]  # type: ignore[assignment]
        self.step_rule: StepRule = parts["step"]  # type: ignore[assignment]
        self.cadence: Cadence | None = parts.get("cadence")  # type: ignore[assignment]
        self.anchor = Anchor(self.schedule.prox)
        self.seed = seed
        self.reduce: Reduce = reduce
        self.module = module
        self.grad_transform: Callable[[list[Tensor]], None] | None = None
        self.generator = torch.Generator(device=self.params()[0].device)
        self.generator.manual_seed(seed)
        self.n_steps = 0
        self.direction: Tensor | None = None
        self.counters: dict[str, float] = self._fresh_counters()
        self.nc_log: list[dict[str, Any]] = []

    @staticmethod
    def _fresh_counters() -> dict[str, float]:
        counters = {k: 0.0 for k in COUNTER_KEYS}
        counters.update({k: float("nan") for k in NAN_KEYS})
        return counters

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

    @property
    def phase(self) -> Phase:
        """The NC phase of the components in use."""
        return Phase(self.schedule, self.check, self.search, self.step_rule, self.anchor)

    def params(self) -> list[Tensor]:
        """All parameters, in the order of the flat vectors."""
        return [p for group in self.param_groups for p in group["params"]]

    def flat_params(self) -> Tensor:
        return flatten([p.detach() for p in self.params()])

    def zero_momentum(self) -> None:
        """Drop the base's momentum buffers (SGD) and zero Adam's first moments."""
        for state in self.base.state.values():
            state.pop("momentum_buffer", None)
            if "exp_avg" in state:
                state["exp_avg"].zero_()

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
        k = self.n_steps if batch_idx is None else int(batch_idx)
        when = self.schedule if self.cadence is None else self.cadence
        due = self.check.schedules and when.due(self, k)
        if due and probe is None:
            rule = f"every={self.schedule.every}" if self.cadence is None else repr(self.cadence)
            raise ValueError(
                f"{type(self).__name__}.step: an NC check is due at step {k} "
                f"({rule}) but no probe was given; pass "
                "probe=<n -> loss closure over n fresh samples>"
            )
        before = self.schedule.timing == "before"
        if due and before:
            self.phase.run(self, probe)  # type: ignore[arg-type]
        params = self.params()
        loss, g = flat_grad(closure, params, reduce=self.reduce)
        self.check.observe(g)
        g = self.anchor.pull(self, g)
        for p, gi in zip(params, unflatten_like(g, params), strict=True):
            p.grad = gi if p.requires_grad else None
        if self.grad_transform is not None:
            self.grad_transform(params)  # e.g. clipping: may change ``.grad`` in place
        self.base.step()
        if due and not before:
            self.phase.run(self, probe)  # type: ignore[arg-type]
        when.observe(self, loss.detach())
        self.n_steps += 1
        return loss

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict`` plus an ``"nc"`` entry with everything else."""
        sd = self.base.state_dict()
        sd["nc"] = {
            "version": STATE_VERSION,
            "n_steps": self.n_steps,
            "counters": dict(self.counters),
            "anchor": self.anchor.state(),
            "direction": None if self.direction is None else self.direction.clone(),
            "generator": self.generator.get_state(),
            "check": self.check.state_dict(),
            "cadence": {} if self.cadence is None else self.cadence.state_dict(),
            "log": [dict(entry) for entry in self.nc_log],
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
        version = state_version(nc)
        if version != STATE_VERSION:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: NC state version {version} was saved by "
                f"older accelopt code; this version reads version {STATE_VERSION}"
            )
        self.base.load_state_dict(state_dict)
        self._link()
        ref = self.flat_params()

        def vec(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().clone().to(dtype=ref.dtype, device=ref.device)

        self.n_steps = int(nc["n_steps"])
        self.counters = self._fresh_counters()
        self.counters.update({k: float(v) for k, v in nc["counters"].items()})
        self.nc_log = [dict(entry) for entry in nc["log"]]
        self.anchor.load(nc["anchor"], ref)
        self.direction = vec(nc["direction"])
        self.generator.set_state(nc["generator"].cpu())
        if nc["check"]:
            self.check.load_state_dict(nc["check"], like=ref)
        if self.cadence is not None and nc.get("cadence"):
            self.cadence.load_state_dict(nc["cadence"], like=ref)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base={type(self.base).__name__}, "
            f"lr={self.param_groups[0]['lr']}, check={self.check!r}, search={self.search!r}, "
            f"step={self.step_rule!r}, schedule={self.schedule!r})"
        )
