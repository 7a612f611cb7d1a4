"""Where a spot check's time goes on a run: one replay step in the training's dtype, and one lane's evaluation.

    .venv/bin/python bench/check_cost.py --store DIR --run RUN_ID [--steps 25] [--threads 1]

Prints ms per replayed step (the last --steps traced steps, nothing removed) and seconds per evaluation of the
run's metrics on the validation split, the two costs a check's lanes pay (docs/benchmarks.md, "Spot check cost").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence import store  # noqa: E402
from influence.context import RunContext, load_run_config  # noqa: E402
from influence.stepmap import step  # noqa: E402
from influence.train import Trace, to_state, trace_inputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--metrics", nargs="+", default=["fid", "is"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = store.open_run(store.store_root(args.store), args.run)
    ctx = RunContext.create(load_run_config(run), run.root)
    trace = Trace.load(run)
    t0, flat = trace.stored_before(max(trace.steps - args.steps, 0))
    state = to_state(ctx, trace.layout, flat)
    started = time.perf_counter()
    for t in range(t0, trace.steps):
        state = step(ctx.gan, trace.rule, state, trace_inputs(ctx, trace, t))[0]
    per_step = (time.perf_counter() - started) / (trace.steps - t0)
    evaluator = ctx.evaluator("valid")
    evaluator.evaluate(state.theta_d, state.eval_generator(trace.ema_eval), args.metrics)  # built once per process
    started = time.perf_counter()
    evaluator.evaluate(state.theta_d, state.eval_generator(trace.ema_eval), args.metrics)
    print(json.dumps({"run": args.run, "dtype": str(ctx.dtype), "threads": args.threads, "steps": trace.steps - t0,
                      "ms_per_step": round(per_step * 1e3, 1), "metrics": args.metrics,
                      "eval_seconds": round(time.perf_counter() - started, 2)}))


if __name__ == "__main__":
    main()
