"""Cost of exact adjoints through the optimizer's state: backward step / training step per optimizer,
on one model, in one process (issue 10's target: Adam's ratio at most 1.2x SGD's).

    .venv/bin/python bench/optimizer_cost.py --preset mnist-adam [--repeat 10] [--threads 1]

The model, batch and dtype come from the preset; the state is the seed's initial
parameters with buffers filled from one real gradient (m = g, v = g^2: the values only
matter for the arithmetic's cost). For each optimizer (sgd, momentum, adam) and step kind
of the preset's scheme it times, minimum over --repeat calls:
- one training step (`stepmap.step`),
- one backward step for one metric (`stepmap.state_vjp`, exact) and, for Adam and
  momentum, with frozen buffers,
and prints backward / training per optimizer and that ratio over SGD's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from influence import store
from influence.config import preset
from influence.context import RunContext
from influence.optim import OptimizerSpec
from influence.stepmap import KIND_BOTH, KIND_D, KIND_G, StateLayout, StepInputs, TrainingRule, state_vjp, step
from influence.train import initial_train_state

from estimate import fastest  # bench/estimate.py: bench/ is the script's folder, on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mnist-adam")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float64", help="backward-pass dtype (auto picks float64 for these models)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext.create(cfg, store.store_root(tmp), dtype=args.dtype)
        base = initial_train_state(ctx)
    b = cfg.train.batch_size
    x, w = ctx.train_x[:b], torch.ones(b, dtype=ctx.dtype)
    z = torch.randn(b, cfg.model.z_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(ctx.dtype)
    td, tg = base.theta_d.clone().requires_grad_(True), base.theta_g.clone().requires_grad_(True)
    g_d, g_g, _, _ = ctx.gan.step_gradients(td, tg, x, z, w)
    kinds = [KIND_BOTH] if cfg.train.scheme == "simultaneous" else [KIND_D, KIND_G]
    out: dict = {"preset": args.preset, "threads": torch.get_num_threads(), "dtype": args.dtype, "repeat": args.repeat,
                 "kinds": ["both" if k == KIND_BOTH else "d" if k == KIND_D else "g" for k in kinds]}
    for kind_name in ("sgd", "momentum", "adam"):
        spec = dataclasses.replace(OptimizerSpec.from_train_config(cfg.train), kind=kind_name)
        rule = TrainingRule(spec, cfg.train.ema_decay)
        fill = {"sgd": (), "momentum": (g_d,), "adam": (g_d, g_d * g_d)}[kind_name]
        fill_g = {"sgd": (), "momentum": (g_g,), "adam": (g_g, g_g * g_g)}[kind_name]
        state = dataclasses.replace(base, buf_d=tuple(t.detach().clone() for t in fill),
                                    buf_g=tuple(t.detach().clone() for t in fill_g))
        layout = StateLayout.of(base.theta_d.numel(), base.theta_g.numel(), rule)
        adjoint = [torch.randn(1, n, dtype=ctx.dtype, generator=torch.Generator().manual_seed(1)) for n in layout.sizes]
        inputs = [StepInputs(k, x, z, w, 1e-4, 1e-4, 10, 10) for k in kinds]

        def train_steps():
            for inp in inputs:
                step(ctx.gan, rule, state, inp)

        def backward_steps(frozen: bool = False):
            for inp in inputs:
                state_vjp(ctx.gan, rule, state, inp, adjoint, frozen)

        row = {"train_s": fastest(train_steps, args.repeat), "backward_s": fastest(backward_steps, args.repeat)}
        row["backward_over_training"] = row["backward_s"] / row["train_s"]
        if kind_name != "sgd":
            row["backward_frozen_s"] = fastest(lambda: backward_steps(True), args.repeat)
            row["frozen_over_training"] = row["backward_frozen_s"] / row["train_s"]
        out[kind_name] = row
        print(kind_name, json.dumps(row), flush=True)
    for kind_name in ("momentum", "adam"):
        out[f"{kind_name}_ratio_over_sgd_ratio"] = out[kind_name]["backward_over_training"] / out["sgd"]["backward_over_training"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
