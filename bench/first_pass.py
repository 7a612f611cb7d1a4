"""The time the Influence page says before a run's first pass, against the pass itself.

    .venv/bin/python bench/first_pass.py --store DIR --run RUN_ID [--metrics fid is dloss] [--threads 2]

Prints what the page says for RUN (app/explorer/tables.first_pass_text over the other runs' stored passes in
DIR, as `cache.store_passes` reads them), then computes the influence pass of --metrics on RUN (no spot check)
and prints its seconds (docs/benchmarks.md, "Time said before a job starts"). The pass is stored in RUN as the
app's would be.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "app"))  # the app's `explorer` package: the page's own text

from explorer import cache, tables  # noqa: E402
from influence import store  # noqa: E402
from influence.estimator import EstimateOptions, estimate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--metrics", nargs="+", default=["fid", "is", "dloss"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = store.open_run(args.store, args.run)
    if any(run.path("influence").glob("*/meta.json")):
        sys.exit(f"{args.run} has an influence pass already: the page says this only before the first one")
    traced = run.read_json("summary.json")["traced_steps"]
    said = tables.first_pass_text(cache.store_passes(str(args.store), cache.passes_stamp(args.store)),
                                  run.read_json("config.json"), args.run, traced, len(args.metrics))
    print(f"said: {said}")
    started = time.perf_counter()
    results = estimate(run, args.metrics, EstimateOptions())
    wall = time.perf_counter() - started
    seconds = sum(r.meta["seconds"] for r in results.values())
    print(f"the pass ({' '.join(args.metrics)}, {args.threads} threads): {seconds:.1f} s ({wall:.1f} s wall)")


if __name__ == "__main__":
    main()
