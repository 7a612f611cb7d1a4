"""Influence pass time with a checkpointed trace against per-step snapshots, on the same run (issue 11's target:
at most 1.4x), and whether the two give the same estimates.

    .venv/bin/python bench/checkpoint_cost.py --store DIR [--preset mnist-adam] [--epochs 2] [--repeat 3] [--threads 1]

Trains the preset twice, once per `train.trace_mode` (the same seed, so the same training: the final
weights are compared bit for bit; only what the trace stores differs), cut to --epochs with the last
traced at the preset's traced rate. Then times the influence pass of the preset's first metric on
each run --repeat times (the result is dropped between repeats; the minimum is reported), and
prints the trace size on disk of both modes, the time ratio and max |difference| of the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from influence.config import apply_overrides, preset
from influence.estimator import EstimateOptions, estimate
from influence.train import train
from shorten import cut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--preset", default="mnist-adam")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = preset(args.preset, args.seed)
    metric = "all" if base.is_2d else "fid"
    out = {"preset": args.preset, "metric": metric, "threads": args.threads}
    scores = {}
    for mode in ("snapshots", "checkpoints"):
        cfg = apply_overrides(base, cut(base, args.epochs) + args.set + [f"train.trace_mode={mode}"])
        run = train(cfg, Path(args.store))
        trace_mb = sum(p.stat().st_size for p in (run.dir / "trace").rglob("*") if p.is_file()) / 2**20
        times = []
        for _ in range(args.repeat):
            run.forget("influence/")
            shutil.rmtree(run.dir / "influence", ignore_errors=True)
            started = time.perf_counter()
            result = estimate(run, [metric], EstimateOptions())[metric]
            times.append(time.perf_counter() - started)
        scores[mode] = result.scores
        out[mode] = {"run_id": run.run_id, "trace_mb": round(trace_mb, 1), "pass_s": round(min(times), 2),
                     "all_s": [round(t, 2) for t in times], "final": run.read_npy("weights/final.npy")}
        print(json.dumps({k: v for k, v in out[mode].items() if k != "final"}), flush=True)
    same_training = bool(np.array_equal(out["snapshots"].pop("final"), out["checkpoints"].pop("final")))
    out["same_training"] = same_training
    out["time_ratio"] = round(out["checkpoints"]["pass_s"] / out["snapshots"]["pass_s"], 3)
    out["size_ratio"] = round(out["checkpoints"]["trace_mb"] / out["snapshots"]["trace_mb"], 4)
    out["max_abs_score_diff"] = float(np.abs(scores["snapshots"] - scores["checkpoints"]).max())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
