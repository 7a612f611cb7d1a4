"""What the engine's allocator settings (influence/allocator.py) do to replays and the influence pass.

    OMP_NUM_THREADS=1 .venv/bin/python bench/allocator.py --run RUN_ID [--store DIR] [--k 10] [--repeat 2]
    .venv/bin/python bench/allocator.py --phase influence --run RUN_ID [--store DIR] [--repeat 2]

In a fresh process, once with glibc's own settings (GAN_INFLUENCE_MALLOC=default) and once with the
engine's (set by mallopt, as the CLI does), `--repeat` times in turn:
- replays: k leave-one-out replays of the run's first traced instances, after one warm-up replay;
- influence: the influence pass on FID (IS, ALL on 2D data) of a copy of the run without its results.
Prints wall seconds, user and system CPU seconds and minor page faults of that work, one JSON line
each, then the medians. The thread count is the process's (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, shutil, sys, tempfile, time
from pathlib import Path
from influence import allocator, store
allocator.tune_this_process()
from influence.context import RunContext, load_run_config
from influence.estimator import EstimateOptions, estimate
from influence.train import Trace
from influence.counterfactual import Lane, LanePlan
from influence.validation.replays import measure_lanes
root, run_id, phase, k = store.store_root(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3], int(sys.argv[4])
scratch = tempfile.mkdtemp()
if phase == "influence":  # a copy without results, so the pass runs instead of reading its cache
    shutil.copytree(root / run_id, Path(scratch) / run_id, ignore=shutil.ignore_patterns("influence", "validate"))
    root = store.store_root(scratch)
run = store.open_run(root, run_id)
cfg, trace = load_run_config(run), Trace.load(run)
if phase == "influence":
    run.forget("influence/")
    run.forget("validate/")
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    estimate(run, ["all" if cfg.is_2d else "fid"], EstimateOptions())
else:
    metrics = ("all",) if cfg.is_2d else ("fid", "is")
    ctx = RunContext.create(cfg, run.root)
    replayer = lambda j, metrics: measure_lanes(ctx, trace, [Lane.of([j])], (("valid", metrics),),  # noqa: E731
                                                LanePlan("sequential", 1, ""))
    n_train = run.read_json("summary.json")["n_train"]
    ids = [int(j) for j in (trace.step_of_instance(n_train) >= 0).nonzero()[0][: k + 1]]
    replayer(ids[0], metrics)  # warm-up: the evaluator's statistics, first-touch of the buffers
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for j in ids[1:]:
        replayer(j, metrics)
r1 = resource.getrusage(resource.RUSAGE_SELF)
shutil.rmtree(scratch)
print(json.dumps({"seconds": time.perf_counter() - t0, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime, "page_faults": r1.ru_minflt - r0.ru_minflt}))
"""


def once(args, setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["GAN_INFLUENCE_MALLOC"] = setting
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args.store), args.run, args.phase, str(args.k)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{args.phase} failed: {out.stderr.strip()[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--phase", choices=["replays", "influence"], default="replays")
    ap.add_argument("--k", type=int, default=10, help="replays (--phase replays)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rows = {"default": [], "engine": []}
    for r in range(args.repeat):
        for setting in rows:
            rows[setting].append(once(args, setting))
            print(json.dumps({"round": r, "allocator": setting, "phase": args.phase, **rows[setting][-1]}), flush=True)
    median = {s: {k: float(np.median([x[k] for x in xs])) for k in xs[0]} for s, xs in rows.items()}
    print(json.dumps({"bench": "allocator", "run": args.run, "phase": args.phase, "median": median,
                      "speedup": median["default"]["seconds"] / median["engine"]["seconds"]}), flush=True)


if __name__ == "__main__":
    main()
