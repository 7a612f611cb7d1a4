"""Estimation accuracy against the number of traced epochs (the paper: FID tau 0.95 / 0.87 / 0.73 / 0.44
at 1 / 5 / 10 / 20 epochs on MNIST).

    .venv/bin/python bench/trace_epochs.py --preset toy2d --epochs 1 2 5 10 --metric all --n 200 --seeds 0

Per seed: trains the preset with train.trace_epochs = max(--epochs) (its own run id), then for each K
validates the estimate over the last K traced epochs (`validate(..., trace_epochs=K)`: the estimate over
those steps, leave-one-out replays from each instance's first step among them) and prints Kendall tau,
Pearson r, Jaccard, the growth factor and the seconds; then the mean over seeds per K as a table.
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
    ap.add_argument("--preset", default="toy2d")
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--metric", action="append", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--traced", type=int, default=None, help="epochs the run traces (default: the largest K)")
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = args.metric or ["all"]
    root = store.store_root(args.store)
    rows = []
    for seed in args.seeds:
        cfg = apply_overrides(preset(args.preset, seed), args.set + [f"train.trace_epochs={args.traced or max(args.epochs)}"])
        run = train(cfg, root)
        for k in sorted(args.epochs):
            started = time.perf_counter()
            acc = validate(run, metrics, n=args.n, options=EstimateOptions(), trace_epochs=k)
            for m, a in acc.items():
                row = {"preset": args.preset, "seed": seed, "run_id": run.run_id, "trace_epochs": k, "metric": m,
                       "n": args.n, "kendall_tau": a.kendall_tau, "pearson_r": a.pearson_r,
                       "jaccard_top10": a.jaccard_top10, "growth": a.growth, "verdict": a.verdict,
                       "loo_seconds": a.seconds_loo, "seconds_this_call": time.perf_counter() - started}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\nmean over seeds:")
    print("| metric | traced epochs | seeds | Kendall tau | Pearson r | Jaccard top-10% | growth (max) |")
    print("|---|---|---|---|---|---|---|")
    for m in metrics:
        for k in sorted(args.epochs):
            r = [x for x in rows if x["metric"] == m and x["trace_epochs"] == k]
            print(f"| {m} | {k} | {len(r)} | {np.mean([x['kendall_tau'] for x in r]):.3f} | "
                  f"{np.mean([x['pearson_r'] for x in r]):.3f} | {np.mean([x['jaccard_top10'] for x in r]):.3f} | "
                  f"{np.max([x['growth'] for x in r]):.3g} |")


if __name__ == "__main__":
    main()
