"""The traced learning rate on a preset, before and after `train.trace_lr=auto` (issue 24; docs/benchmarks.md).

    .venv/bin/python bench/trace_lr.py --store DIR --preset P [--seed S] [--threads 1]
        [--variants schedule auto auto-measured auto-passed] [--metric fid dloss]

Per variant one CLI training (`train --trace-lr ...`) and one estimate of the metrics stacked (`--check none`),
each its own process, so CPU seconds and peak RSS are its own. Prints one JSON line per variant: the rate traced,
the probe's rungs (segment and epoch growth), its reason and cost against the traced epochs, each metric's growth
and verdict, and time and peak RSS per phase. auto-measured walks every rung not refused on its own segment
over the epoch but replays nothing (train.trace_lr_confirm=measured); auto-passed is the probe as it was before
that (passed). A finished run is reused from the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from folder32 import cli  # noqa: E402  (the benches' one CLI runner: JSON, CPU seconds, wall, peak RSS)

VARIANTS = {"schedule": ["--trace-lr", "schedule"], "auto": ["--trace-lr", "auto"],
            "auto-passed": ["--trace-lr", "auto", "--set", "train.trace_lr_confirm=passed"],
            "auto-measured": ["--trace-lr", "auto", "--set", "train.trace_lr_confirm=measured"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["auto"])
    ap.add_argument("--metric", nargs="+", default=["fid", "dloss"])
    args = ap.parse_args()
    for variant in args.variants:
        trained = cli(args.store, args.threads, "train", "--preset", args.preset, "--seed", str(args.seed),
                      *VARIANTS[variant])
        run_id = trained["result"]["run_id"]
        probe = trained["result"].get("trace_lr") or {}
        metrics = [a for m in args.metric for a in ("--metric", m)]
        est = cli(args.store, args.threads, "estimate", "--run", run_id, *metrics, "--check", "none")
        print(json.dumps({
            "preset": args.preset, "seed": args.seed, "variant": variant, "run_id": run_id,
            "test": trained["result"].get("test"), "chosen_lr": probe.get("chosen"), "probe_cost": probe.get("cost"),
            "probe": probe.get("rungs"), "probe_reason": probe.get("reason"),
            "train": {k: trained[k] for k in ("cpu_s", "wall_s", "peak_rss_mb")},
            "estimate": {k: est[k] for k in ("cpu_s", "wall_s", "peak_rss_mb")},
            **{m: {"growth": o["growth"], "verdict": o["verdict"], "pass_s": o["seconds"]}
               for m, o in est["result"].items()},
        }), flush=True)


if __name__ == "__main__":
    main()
