"""Flat vectors, gradients and Hessian-vector products of a loss closure.

Vectors are flat 1-D tensors: the parameters concatenated in the order of the parameter list,
in the parameters' dtype and device. Parameters that do not require grad stay in the flat layout
and are treated as constants: their gradient and Hessian entries are zero.

A loss closure ``closure() -> Tensor`` returns a scalar loss *with its graph* and does not call
``backward``. ``reduce`` (e.g. a DDP all-reduce mean) is applied to every gradient and every
Hessian-vector product computed here; ``None`` is the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Closure = Callable[[], Tensor]
Reduce = Callable[[Tensor], Tensor] | None

__all__ = ["HessianOperator", "flat_grad", "flatten", "trainable_mask", "unflatten_like"]


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate ``tensors`` into one flat 1-D tensor (a copy; graphs are kept)."""
    tensors = list(tensors)
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split flat ``vec`` into views shaped like the tensors of ``like`` (in order)."""
    like = list(like)
    n = sum(t.numel() for t in like)
    if vec.dim() != 1 or vec.numel() != n:
        raise ValueError(f"expected a flat vector of {n} entries, got shape {tuple(vec.shape)}")
    out, i = [], 0
    for t in like:
        out.append(vec[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


def assign_flat(vec: Tensor, params: Sequence[Tensor]) -> None:
    """Rebind each ``p.data`` to a copy of its slice of flat ``vec``, in ``p``'s memory format.

    Not an in-place update of ``p`` (graphs holding the old values stay valid), and
    ``channels_last`` parameters stay ``channels_last`` (``vector_to_parameters`` makes them
    contiguous views of ``vec``).
    """
    for p, part in zip(params, unflatten_like(vec, params), strict=True):
        new = torch.empty_like(p)  # same shape, dtype, device and memory format as p
        new.copy_(part.to(dtype=p.dtype))
        p.data = new


def trainable_mask(params: Sequence[Tensor]) -> Tensor:
    """Flat 0/1 mask (parameters' dtype) of the entries that require grad."""
    params = list(params)
    if not params:
        return torch.zeros(0)
    return flatten([torch.full_like(p, float(p.requires_grad)) for p in params]).detach()


def _apply(reduce: Reduce, t: Tensor) -> Tensor:
    return t if reduce is None else reduce(t)


def _grads(loss: Tensor, params: Sequence[Tensor], *, create_graph: bool) -> list[Tensor]:
    """d loss / d params, with zeros for frozen or unused parameters (never ``None``)."""
    if loss.numel() != 1:
        raise ValueError(f"the closure must return a scalar loss, got shape {tuple(loss.shape)}")
    idx = [i for i, p in enumerate(params) if p.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    if idx and loss.requires_grad:
        gs = torch.autograd.grad(
            loss, [params[i] for i in idx], create_graph=create_graph, allow_unused=True
        )
        for i, g in zip(idx, gs, strict=True):
            if g is not None:
                out[i] = g
    return out


def flat_grad(
    closure: Closure, params: Sequence[Tensor], *, reduce: Reduce = None
) -> tuple[Tensor, Tensor]:
    """Evaluate ``closure`` once; return ``(loss, g)``, both detached, ``g = reduce(∇loss)`` flat."""
    params = list(params)
    with torch.enable_grad():
        loss = closure()
        gs = _grads(loss, params, create_graph=False)
    return loss.detach(), _apply(reduce, flatten(gs).detach())


class _ClosureCall(torch.nn.Module):
    """Wraps ``closure`` so that ``torch.func.functional_call`` can swap ``module``'s parameters."""

    def __init__(self, module: torch.nn.Module, closure: Closure) -> None:
        super().__init__()
        self.m = module
        self._closure = closure

    def forward(self) -> Tensor:
        return self._closure()


class HessianOperator:
    """The Hessian of ``closure()`` w.r.t. ``params`` at the current point, as a linear operator.

    ``matvec(v)`` returns ``reduce(H v)`` (flat, detached). ``loss`` and ``grad`` hold the loss and
    ``reduce(∇loss)`` at the point of construction. ``n_products`` counts the products computed.
    ``mask`` is the flat 0/1 mask of trainable entries (searches draw random starts inside it).

    Methods:

    - ``"double_backward"`` (baseline, any closure): the closure is evaluated once and
      ``g = ∂loss/∂θ`` is built with ``create_graph=True``; each product is
      ``H v = ∂(gᵀv)/∂θ`` on that retained first-order graph (no further forward passes). The
      parameters must not be modified in place while the operator is in use (autograd refuses).
    - ``"forward_over_reverse"``: ``H v = jvp(∇loss, v)`` with ``torch.func.jvp`` over
      ``torch.func.grad``; the parameters are swapped for functional ones with
      ``torch.func.functional_call`` on ``module``. Limitations: ``module`` is required and every
      parameter in ``params`` must be one of its parameters; the closure must be ``torch.func``
      compatible (no ``.item()``/data-dependent Python control flow on tensors, no in-place updates
      of captured tensors, e.g. BatchNorm running statistics in train mode, unless the closure
      calls the network through :func:`~accelopt.curvature.buffers.call_keeping_buffers`, as
      ``ClassifierModule.probe``'s closures do); every product
      re-runs the forward and backward pass (no graph is shared between products).
    """

    def __init__(
        self,
        closure: Closure,
        params: Sequence[Tensor],
        *,
        method: str = "double_backward",
        reduce: Reduce = None,
        module: torch.nn.Module | None = None,
    ) -> None:
        self.params = list(params)
        self.method = method
        self.reduce = reduce
        self.n_products = 0
        self.dim = sum(p.numel() for p in self.params)
        ref = self.params[0] if self.params else torch.zeros(0)
        self.dtype = ref.dtype
        self.device = ref.device
        self.mask = trainable_mask(self.params)
        if method == "double_backward":
            with torch.enable_grad():
                loss = closure()
                self._g = _grads(loss, self.params, create_graph=True)
            self.loss = loss.detach()
            self.grad = _apply(reduce, flatten(self._g).detach())
        elif method == "forward_over_reverse":
            if module is None:
                raise ValueError(
                    "method='forward_over_reverse' needs module=<the nn.Module the closure calls>: "
                    "a closure over in-place parameters is not a function of the parameters "
                    "unless they can be swapped; use method='double_backward' otherwise"
                )
            self._setup_func(closure, module)
            self.loss, self.grad = flat_grad(closure, self.params, reduce=reduce)
        else:
            raise ValueError(f"unknown HVP method {method!r}")

    def _setup_func(self, closure: Closure, module: torch.nn.Module) -> None:
        names = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
        missing = [i for i, p in enumerate(self.params) if id(p) not in names]
        if missing:
            raise ValueError(f"params {missing} are not parameters of the given module")
        self._wrapper = _ClosureCall(module, closure)
        self._train_idx = [i for i, p in enumerate(self.params) if p.requires_grad]
        self._names = ["m." + names[id(self.params[i])] for i in self._train_idx]

        def loss_fn(*ts: Tensor) -> Tensor:
            return torch.func.functional_call(
                self._wrapper, dict(zip(self._names, ts, strict=True)), (), strict=False
            )

        self._grad_fn = torch.func.grad(loss_fn, argnums=tuple(range(len(self._train_idx))))

    def matvec(self, v: Tensor) -> Tensor:
        """Return ``reduce(H v)`` for a flat ``v`` (cast to the parameters' dtype/device)."""
        v = v.detach().to(dtype=self.dtype, device=self.device)
        vs = unflatten_like(v, self.params)
        self.n_products += 1
        if self.method == "double_backward":
            hv = self._hvp_double_backward(vs)
        else:
            hv = self._hvp_forward_over_reverse(vs)
        return _apply(self.reduce, flatten(hv).detach())

    __matmul__ = matvec

    def _hvp_double_backward(self, vs: list[Tensor]) -> list[Tensor]:
        out = [torch.zeros_like(p) for p in self.params]
        idx = [i for i, p in enumerate(self.params) if p.requires_grad]
        with torch.enable_grad():
            terms = [(g * vi).sum() for g, vi in zip(self._g, vs, strict=True) if g.requires_grad]
            if not terms or not idx:
                return out
            dot = torch.stack(terms).sum()
            hs = torch.autograd.grad(
                dot, [self.params[i] for i in idx], retain_graph=True, allow_unused=True
            )
        for i, h in zip(idx, hs, strict=True):
            if h is not None:
                out[i] = h
        return out

    def _hvp_forward_over_reverse(self, vs: list[Tensor]) -> list[Tensor]:
        out = [torch.zeros_like(p) for p in self.params]
        if not self._train_idx:
            return out
        primals = tuple(self.params[i].detach() for i in self._train_idx)
        tangents = tuple(vs[i] for i in self._train_idx)
        _, hs = torch.func.jvp(self._grad_fn, primals, tangents)
        for i, h in zip(self._train_idx, hs, strict=True):
            out[i] = h
        return out

    def __repr__(self) -> str:
        return (
            f"HessianOperator(dim={self.dim}, method={self.method!r}, n_products={self.n_products})"
        )
