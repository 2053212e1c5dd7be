"""Forward passes that leave a module's buffers alone: :func:`call_keeping_buffers`.

The negative-curvature machinery (checks, searches, verification, held-out judgements) and the
curvature monitor evaluate the network many more times than plain training does. A module with
buffers that its forward updates in place (BatchNorm's ``running_mean`` / ``running_var`` /
``num_batches_tracked`` in training mode) would be changed by every one of those extra passes.
:func:`call_keeping_buffers` runs ``module(*args)`` with every buffer replaced by a fresh copy
(``torch.func.functional_call``): the in-place updates land on the copies and are dropped.

What stays the same: the parameters are the module's own tensors (autograd reaches them, so
first- and second-order derivatives, double backward included, are those of the ordinary
call; inside a ``torch.func`` transform they are the transform's swapped ones), the mode
(training mode: BatchNorm normalises with the batch's own statistics) and the outputs (bit for
bit: a training-mode BatchNorm never reads its running statistics). Copies made inside a
``torch.func`` transform are the transform's own tensors, so the forward-over-reverse HVPs of
:class:`~accelopt.curvature.HessianOperator` work with BatchNorm in training mode, which an
in-place update of the real buffers makes ``torch.func`` refuse. No collective operation is
involved. A module without buffers is called directly (nothing copied, the same code path).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["call_keeping_buffers"]


def call_keeping_buffers(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)``, its buffers untouched (updates go to copies, then dropped)."""
    buffers = dict(module.named_buffers())
    if not buffers:
        return module(*args, **kwargs)
    copies = {name: b.clone() for name, b in buffers.items()}
    return torch.func.functional_call(module, copies, args, kwargs, strict=False)
