"""The held-out NC benchmark's core on a problem with a known strict saddle.

A two-layer linear network ``f(W₁, w₂) = ½ E(w₂ᵀW₁x − y)²`` near the origin: there the Hessian's
off-diagonal block is ``−E[y x]`` and its smallest eigenvalue is about ``−‖E[y x]‖ < 0``. Every
number the benchmark measures (search λ, held-out vᵀHv, held-out loss changes, line search) is
checked against a dense float64 Hessian or a direct loss evaluation.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.autograd.functional import hessian

from accelopt.analysis import heldout_nc, heldout_nc_tables
from accelopt.curvature import HessianOperator, flat_grad, lanczos

D_IN, HIDDEN = 3, 2


def loss_fn(out: Tensor, y: Tensor) -> Tensor:
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(D_IN, HIDDEN, bias=False), nn.Linear(HIDDEN, 1, bias=False)
    ).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.05)  # near the strict saddle at the origin
    return net


def make_data(n: int, seed: int, w_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    w = w_scale * torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    return x, x @ w + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)


def dense_hessian(net: nn.Module, data: tuple[Tensor, Tensor]) -> Tensor:
    """Float64 Hessian of the mean loss on ``data`` over the flat parameters."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def f(z: Tensor) -> Tensor:
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = z[i : i + s.numel()].view(s)
            i += s.numel()
        return loss_fn(torch.func.functional_call(net, parts, (data[0],)), data[1])

    return hessian(f, theta)


def direct_loss(net: nn.Module, data: tuple[Tensor, Tensor], d: Tensor) -> float:
    """Loss on ``data`` after really moving the parameters by ``d`` (then moving them back)."""
    params = list(net.parameters())
    theta = torch.nn.utils.parameters_to_vector(params).detach().clone()
    torch.nn.utils.vector_to_parameters(theta + d, params)
    with torch.no_grad():
        out = float(loss_fn(net(data[0]), data[1]))
    torch.nn.utils.vector_to_parameters(theta, params)
    return out


def test_search_matches_dense_lambda_min_and_replays_smaller_budgets() -> None:
    torch.set_num_threads(1)
    net = make_net()
    search_data = make_data(64, seed=1)
    dim = sum(p.numel() for p in net.parameters())
    start = torch.randn(dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    start = start / start.norm()
    out = heldout_nc.search(net, loss_fn, search_data, (3, dim), start)
    lam_min = float(torch.linalg.eigvalsh(dense_hessian(net, search_data))[0])
    assert lam_min < -0.3  # the known strict saddle
    assert out[dim]["lam"] == pytest.approx(lam_min, abs=1e-8)
    assert out[dim]["hvps"] == dim and out[dim]["seconds"] > 0
    # the 3-product run replays the longer run's products and equals a direct 3-product run
    op = HessianOperator(lambda: loss_fn(net(search_data[0]), search_data[1]), net.parameters())
    direct = lanczos(op, max_hvps=3, eps_h=0.0, v0=start)
    assert out[3]["misses"] == 0
    assert out[3]["lam"] == pytest.approx(direct.lam, abs=1e-10)
    assert torch.allclose(out[3]["v"], direct.candidate, atol=1e-10)


def test_judge_measures_on_heldout_data_not_on_the_search_batch() -> None:
    torch.set_num_threads(1)
    net = make_net()
    params = list(net.parameters())
    search_data, heldout = make_data(64, seed=1), make_data(200, seed=2)
    sign, select = make_data(50, seed=3), make_data(50, seed=4, w_scale=0.1)
    h_search, h_held = dense_hessian(net, search_data), dense_hessian(net, heldout)
    v = torch.linalg.eigh(h_search).eigenvectors[:, 0]
    op = HessianOperator(lambda: loss_fn(net(heldout[0]), heldout[1]), params)
    _, g = flat_grad(lambda: loss_fn(net(sign[0]), sign[1]), params)
    zero = torch.zeros_like(g)
    base_h = heldout_nc.shifted_losses(net, loss_fn, heldout, zero, (0.0,))[0]
    base_s = heldout_nc.shifted_losses(net, loss_fn, select, zero, (0.0,))[0]
    probe = heldout_nc.Probe(op, heldout, select, g, base_h, base_s)
    alphas = (0.01, 0.1, 0.5, 2.0)
    res = heldout_nc.judge(net, loss_fn, 3.0 * v, probe, alphas)  # any length: judged as unit

    held_curv = float(v @ h_held @ v)
    assert res["curv"] == pytest.approx(held_curv, abs=1e-10)
    assert res["curv"] < 0
    assert abs(held_curv - float(v @ h_search @ v)) > 1e-3  # search data would give another number
    d = -torch.sign(g @ v) * v  # descent for the independent gradient
    assert res["sign"] * v @ g <= 0
    for a, dl in zip(alphas, res["heldout"], strict=True):
        assert dl == pytest.approx(direct_loss(net, heldout, a * d) - base_h, abs=1e-12)
    sel = [0.0] + [direct_loss(net, select, a * d) - base_s for a in alphas]
    best = min(range(len(sel)), key=sel.__getitem__)
    held_best = min(range(len(sel)), key=([0.0] + res["heldout"]).__getitem__)
    assert best != held_best  # so choosing α on the held-out data would fail here
    assert res["ls_alpha"] == (0.0, *alphas)[best]
    assert res["ls_heldout"] == pytest.approx(([0.0] + res["heldout"])[best], abs=1e-12)


def _row(stage: int, b: object, budget: int, rep: int, held: list[float], curv: float) -> dict:
    return {
        "stage": stage, "b": b, "budget": budget, "rep": rep, "lam": -1.0, "iters": budget,
        "seconds": 2.0, "step_s": 0.5, "curv": curv, "heldout": held, "ls_alpha": 0.1,
        "ls_heldout": held[0], "t_curv": 0.1, "t_select": 0.1, "t_sign": 0.1, "t_graph_h": 0.1,
    }  # fmt: skip


def test_tables_and_summary_count_what_the_rows_say() -> None:
    rows = [_row(5, 64, 10, r, [-0.01, 0.02], -0.2) for r in range(3)]
    rows += [_row(5, "random", 0, r, [0.01 * (r - 1), 0.03], 0.1) for r in range(3)]
    facts = {5: {"step_s": 0.5, "epoch": 0.1, "base": 1.0, "steps_timed": 5}}
    curv = heldout_nc_tables.curvature_table(rows, facts)
    assert "| 3/3 |" in curv and "| 0/3 |" in curv and "| 4 (4 … 4) |" in curv  # 2 s / 0.5 s
    loss = heldout_nc_tables.loss_table(rows, (0.1, 0.3))
    assert "-0.01 (3/3↓)" in loss and "+0.02 (0/3↓)" in loss and "+0 (1/3↓)" in loss
    text = heldout_nc_tables.summary(rows, (0.1, 0.3))
    assert (
        "b = 64, 10 HVPs (search 4× a training step, held-out vᵀHv median -0.2): α ∈ {0.1}" in text
    )
    assert "random +0 (range -0.01 … +0.01), 1/3 down" in text
    assert "b = 64: held-out vᵀHv < 0 in 3/3" in text


def test_cifar10_image_folder_is_split_normalised_and_fits_the_report_cnn(tmp_path, monkeypatch):
    """``--dataset cifar10``: RGB images from an image folder, the training configs'
    normalisation ((x/255 − 0.5)/0.5), a held-out set disjoint from the pool, and a 3-channel
    32×32 report CNN on top."""
    from PIL import Image

    from accelopt.models import ReportCNN

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    values = []
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(5):
                v = 20 * c + 3 * i + (1 if split == "test" else 0)
                values += [v] if split == "train" else []
                Image.new("RGB", (32, 32), (v, 255 - v, 0)).save(
                    tmp_path / "data" / split / cls / f"{i}.png"
                )
    cfg = heldout_nc.Config(dataset="cifar10", data_dir=str(tmp_path / "data"), heldout=4)
    (hx, hy), (px, py) = heldout_nc.load_data(cfg)
    assert hx.shape == (4, 3, 32, 32) and px.shape == (6, 3, 32, 32) and len(hy) + len(py) == 10
    seen = sorted(round(float(x[0, 0, 0]) * 127.5 + 127.5) for x in torch.cat([hx, px]))
    assert seen == sorted(values)  # each training image exactly once: held out or in the pool
    assert torch.allclose(px[:, 1], -px[:, 0])  # channel 1 is 255 − channel 0: (x/255 − .5)/.5
    out = ReportCNN(in_channels=3, image_size=32)(px)
    assert out.shape == (6, 10)
