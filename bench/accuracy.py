"""Estimation accuracy over seeds: the paper's experiment 1, with the backward-pass diagnostics.

    .venv/bin/python bench/accuracy.py --preset quick --seeds 0 1 2 --metric fid --metric is --n 200
    .venv/bin/python bench/accuracy.py --preset quick --set train.lr_schedule=none --label unstable ...

For each seed: train (or reuse) the run, estimate influence, replay n leave-one-out
counterfactuals, and print Kendall tau / Pearson r / Jaccard with the estimate's
growth factor and verdict; then the mean over seeds. Everything is cached in the
store, so an interrupted report resumes where it stopped.
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

from influence import store
from influence.config import apply_overrides, preset
from influence.estimator import EstimateOptions
from influence.train import train
from influence.validation import validate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--metric", action="append", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--selection", default="first", choices=["first", "random"],
                    help="first: the instances the trace sees first (the longest replays); random: a seeded sample")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--optimizer-state", nargs="+", default=["exact"], choices=["exact", "frozen"],
                    help="estimate in these modes on the same runs and leave-one-out pairs (e.g. exact frozen)")
    ap.add_argument("--method", nargs="+", default=["exact"], choices=["exact", "no-propagation", "tracin"],
                    help="and with these methods (the baselines: what the recursion buys), each with every mode")
    ap.add_argument("--label", default="")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (run two reports side by side with 1)")
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = args.metric or ["fid", "is"]
    root = store.store_root(args.store)
    rows = []
    for seed in args.seeds:
        cfg = apply_overrides(preset(args.preset, seed), args.set)
        started = time.perf_counter()
        run = train(cfg, root)
        train_s = time.perf_counter() - started
        for mode, method in [(mode, method) for method in args.method for mode in args.optimizer_state]:
            options = EstimateOptions(dtype=args.dtype, optimizer_state=mode, method=method)
            acc = validate(run, metrics, n=args.n, selection=args.selection, options=options)
            for m, a in acc.items():
                infl = _influence_meta(run, m, options)
                row = {"label": args.label, "preset": args.preset, "seed": seed, "run_id": run.run_id, "metric": m,
                       "optimizer_state": mode, "method": method, "n": args.n, "selection": args.selection, "kendall_tau": a.kendall_tau, "pearson_r": a.pearson_r,
                       "jaccard_top10": a.jaccard_top10, "growth": infl["growth"], "verdict": infl["verdict"],
                       "estimate_seconds": infl["seconds"], "loo_seconds": a.seconds_loo,
                       "train_seconds_this_call": train_s, "test": run.read_json("summary.json")["test"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\nmean over seeds:")
    for mode, method in [(mode, method) for method in args.method for mode in args.optimizer_state]:
        for m in metrics:
            r = [x for x in rows if x["metric"] == m and x["optimizer_state"] == mode and x["method"] == method]
            print(json.dumps({"label": args.label, "metric": m, "optimizer_state": mode, "method": method, "seeds": len(r),
                              "kendall_tau_mean": float(np.mean([x["kendall_tau"] for x in r])),
                              "kendall_tau_min": float(np.min([x["kendall_tau"] for x in r])),
                              "pearson_r_mean": float(np.mean([x["pearson_r"] for x in r])),
                              "jaccard_mean": float(np.mean([x["jaccard_top10"] for x in r])),
                              "growth_max": float(np.max([x["growth"] for x in r])),
                              "verdicts": sorted({x["verdict"] for x in r})}))


def _influence_meta(run: store.Run, metric: str, options: EstimateOptions) -> dict:
    from influence.estimator import load_result

    return load_result(run, metric, options, run.read_npy("weights/final.npy").shape[0]).meta


if __name__ == "__main__":
    main()
