"""What the engine's allocator settings (influence/allocator.py) do to leave-one-out replays.

    OMP_NUM_THREADS=1 .venv/bin/python bench/allocator.py --run RUN_ID [--store DIR] [--k 10] [--repeat 2]

Runs k replays of the run's first traced instances in a fresh process, once with glibc's own
settings (GAN_INFLUENCE_MALLOC=default) and once with the engine's (set by mallopt, as the CLI
does), `--repeat` times in turn; one warm-up replay first. Prints wall seconds, user and system
CPU seconds and minor page faults of the k replays, one JSON line each, then the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from influence import allocator, store
allocator.tune_this_process()
from influence.context import RunContext, load_run_config
from influence.train import Trace
from influence.validate import _Replayer
run = store.open_run(store.store_root(json.loads(sys.argv[1])), sys.argv[2])
cfg, trace = load_run_config(run), Trace.load(run)
metrics = ("all",) if cfg.is_2d else ("fid", "is")
replayer = _Replayer(RunContext.create(cfg, run.root), trace, 0)
n_train = run.read_json("summary.json")["n_train"]
ids = [int(j) for j in (trace.step_of_instance(n_train) >= 0).nonzero()[0][: int(sys.argv[3]) + 1]]
replayer(ids[0], metrics)  # warm-up: the evaluator's statistics, first-touch of the buffers
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for j in ids[1:]:
    replayer(j, metrics)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - t0, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime, "page_faults": r1.ru_minflt - r0.ru_minflt}))
"""


def once(args, setting: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["GAN_INFLUENCE_MALLOC"] = setting
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args.store), args.run, str(args.k)], cwd=REPO, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"replays failed: {out.stderr.strip()[-1500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--store", default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rows = {"default": [], "engine": []}
    for r in range(args.repeat):
        for setting in rows:
            rows[setting].append(once(args, setting))
            print(json.dumps({"round": r, "allocator": setting, "k": args.k, **rows[setting][-1]}), flush=True)
    median = {s: {k: float(np.median([x[k] for x in xs])) for k in xs[0]} for s, xs in rows.items()}
    print(json.dumps({"bench": "allocator", "run": args.run, "k": args.k, "median": median,
                      "speedup": median["default"]["seconds"] / median["engine"]["seconds"]}), flush=True)


if __name__ == "__main__":
    main()
