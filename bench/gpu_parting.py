"""Where CUDA and the CPU part on one run's estimate, step by step (after bench/gpu_check.py --store DIR).

    python bench/gpu_parting.py --store DIR/dcgan32/a

Both devices take the same trace in float64: the adjoint at the final state, every recomputed state, and at
every traced step one vector-Jacobian product of the SAME adjoint (the CPU's) through each device's state.
Prints the relative difference of each piece: it tells arithmetic that disagrees from a pass that is merely
sensitive (tiny state differences amplified by the step's Jacobian). Needs CUDA.
"""

from __future__ import annotations

import argparse
import os

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from influence import store
from influence.config import apply_overrides
from influence.context import RunContext, load_run_config
from influence.estimator.backward import adjoint_at, final_state
from influence.objectives import metric_objectives
from influence.stepmap import state_vjp
from influence.train import Trace, states_backward, trace_inputs


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="a store holding the run (its first run is taken)")
    ap.add_argument("--metric", default="dloss")
    args = ap.parse_args()
    root = store.store_root(args.store)
    run = store.open_run(root, store.list_runs(root)[0]["run_id"])
    cfg, trace = load_run_config(run), Trace.load(run)
    print("stored", trace.stored_steps.tolist(), "steps", trace.steps, "kinds", trace.kinds.tolist(), flush=True)
    cg = RunContext.create(cfg, root, "float64")
    cc = RunContext.create(apply_overrides(cfg, ["train.device=cpu"]), root, "float64")
    print("devices", cg.device, cc.device)
    objectives = metric_objectives([args.metric], cfg.is_2d)
    ag, vg = adjoint_at(cg, trace, objectives, final_state(cg, trace))
    ac, vc = adjoint_at(cc, trace, objectives, final_state(cc, trace))
    print(f"{args.metric} values", vg, vc)
    print("adjoint rel", [rel(a, b) for a, b in zip(ag, ac)], "norms", [float(b.norm()) for b in ac], flush=True)
    bg, bc = dict(states_backward(cg, trace)), dict(states_backward(cc, trace))
    for t in sorted(bc):
        print("state", t, [round(rel(a, b), 20) for a, b in zip(bg[t].tensors(), bc[t].tensors())], flush=True)
    for t in sorted(bc, reverse=True):
        lg, jg = state_vjp(cg.gan, trace.rule, bg[t], trace_inputs(cg, trace, t), [a.to(cg.device) for a in ac])
        lc, jc = state_vjp(cc.gan, trace.rule, bc[t], trace_inputs(cc, trace, t), ac)
        print("vjp", t, "kind", int(trace.kinds[t]), "jw rel", rel(jg, jc), "jw norm", float(jc.norm()),
              "lam rel", [round(rel(a, b), 16) for a, b in zip(lg, lc)], flush=True)


if __name__ == "__main__":
    main()
