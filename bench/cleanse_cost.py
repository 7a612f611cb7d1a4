"""Seconds per cleansing attempt (a replay of the traced steps without a removal set, and its evaluations).

    .venv/bin/python bench/cleanse_cost.py --store DIR --run RUN_ID [--sets 3] [--size 100] [--repeat 2] [--threads 2]

Each round cleanses --sets random removal sets of --size ids (seeded, the same every round and every code
version) one after another on a fresh copy of the run (the store is left as it is; the copy keeps the run's
influence results, so each attempt's prediction is read as in the app) and prints one JSON line: the seconds of
each `cleanse` call and their median. Run it from two checkouts on the same run, rounds in turn, to compare code
versions (docs/benchmarks.md, "A cleanse's prediction checked on the estimate's split").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence import store  # noqa: E402
from influence.cleanse import cleanse  # noqa: E402
from influence.context import RunContext, load_run_config  # noqa: E402


def one_round(run: store.Run, sets: list[list[int]]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(run.dir, Path(tmp) / run.run_id, ignore=shutil.ignore_patterns("cleanse"))
        fresh = store.open_run(Path(tmp), run.run_id)
        ctx = RunContext.create(load_run_config(fresh), fresh.root)
        ctx.evaluator("test"), ctx.evaluator("valid")  # the feature statistics: start-up, not the attempt's work
        seconds = []
        for ids in sets:
            started = time.perf_counter()
            result = cleanse(fresh, ids, ctx=ctx)
            seconds.append(round(time.perf_counter() - started, 2))
    return {"run": run.run_id, "sets": len(sets), "size": len(sets[0]), "threads": torch.get_num_threads(),
            "seconds": seconds, "median": statistics.median(seconds),
            "splits": ["test", "valid"] if result.as_dict().get("validation") else ["test"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--sets", type=int, default=3)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = store.open_run(Path(args.store), args.run)
    n_train = RunContext.create(load_run_config(run), run.root).dataset.n_train
    rng = np.random.default_rng(args.seed)
    sets = [sorted(rng.choice(n_train, args.size, replace=False).tolist()) for _ in range(args.sets)]
    for _ in range(args.repeat):
        print(json.dumps(one_round(run, sets)), flush=True)


if __name__ == "__main__":
    main()
