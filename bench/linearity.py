"""Is the gap between estimated and actual influence the estimator, or non-linearity of removal?

    .venv/bin/python bench/linearity.py --run RUN_ID --metric all --n 200 [--eps 1 0.1 0.01]

ASGD-Influence is the first-order (linear) prediction of removing an instance. For
each eps this replays the traced steps with instance j at weight 1 - eps instead of
1 and scales the metric change by 1/eps (eps = 1 is leave-one-out). If the estimator
is exact to first order, agreement (Kendall tau, Pearson r, median relative error)
climbs to ~1 as eps -> 0; a gap that remains at eps = 1 then comes from the metric
responding non-linearly to a whole removal, not from the estimate.
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
from scipy import stats

from influence import store
from influence.context import RunContext, load_run_config
from influence.estimator import EstimateOptions, estimate
from influence.train import Trace, replay
from influence.validation import select_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--metric", default="all")
    ap.add_argument("--n", type=int, default=200, help="the first n traced instances")
    ap.add_argument("--eps", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="auto", help="backward-pass precision (auto, float32, float64)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = store.store_root(args.store)
    run = store.open_run(root, args.run)
    ctx = RunContext.create(load_run_config(run), root)
    trace = Trace.load(run)
    est_all = estimate(run, [args.metric], EstimateOptions(dtype=args.dtype))[args.metric].scores
    first = trace.step_of_instance(ctx.dataset.n_train)
    ids = select_ids(ctx.dataset.n_train, args.n, "first", 0, first >= 0)
    valid = ctx.evaluator("valid")
    final_d, final_g = (torch.from_numpy(a).to(ctx.device, ctx.dtype) for a in trace.final_eval())
    base = valid.evaluate(final_d, final_g, (args.metric,))[args.metric]
    est = est_all[ids]
    for eps in args.eps:
        started = time.perf_counter()
        actual = np.empty(len(ids))
        for i, j in enumerate(ids.tolist()):
            theta_d, theta_g = replay(ctx, trace, [j], start=int(first[j]), removed_weight=1.0 - eps)
            actual[i] = (valid.evaluate(theta_d, theta_g, (args.metric,))[args.metric] - base) / eps
        rel = np.abs(actual - est) / np.maximum(np.abs(actual), 1e-300)
        print(json.dumps({
            "run": args.run, "metric": args.metric, "n": len(ids), "eps": eps,
            "kendall_tau": float(stats.kendalltau(est, actual).statistic),
            "pearson_r": float(stats.pearsonr(est, actual).statistic),
            "median_relative_error": float(np.median(rel)),
            "median_actual_over_estimate": float(np.nanmedian(actual / np.where(est == 0, np.nan, est))),
            "seconds": time.perf_counter() - started,
        }), flush=True)


if __name__ == "__main__":
    main()
