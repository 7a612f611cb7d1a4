"""The execution layer's figures: wall time with 1 worker and with 2 workers x 1 thread, and the Dask
path's overhead against the former local worker processes (a spawn process pool) at equal parallelism.

    OMP_NUM_THREADS=1 .venv/bin/python bench/execution.py loo --run RUN_ID [--store DIR] [--n 40] [--repeat R]
    OMP_NUM_THREADS=1 .venv/bin/python bench/execution.py sweep [--preset tiny] [--seeds 0 1] [--repeat R]

loo: n leave-one-out replays (the first n traced instances) of a run, on a fresh copy each time:
  here (1 worker), Dask LocalCluster of 2 workers, process pool of 2 workers; checks bit-identity.
sweep: the sweep of the seeds (methods fid, random; counts 50, 200) in a fresh store each time:
  here (1 worker) and on a Dask LocalCluster of 2 workers; checks that the tables are identical.
Every process has the engine's allocator settings (influence/allocator.py; GAN_INFLUENCE_MALLOC=default
measures without them). Each timing includes starting the workers. --repeat R runs the ways in turn R times (a shared
machine drifts by several percent within minutes: interleaved rounds see the same drift) and prints one
JSON line per round, then the medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from influence import allocator, store
from influence.context import RunContext, load_run_config
from influence.train import Trace
from influence.counterfactual import Lane, LanePlan
from influence.validation import leave_one_out, select_ids
from influence.validation.replays import measure_lanes


def _copy(root: Path, run_id: str, scratch: Path) -> store.Run:
    shutil.copytree(root / run_id, scratch / run_id, ignore=shutil.ignore_patterns("validate"))
    run = store.open_run(store.store_root(scratch), run_id)
    run.forget("validate/")
    return run


# ---------------------------------------------------------------- the former local workers, for comparison
_pool_run: tuple | None = None  # (context, trace) of the worker


def _pool_start(root: str, run_id: str, threads: int) -> None:
    global _pool_run
    allocator.tune_this_process()  # as the Dask workers and this process: only the ways of running differ
    torch.set_num_threads(threads)
    run = store.open_run(Path(root), run_id)
    _pool_run = RunContext.create(load_run_config(run), run.root), Trace.load(run)


def _pool_replay(j: int, metrics: tuple[str, ...]) -> dict[str, float]:
    """One leave-one-out lane, sequential (as the execution layer runs a lane when the trace reproduces training)."""
    ctx, trace = _pool_run
    return measure_lanes(ctx, trace, [Lane.of([j])], (("valid", metrics),), LanePlan("sequential", 1, "")).changes[0]["valid"]


def pool_loo(run: store.Run, metrics: list[str], ids: np.ndarray, workers: int) -> np.ndarray:
    done = {}
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_start,
                             initargs=(str(run.root), run.run_id, torch.get_num_threads())) as pool:
        futures = {pool.submit(_pool_replay, int(j), tuple(metrics)): int(j) for j in ids}
        for f in as_completed(futures):
            done[futures[f]] = [f.result()[m] for m in metrics]
    return np.array([done[int(j)] for j in ids]).T


def _rounds(args, ways: tuple[str, ...], once) -> None:
    """`once(way)` -> (seconds, result) for every way, `args.repeat` times; a JSON line per round, then the medians."""
    rounds = []
    for r in range(args.repeat):
        seconds, results = {}, {}
        for way in ways:
            seconds[way], results[way] = once(way)
        line = {"round": r, **{f"seconds_{w}": seconds[w] for w in ways},
                "speedup_dask": seconds["here"] / seconds["dask"],
                "identical": all(_same(results["here"], results[w]) for w in ways)}
        if "pool" in ways:
            line["dask_overhead_vs_pool"] = seconds["dask"] / seconds["pool"] - 1
        print(json.dumps(line), flush=True)
        rounds.append(line)
    median = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0] if k not in ("round", "identical")}
    print(json.dumps({"bench": args.what, "threads": torch.get_num_threads(), "rounds": args.repeat,
                      "median": median, "identical": all(r["identical"] for r in rounds)}), flush=True)


def _same(a, b) -> bool:
    return bool(a.equals(b)) if hasattr(a, "equals") else bool(np.array_equal(a, b))


def bench_loo(args) -> None:
    root = store.store_root(args.store)
    run = store.open_run(root, args.run)
    trace = Trace.load(run)
    n_train = run.read_json("summary.json")["n_train"]
    ids = select_ids(n_train, args.n, "first", 0, trace.step_of_instance(n_train) >= 0)
    metrics = ["all"] if load_run_config(run).is_2d else ["fid", "is"]
    print(json.dumps({"bench": "loo", "run": args.run, "n": args.n}), flush=True)

    def once(way: str):
        with tempfile.TemporaryDirectory() as scratch:
            copy = _copy(root, args.run, Path(scratch))
            started = time.perf_counter()
            if way == "pool":
                result = pool_loo(copy, metrics, ids, 2)
            else:
                result = leave_one_out(copy, metrics, ids, workers=1 if way == "here" else 2)[0]
            return time.perf_counter() - started, result

    _rounds(args, ("here", "dask", "pool"), once)


def bench_sweep(args) -> None:
    import dataclasses

    from influence.config import preset
    from influence.validation import sweep

    configs = [dataclasses.replace(preset(args.preset), seed=s) for s in args.seeds]
    methods, counts = ["fid", "random"], [50, 200]
    print(json.dumps({"bench": "sweep", "preset": args.preset, "seeds": args.seeds}), flush=True)

    def once(way: str):
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            table = sweep(configs, scratch, methods, counts, workers=1 if way == "here" else 2)
            return time.perf_counter() - started, table

    _rounds(args, ("here", "dask"), once)


def main() -> None:
    allocator.tune_this_process()  # as the CLI does
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    loo = sub.add_parser("loo")
    loo.add_argument("--run", required=True)
    loo.add_argument("--store", default=None)
    loo.add_argument("--n", type=int, default=40)
    sw = sub.add_parser("sweep")
    sw.add_argument("--preset", default="tiny")
    sw.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    for p in (loo, sw):
        p.add_argument("--repeat", type=int, default=1, help="rounds of all the ways, interleaved")
    args = ap.parse_args()
    bench_loo(args) if args.what == "loo" else bench_sweep(args)


if __name__ == "__main__":
    main()
