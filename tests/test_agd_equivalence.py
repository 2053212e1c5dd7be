"""The 2019 report's AGD recursion is torch's Nesterov SGD (dampening 0): same iterates to 1e-6."""

import copy

import torch

from accelopt.models import ReportCNN


def test_report_agd_recursion_equals_torch_nesterov_sgd():
    torch.manual_seed(0)
    model = ReportCNN(in_channels=1, image_size=12, num_classes=4).double()
    twin = copy.deepcopy(model)
    data = [
        (torch.randn(16, 1, 12, 12, dtype=torch.float64), torch.randint(4, (16,))) for _ in range(5)
    ]
    lr, beta = 0.05, 0.9
    loss_fn = torch.nn.CrossEntropyLoss()

    # Report: y_{k+1} = x_k − γ∇f(x_k);  x_{k+1} = y_{k+1} + β(y_{k+1} − y_k);  y_0 = x_0.
    xs = [p.detach().clone() for p in model.parameters()]
    x0 = [x.clone() for x in xs]  # the initial iterate, kept for the "moved" guard
    ys = [x.clone() for x in xs]
    opt = torch.optim.SGD(twin.parameters(), lr=lr, momentum=beta, nesterov=True, dampening=0)
    for step in range(30):
        x_batch, y_batch = data[step % len(data)]
        with torch.no_grad():
            for p, x in zip(model.parameters(), xs, strict=True):
                p.copy_(x)
        grads = torch.autograd.grad(loss_fn(model(x_batch), y_batch), list(model.parameters()))
        y_next = [x - lr * g for x, g in zip(xs, grads, strict=True)]
        xs = [yn + beta * (yn - y) for yn, y in zip(y_next, ys, strict=True)]
        ys = y_next

        opt.zero_grad()
        loss_fn(twin(x_batch), y_batch).backward()
        opt.step()
        # torch's parameters are x_{k+1}: compare every iterate.
        for x, p in zip(xs, twin.parameters(), strict=True):
            torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-6)
    # guard against a vacuous comparison: the iterates moved far beyond the 1e-6 tolerance
    moved = max(float((x - p0).abs().max()) for x, p0 in zip(xs, x0, strict=True))
    assert moved > 1e-3


def test_recursion_differs_from_heavy_ball():
    """Guard against a vacuous comparison: heavy-ball (no Nesterov) must NOT match the recursion."""
    torch.manual_seed(1)
    w = torch.randn(6, dtype=torch.float64)
    A = torch.randn(6, 6, dtype=torch.float64)
    A = A @ A.T + torch.eye(6, dtype=torch.float64)
    f = lambda v: 0.5 * v @ A @ v  # noqa: E731
    lr, beta = 0.01, 0.9
    x, y = w.clone(), w.clone()
    p = torch.nn.Parameter(w.clone())
    opt = torch.optim.SGD([p], lr=lr, momentum=beta)
    for _ in range(10):
        y_next = x - lr * (A @ x)
        x, y = y_next + beta * (y_next - y), y_next
        opt.zero_grad()
        f(p).backward()
        opt.step()
    assert (p.detach() - x).abs().max() > 1e-6
