"""Estimator performance ratios, measured in one process on one run.

    .venv/bin/python bench/estimate.py --run RUN_ID [--store DIR] [--steps 30]

- backward / training: seconds of one influence backward step (1 metric) over one
  training step of the same traced step, same dtype (float32 and the default dtype)
- vectorized vs loop: the batch's per-instance terms from one vector-Jacobian product
  vs one autograd call per instance (batch 100)
- k metrics in one pass vs one: backward step with 3 stacked u vectors vs 1
- float64 vs float32 backward step
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.func import jvp

from influence import store
from influence.context import RunContext, load_run_config
from influence.estimate import backward_step
from influence.train import Trace, sgd_step


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def per_instance_loop(ctx: RunContext, trace: Trace, t: int, u_d: torch.Tensor) -> torch.Tensor:
    """The naive alternative: one gradient per instance, then a dot product with u_D."""
    ids = trace.batch(t)
    flat = torch.from_numpy(np.array(trace.params[t])).to(ctx.device, ctx.dtype)
    theta_d, _ = trace.split(flat)
    lr_d = float(trace.lrs[t][0])
    out = []
    for j in ids:
        td = theta_d.detach().requires_grad_(True)
        loss = ctx.gan.real_losses(td, ctx.train_x[int(j)][None]).sum()
        (g,) = torch.autograd.grad(loss, td)
        out.append(lr_d / len(ids) * (u_d[0] @ g))
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--steps", type=int, default=10, help="repetitions per timing")
    args = ap.parse_args()
    root = store.store_root(args.store)
    run = store.open_run(root, args.run)
    cfg = load_run_config(run)
    trace = Trace.load(run)
    t = trace.steps - 1
    out: dict = {"run": args.run, "threads": torch.get_num_threads()}
    for dtype in (torch.float32, torch.float64):
        ctx = RunContext.create(cfg, root).with_dtype(dtype)
        flat = torch.from_numpy(np.array(trace.params[t])).to(ctx.device, dtype)
        theta_d, theta_g = trace.split(flat)
        ids = torch.as_tensor(trace.batch(t))
        x = ctx.train_x[ids]
        z = torch.from_numpy(np.array(trace.z[t, : len(ids)])).to(dtype)
        w = torch.ones(len(ids), dtype=dtype)
        u_d = torch.randn(3, theta_d.numel(), dtype=dtype)
        u_g = torch.randn(3, theta_g.numel(), dtype=dtype)
        train_s = timed(lambda: sgd_step(ctx, theta_d, theta_g, x, z, w, 1e-3, 1e-3), args.steps)
        back1 = timed(lambda: backward_step(ctx, trace, t, u_d[:1], u_g[:1]), args.steps)
        back3 = timed(lambda: backward_step(ctx, trace, t, u_d, u_g), args.steps)
        name = str(dtype).removeprefix("torch.")
        out[name] = {"train_step_s": train_s, "backward_step_1_metric_s": back1, "backward_step_3_metrics_s": back3,
                     "backward_over_training": back1 / train_s, "three_metrics_over_one": back3 / back1}
        print(name, json.dumps(out[name]), flush=True)
        if dtype == torch.float32:
            lr_d = float(trace.lrs[t][0])

            def vectorized():  # one forward-mode pass: <grad loss_real(x_j), u_D> for every j
                return lr_d / len(ids) * jvp(lambda td: ctx.gan.real_losses(td, x), (theta_d,), (u_d[0],))[1]

            loop_s = timed(lambda: per_instance_loop(ctx, trace, t, u_d[:1]), max(1, args.steps // 5))
            vec_s = timed(vectorized, args.steps)
            in_step = backward_step(ctx, trace, t, u_d[:1], u_g[:1])[2][0]
            naive = per_instance_loop(ctx, trace, t, u_d[:1])
            out["per_instance_loop_s"] = loop_s
            out["vectorized_jvp_s"] = vec_s
            out["vectorized_speedup"] = loop_s / vec_s
            # In the estimator the terms come out of the step's one vjp at no extra pass.
            out["loop_over_whole_backward_step"] = loop_s / back1
            out["backward_step_terms_vs_loop_max_abs_diff"] = float((in_step - naive).abs().max())
            out["jvp_terms_vs_loop_max_abs_diff"] = float((vectorized() - naive).abs().max())
    out["float64_over_float32_backward"] = out["float64"]["backward_step_1_metric_s"] / out["float32"]["backward_step_1_metric_s"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
