"""The LightningModule: classification in manual optimization with the closure protocol.

Plain optimizers (torch's SGD, Nesterov SGD, Adam, ...) are stepped the usual manual way. An
NC-capable optimizer (class attribute ``uses_closure = True``) is stepped as
``opt.step(closure, probe=probe, batch_idx=batch_idx)``: ``closure()`` returns the minibatch loss
with its graph (it never calls ``backward``), ``probe(n)`` a loss closure over ``n`` fresh training samples
supplied by the data module. The optimizer differentiates them itself. Second-order optimizers
declared ``protocol: graph`` get ``backward(create_graph=True)``; schedule-free ones are switched
to ``eval()`` around evaluation (:mod:`accelopt.optim_protocol` decides; docs/optimizers.md,
"Bring your own optimizer"). The ``scheduler`` config's torch LR scheduler is stepped here
(per batch, or at epoch starts), and ``trainer.gradient_clip_*`` clip here.

Distributed data parallel (Lightning's DDP strategy; issue 6). Each rank holds its own share of
every batch and probe. The closures call the *un-wrapped* ``self.net``, so DDP's forward
machinery is not involved in them, and gradients are averaged in one of two ways:

- plain optimizers: ``manual_backward`` runs ``loss.backward()``, whose gradient-accumulation
  hooks DDP registered on the parameters; DDP's reducer all-reduces (averages) ``.grad`` before
  ``opt.step()``, as in any DDP run.
- NC optimizers differentiate with ``torch.autograd.grad``, which bypasses those hooks. So
  :meth:`ClassifierModule.configure_optimizers` sets ``opt.reduce`` to an all-reduce mean, which
  the optimizer applies to the minibatch gradient of its base step, to every check gradient and
  HVP of a search, and to the acceptance-test losses: every rank sees the same operator and
  takes the same step, and the parameters stay identical across ranks.

The recorded training loss is the mean over ranks (one scalar all-reduce per step), and the
divergence test uses it, so all ranks stop together.

Memory format (``hardware.memory_format``): ``channels_last`` converts the network's 4-D
weights and every input batch (training, probes, evaluation) to NHWC, which is what oneDNN and
cuDNN convolutions run fastest on; ``contiguous`` (NCHW) leaves them as they are. Losses,
gradients and Hessian-vector products agree between the two to float tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from accelopt.checks import MEMORY_FORMATS
from accelopt.curvature.buffers import call_keeping_buffers
from accelopt.optim_protocol import CLIP_ALGORITHMS, protocol_of
from accelopt.schedules import build_scheduler

LossClosure = Callable[[], Tensor]


class Diverged(RuntimeError):
    """The training loss became non-finite; the run stops cleanly and is recorded as diverged."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training loss became {loss} at step {step}")
        self.step, self.loss = step, loss


class ClassifierModule(L.LightningModule):
    """Cross-entropy classification of ``net`` trained by ``optimizer(params)`` in manual mode.

    Logs ``train/loss`` every step (its epoch mean as ``train/loss_epoch_mean``), ``val/loss`` / ``val/acc`` / ``test/loss`` / ``test/acc``
    every epoch (the data module's evaluation loaders, in the order of its ``eval_names``) and,
    for NC optimizers, their (cumulative) counters as ``nc/<name>`` on the steps the logger writes,
    as ``train/lr`` (the lr of the step) and, with clipping, ``train/grad_norm`` (pre-clip) are.
    ``memory_format``: ``"contiguous"`` or ``"channels_last"`` (the net and every input batch
    are converted to it). ``scheduler``: the ``scheduler`` config (:mod:`accelopt.schedules`);
    ``protocol``: the optimizer yaml's reserved key; ``gradient_clip_val`` /
    ``gradient_clip_algorithm``: as Lightning's Trainer arguments of those names.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        num_classes: int = 10,
        memory_format: str = "contiguous",
        scheduler: Mapping[str, Any] | None = None,
        protocol: str | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
    ) -> None:
        super().__init__()
        if gradient_clip_algorithm not in CLIP_ALGORITHMS:
            raise ValueError(
                f"gradient_clip_algorithm={gradient_clip_algorithm!r} is invalid; accepted: "
                f"{', '.join(CLIP_ALGORITHMS)} (trainer.gradient_clip_algorithm)."
            )
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"memory_format={memory_format!r} is invalid; accepted: "
                f"{', '.join(MEMORY_FORMATS)} (hardware.memory_format)."
            )
        self.automatic_optimization = False
        self.memory_format = memory_format
        self._format = (
            torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        )
        self.net = net.to(memory_format=self._format) if memory_format != "contiguous" else net
        self.optimizer_factory = optimizer
        self.criterion = nn.CrossEntropyLoss()
        self.eval_acc = nn.ModuleList(
            [MulticlassAccuracy(num_classes=num_classes, average="micro") for _ in range(2)]
        )
        self.scheduler_spec = None if scheduler is None else dict(scheduler)
        self.declared_protocol = protocol
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self._protocol = "plain"  # set by configure_optimizers (optim_protocol.protocol_of)
        self._opt: Optimizer | None = None
        self._interval: str | None = None
        self._grad_norm: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self._input(x))

    def _input(self, x: Tensor) -> Tensor:
        """``x`` in the module's memory format (unchanged for ``contiguous`` or non-images)."""
        if self.memory_format == "contiguous" or x.dim() != 4:
            return x
        return x.contiguous(memory_format=self._format)

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        """The optimizer, with its LR scheduler (``scheduler`` config) when there is one."""
        opt = self.optimizer_factory(self.parameters())
        self._opt, self._protocol = opt, protocol_of(opt, self.declared_protocol)
        if self._protocol == "nc":
            opt.module = self  # forward-over-reverse HVPs (torch.func) need the model itself
            if self.gradient_clip_val is not None:  # clip the base step's gradient only
                opt.grad_transform = lambda params: self._clip(opt)
        if self._protocol == "nc" and self.trainer is not None and self.trainer.world_size > 1:
            opt.reduce = _all_reduce_mean
        name = (self.scheduler_spec or {}).get("name", "constant")
        total = 1 if name in ("constant", "step") else self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                f"scheduler={name} needs a finite number of training steps; set "
                "trainer.max_epochs or trainer.max_steps"
            )
        sched, self._interval = build_scheduler(self.scheduler_spec, opt, int(total))
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self._interval}}

    def _clip(self, optimizer: Optimizer) -> None:
        """Record the total gradient norm, then clip as ``trainer.gradient_clip_*`` say."""
        if self.gradient_clip_val is None:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        with torch.no_grad():
            self._grad_norm = torch.nn.utils.get_total_norm(grads).detach()
        self.clip_gradients(
            optimizer,
            gradient_clip_val=self.gradient_clip_val,
            gradient_clip_algorithm=self.gradient_clip_algorithm,
        )

    # -- training ----------------------------------------------------------------------------
    def _attached_trainer(self) -> L.Trainer | None:
        """The trainer running this module, None outside one (public ``self.trainer`` raises)."""
        try:
            return self.trainer
        except RuntimeError:  # "... is not attached to a `Trainer`"
            return None

    @property
    def _distributed(self) -> bool:
        trainer = self._attached_trainer()
        return trainer is not None and trainer.world_size > 1

    def _closure(
        self, x: Tensor, y: Tensor, check: bool, keep_buffers: bool = False
    ) -> LossClosure:
        """The loss closure of ``(x, y)``; ``keep_buffers``: its forwards never change the
        network's buffers (BatchNorm running statistics; :func:`call_keeping_buffers`)."""
        x = self._input(x)

        def closure() -> Tensor:
            out = call_keeping_buffers(self.net, x) if keep_buffers else self.net(x)
            loss = self.criterion(out, y)
            if check and not torch.isfinite(loss):
                raise Diverged(self.global_step, float(loss.detach()))
            return loss

        return closure

    def probe(self, n: int) -> LossClosure:
        """A loss closure over ``n`` fresh training samples (this rank's share under DDP).

        Probes serve only the NC machinery, so their forwards keep the buffers: BatchNorm's
        running statistics move with the base step's minibatch forward alone, as in plain
        training (in training mode, BatchNorm normalises a probe with its own statistics)."""
        x, y = self.trainer.datamodule.probe(n)
        return self._closure(x.to(self.device), y.to(self.device), check=False, keep_buffers=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        opt = self.optimizers()
        x, y = batch
        distributed = self._distributed
        # one process: stop before a non-finite loss is stepped on; DDP: test the rank mean
        # after the step instead, so that every rank raises together (no hung collective)
        closure = self._closure(x, y, check=not distributed)
        lr = opt.optimizer.param_groups[0]["lr"]  # the lr of this step (before the scheduler)
        if self._protocol == "nc":
            loss = opt.step(closure, probe=self.probe, batch_idx=batch_idx)
        else:
            loss = self._backward_step(opt, closure)
        scheduler = self.lr_schedulers() if self._interval == "step" else None
        if scheduler is not None:
            scheduler.step()
        loss = loss.detach()
        if distributed:
            loss = _all_reduce_mean(loss.clone())
            if not torch.isfinite(loss):  # that step was taken: recorded (as null) by train
                raise Diverged(self.global_step - 1, float(loss.detach()))
        # TensorBoard: train/loss per step, train/loss_epoch_mean per epoch
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss_epoch_mean", loss, on_step=False, on_epoch=True)
        logs = self._logs_this_step()
        if logs:
            self._log_step_scalars(float(lr))
        if self._protocol == "nc" and logs:
            counters = opt.optimizer.counters
            self.log_dict(
                {f"nc/{k}": float(v) for k, v in counters.items() if math.isfinite(v)},
                on_step=True,
                on_epoch=False,
            )
        return loss

    def _backward_step(self, opt: Any, closure: LossClosure) -> Tensor:
        """zero_grad, backward (``create_graph`` for the graph protocol), clip, step."""
        graph = self._protocol == "graph"
        opt.zero_grad(set_to_none=True)
        loss = closure()
        self.manual_backward(loss, create_graph=graph)
        self._clip(opt.optimizer)
        opt.step()
        if graph:  # the gradients hold the double-backward graph: free it now
            opt.zero_grad(set_to_none=True)
        return loss

    def _log_step_scalars(self, lr: float) -> None:
        """``train/lr`` (the lr the step used) and, when clipping, ``train/grad_norm`` (pre-clip)."""
        kw = {"on_step": True, "on_epoch": False}
        self.log("train/lr", lr, **kw)
        if self._grad_norm is not None:
            self.log("train/grad_norm", self._grad_norm, **kw)

    # -- schedule-free mode switch and per-epoch schedules -----------------------------------
    def _mode(self, mode: str) -> None:
        """``train()`` / ``eval()`` a schedule-free optimizer (eval: the averaged weights x)."""
        if self._protocol == "schedule_free" and self._opt is not None:
            getattr(self._opt, mode)()

    def on_train_epoch_start(self) -> None:
        self._mode("train")
        scheduler = self.lr_schedulers() if self._interval == "epoch" else None
        while scheduler is not None and scheduler.last_epoch < self.current_epoch:
            scheduler.step()  # one step per finished epoch (also catches up after a resume)

    def on_validation_start(self) -> None:
        self._mode("eval")

    def on_validation_end(self) -> None:  # after the callbacks': a checkpoint saved here holds x
        self._mode("train")

    def on_test_start(self) -> None:
        self._mode("eval")

    def on_test_end(self) -> None:
        self._mode("train")

    def _logs_this_step(self) -> bool:
        """Whether the logger writes this step's scalars (every ``trainer.log_every_n_steps``).

        The NC counters are cumulative, so handing them to ``self.log`` only on the steps the
        logger writes loses nothing; each ``self.log`` call costs ~0.1 ms of Lightning
        bookkeeping, and the ~16 counters on every step were most of the NC presets' per-step
        overhead (docs/benchmarks.md, "Per-step cost of the NC wrapper").
        """
        trainer = self._attached_trainer()
        if trainer is None:
            return True
        # public state: one optimizer step per batch, so global_step (already counting this
        # batch's step) is the batch count Lightning's logger cadence uses
        return trainer.global_step % max(int(trainer.log_every_n_steps), 1) == 0

    # -- evaluation --------------------------------------------------------------------------
    def _eval_name(self, dataloader_idx: int) -> str:
        dm = self.trainer.datamodule
        names = dm.eval_names if dm is not None else ["val", "test"]
        return names[dataloader_idx]

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        name = self._eval_name(dataloader_idx)
        if name == "test" and self._mid_epoch_evaluation():
            return  # the test set is evaluated once per epoch; within it only validation runs
        self._evaluate(batch, name, dataloader_idx)

    def _mid_epoch_evaluation(self) -> bool:
        """Whether this evaluation runs inside a training epoch (``trainer.val_check_interval``
        below one epoch), not at its end."""
        trainer = self.trainer
        if trainer.state.fn != "fit":
            return False
        return not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", 1)

    def _evaluate(self, batch: tuple[Tensor, Tensor], name: str, slot: int) -> None:
        x, y = batch
        logits = self.net(self._input(x))
        loss = self.criterion(logits, y)
        acc = self.eval_acc[min(slot, 1)]
        acc(logits, y)
        kw = {"on_step": False, "on_epoch": True, "add_dataloader_idx": False}
        self.log(f"{name}/loss", loss, sync_dist=True, **kw)
        self.log(f"{name}/acc", acc, prog_bar=True, **kw)


def _all_reduce_mean(t: Tensor) -> Tensor:
    """Average a tensor over the ranks of the default process group (in place, returned)."""
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.div_(dist.get_world_size())
