"""Estimator performance ratios, measured in one process on one run (issue 3's targets).

    .venv/bin/python bench/estimate.py --run RUN_ID [--store DIR] [--repeat 10] [--threads 1]

Every time is the minimum over `--repeat` calls: on a shared machine the minimum is
the call least disturbed by other processes. Per dtype (float32 and float64):
- backward / training: one influence backward step (1 metric) over one training step
  of the same traced step. `shared_s` is the part of the backward step that does not
  depend on u (forward and the step's gradients with their graph); the double
  backward after it carries the u-dependent work.
- k metrics in one pass vs one (k=3 stacked u vectors). `linear_k_ratio` is what the
  pass would cost if the u-dependent part scaled linearly with k: batching can beat
  it only where that part is dominated by per-call overhead (small nets).
- float64 vs float32 backward step.
Per-instance terms (float32, batch of the traced step): one forward-mode pass over
the batch (`torch.func.jvp` of the per-sample real losses along u_D) vs one autograd
call per instance. `vectorized_ceiling` = loop / one plain batched forward of D: no
vectorized method that needs at least one forward pass can beat it.
"""

from __future__ import annotations

import argparse
import json
import os
import time

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch.func import jvp

from influence import store
from influence.context import RunContext, load_run_config
from influence.estimator import backward_step
from influence.stepmap import KIND_G, step
from influence.train import Trace, trace_inputs


def fastest(fn, repeat: int) -> float:
    fn()  # warm-up: allocator, oneDNN primitive caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def per_instance_loop(ctx: RunContext, theta_d: torch.Tensor, x: torch.Tensor, u_d: torch.Tensor, lr_d: float):
    """The naive alternative: one gradient per instance, then a dot product with u_D."""
    out = []
    for j in range(x.shape[0]):
        td = theta_d.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(ctx.gan.real_losses(td, x[j : j + 1]).sum(), td)
        out.append(lr_d / x.shape[0] * (u_d @ g))
    return torch.stack(out)


def shared_part(ctx: RunContext, theta_d, theta_g, x, z, w):
    """The u-independent part of a backward step: the step's gradients with their graph."""
    td, tg = theta_d.detach().requires_grad_(True), theta_g.detach().requires_grad_(True)
    return ctx.gan.step_gradients(td, tg, x, z, w.detach().requires_grad_(True), create_graph=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--repeat", type=int, default=10, help="calls per timing (the minimum is reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = store.store_root(args.store)
    run = store.open_run(root, args.run)
    cfg = load_run_config(run)
    trace = Trace.load(run)
    t = int(np.flatnonzero(trace.kinds != KIND_G)[-1])  # the last step with real data (alternating: not a G step)
    lr_d = float(trace.lrs[t][0])
    out: dict = {"run": args.run, "threads": torch.get_num_threads(), "repeat": args.repeat}
    for dtype in (torch.float32, torch.float64):
        ctx = RunContext.create(cfg, root).with_dtype(dtype)
        state = trace.layout.split(torch.from_numpy(np.array(trace.states[t])).to(ctx.device, dtype))
        theta_d, theta_g = state.theta_d, state.theta_g
        inp = trace_inputs(ctx, trace, t)
        x, z, w = inp.x, inp.z, inp.w
        gen = torch.Generator().manual_seed(0)
        adjoint = [torch.randn(3, size, dtype=dtype, generator=gen) for size in trace.layout.sizes]
        train_s = fastest(lambda: step(ctx.gan, trace.rule, state, inp), args.repeat)
        shared_s = fastest(lambda: shared_part(ctx, theta_d, theta_g, x, z, w), args.repeat)
        back1 = fastest(lambda: backward_step(ctx, trace, t, state, [a[:1] for a in adjoint]), args.repeat)
        back3 = fastest(lambda: backward_step(ctx, trace, t, state, adjoint), args.repeat)
        name = str(dtype).removeprefix("torch.")
        out[name] = {
            "train_step_s": train_s, "shared_s": shared_s, "double_backward_s": back1 - shared_s,
            "backward_step_1_metric_s": back1, "backward_step_3_metrics_s": back3,
            "backward_over_training": back1 / train_s, "three_metrics_over_one": back3 / back1,
            "linear_k_ratio": (shared_s + 3 * (back1 - shared_s)) / back1,
        }
        print(name, json.dumps(out[name]), flush=True)
    ctx = RunContext.create(cfg, root).with_dtype(torch.float32)
    theta_d = trace.layout.split(torch.from_numpy(np.array(trace.states[t])).to(ctx.device, torch.float32)).theta_d
    x = ctx.train_x[torch.as_tensor(trace.batch(t))]
    u = torch.randn(theta_d.numel(), generator=torch.Generator().manual_seed(1))

    def vectorized():  # one forward-mode pass: <grad loss_real(x_j), u_D> for every j of the batch
        return lr_d / x.shape[0] * jvp(lambda td: ctx.gan.real_losses(td, x), (theta_d,), (u,))[1]

    loop_s = fastest(lambda: per_instance_loop(ctx, theta_d, x, u, lr_d), max(1, args.repeat // 3))
    vec_s = fastest(vectorized, args.repeat)
    forward_s = fastest(lambda: ctx.gan.real_losses(theta_d, x), args.repeat)
    naive = per_instance_loop(ctx, theta_d, x, u, lr_d)
    out["per_instance"] = {
        "batch": x.shape[0], "loop_s": loop_s, "vectorized_jvp_s": vec_s, "batched_forward_s": forward_s,
        "vectorized_speedup": loop_s / vec_s, "vectorized_ceiling": loop_s / forward_s,
        "max_abs_diff_vs_loop": float((vectorized() - naive).abs().max()),
        "max_abs_loop_term": float(naive.abs().max()),
    }
    out["float64_over_float32_backward"] = (
        out["float64"]["backward_step_1_metric_s"] / out["float32"]["backward_step_1_metric_s"]
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
