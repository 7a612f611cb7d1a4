"""Seconds per seed of a stored sweep, by part, and what they predict for a full-size sweep.

    .venv/bin/python bench/sweep_cost.py --store DIR [--sweep KEY] [--target paper-cleansing]
        [--methods fid is dloss iforest random] [--counts 5000 15000 25000] [--seeds 3] [--workers 1]

Reads what the sweep's runs recorded (training seconds and steps, each influence pass's
seconds and traced steps, each cleanse's seconds) and scales per step to the target preset:
training steps = epochs x ceil(n_train / batch), traced steps of its trace, one influence pass
per influence method, one replay of the traced steps per (method, count). Fixed costs of the
short run (evaluations, start-up) are counted per step too, so the prediction is an upper
bound for the per-step work; the evaluations of the target (10k z) are not scaled.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from influence import store
from influence.config import preset
from influence.metrics import available_metrics
from influence.train import steps_per_epoch


def measured(root: Path, sweep: str | None) -> dict:
    base = root / "_sweeps"
    folders = sorted(base.iterdir(), key=lambda p: p.stat().st_mtime)
    folder = base / sweep if sweep else folders[-1]
    spec = store.read_json(folder / "spec.json")
    train_s = train_steps = infl_s = infl_steps = clean_s = clean_steps = 0.0
    for run_id in spec["run_ids"]:
        run = store.open_run(root, run_id)
        summary = run.read_json("summary.json")
        train_s, train_steps = train_s + summary["seconds"], train_steps + summary["steps"]
        for d in run.path("influence").iterdir() if run.exists("influence") else []:
            if (d / "meta.json").exists() and not d.name.startswith("_"):
                meta = store.read_json(d / "meta.json")
                infl_s, infl_steps = infl_s + meta["seconds"], infl_steps + meta["traced_steps"]
        for d in run.path("cleanse").iterdir() if run.exists("cleanse") else []:
            if (d / "result.json").exists():
                clean_s, clean_steps = clean_s + store.read_json(d / "result.json")["seconds"], clean_steps + summary["traced_steps"]
    return {"sweep": folder.name, "runs": len(spec["run_ids"]), "seconds_per_train_step": train_s / train_steps,
            "seconds_per_influence_step": infl_s / max(infl_steps, 1), "seconds_per_replay_step": clean_s / max(clean_steps, 1),
            "train_seconds_per_seed": train_s / len(spec["run_ids"]),
            "influence_seconds_per_seed": infl_s / len(spec["run_ids"]),
            "cleanse_seconds_per_seed": clean_s / len(spec["run_ids"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--sweep", default=None, help="the sweep's key under _sweeps/ (default: the newest)")
    ap.add_argument("--target", default="paper-cleansing")
    ap.add_argument("--n-train", type=int, default=50_000, help="the target's training set size")
    ap.add_argument("--methods", nargs="+", default=["fid", "is", "dloss", "iforest", "random"])
    ap.add_argument("--counts", type=int, nargs="+", default=[5000, 15000, 25000])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="seeds and cleanses run this many at a time")
    args = ap.parse_args()
    m = measured(store.store_root(args.store), args.sweep)
    cfg = preset(args.target)
    per_epoch = steps_per_epoch(args.n_train, cfg.train.batch_size)
    steps = per_epoch * cfg.train.epochs
    traced = cfg.train.trace_steps or per_epoch * cfg.train.trace_epochs
    passes = len([x for x in args.methods if x in available_metrics(cfg.is_2d)])
    seed = {"train": steps * m["seconds_per_train_step"],
            "influence": passes * traced * m["seconds_per_influence_step"],
            "cleanses": len(args.methods) * len(args.counts) * traced * m["seconds_per_replay_step"]}
    total = sum(seed.values()) * args.seeds / args.workers
    print(json.dumps({"measured": m, "target": args.target, "n_train": args.n_train, "train_steps": steps,
                      "traced_steps": traced, "influence_passes": passes, "seconds_per_seed": seed,
                      "seeds": args.seeds, "workers": args.workers, "hours_total": total / 3600}, indent=1))


if __name__ == "__main__":
    main()
