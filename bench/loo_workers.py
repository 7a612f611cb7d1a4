"""Leave-one-out replays in this process vs in worker processes, on a scratch copy of a run.

    .venv/bin/python bench/loo_workers.py --run RUN_ID [--store DIR] [--n 16] [--threads 1 2]

For each torch thread count: n replays (the first n traced instances) with workers=1
and with workers = cores / threads, each on a fresh copy so nothing is cached; prints
wall seconds and checks that both give the same changes bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from influence import store
from influence.context import load_run_config
from influence.train import Trace
from influence.validate import leave_one_out, select_ids


def timed_loo(root: Path, run_id: str, ids: np.ndarray, workers: int) -> tuple[np.ndarray, float]:
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "store"
        shutil.copytree(root / run_id, copy / run_id, ignore=shutil.ignore_patterns("validate"))
        os.symlink(store.cache_dir(root).resolve(), copy / "_cache")
        run = store.open_run(store.store_root(copy), run_id)
        run.forget("validate/")
        started = time.perf_counter()
        metrics = ["all"] if load_run_config(run).is_2d else ["fid", "is"]
        actual, _ = leave_one_out(run, metrics, ids, workers=workers)
        return actual, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    root = store.store_root(args.store)
    run = store.open_run(root, args.run)
    trace = Trace.load(run)
    n_train = run.read_json("summary.json")["n_train"]
    ids = select_ids(n_train, args.n, "first", 0, trace.step_of_instance(n_train) >= 0)
    for threads in args.threads:
        torch.set_num_threads(threads)
        workers = max(1, (os.cpu_count() or 1) // threads)
        here, here_s = timed_loo(root, args.run, ids, 1)
        there, there_s = timed_loo(root, args.run, ids, workers)
        print(json.dumps({"run": args.run, "n": args.n, "threads": threads, "workers": workers,
                          "seconds_here": here_s, "seconds_workers": there_s, "speedup": here_s / there_s,
                          "bit_identical": bool(np.array_equal(here, there))}), flush=True)


if __name__ == "__main__":
    main()
