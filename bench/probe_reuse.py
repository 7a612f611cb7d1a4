"""What a run traced at the probe's rate saves when its influence pass is the probe's walk (`estimator.adopt_pass`)
and its traced epoch the probe's segment (`train.run`).

    .venv/bin/python bench/probe_reuse.py --store DIR --preset quick [--seed 0] [--threads 2] [--set KEY=VALUE ...]
    .venv/bin/python bench/probe_reuse.py --store DIR --from RUN_ID [--keep-optimizer]   # a fine-tune of a store run
    ... --train-again [--again-after]   # also train the config in a temporary store, the traced epoch trained again

Trains the preset with train.trace_lr=auto, or fine-tunes a run of --store for one traced epoch (`finetune`'s
default: auto) (or reuses either in --store), then times `estimate` of the walked metrics
(FID and D-loss; ALL and D-loss on 2D) on the run, where they were stored from the probe's walk, and on a copy of
the run without its influence results, where the pass runs; checks that both give the same files bit for bit.
With --train-again, first (--again-after: after the run) trains the config in a temporary store beside --store the
way training ran before the probe's segment was kept (the epoch trained after the probe), times both trainings and
compares the two runs' trace, weights and history. Prints one JSON line: training and probe seconds, the two
estimates' seconds, whether the files are equal, and the second training's seconds and comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from influence.config import apply_overrides, preset  # noqa: E402
from influence.estimator import EstimateOptions, estimate, result_name  # noqa: E402
from influence.finetune import configure  # noqa: E402
from influence.train import train  # noqa: E402

FILES = ("scores", "window_scores", "flags", "u_norms", "state_norms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, type=Path)
    p.add_argument("--preset", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--from", dest="from_run", help="fine-tune this run of --store instead of training the preset")
    p.add_argument("--keep-optimizer", action="store_true", help="the fine-tune starts from the run's Adam moments")
    p.add_argument("--train-again", action="store_true",
                   help="also train with the traced epoch trained again after the probe (timed, compared)")
    p.add_argument("--again-after", action="store_true", help="--train-again's training after the run's, not before")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_run:
        cfg = configure(args.store, from_run_id=args.from_run, keep_optimizer=args.keep_optimizer, overrides=args.set)
    else:
        cfg = apply_overrides(preset(args.preset, args.seed), ["train.trace_lr=auto", *args.set])
    again = train_again(cfg, args.store) if args.train_again and not args.again_after else None
    started = time.perf_counter()
    run = train(cfg, args.store)
    train_s = time.perf_counter() - started
    if args.train_again and args.again_after:
        again = train_again(cfg, args.store)
    if again is not None:
        again["order"] = "after" if args.again_after else "before"
        again["runs_equal"] = same_run(run, again.pop("run"))
        shutil.rmtree(again.pop("root"))
    summary = run.read_json("summary.json")
    probe = summary["trace_lr"]
    adopted = probe.get("influence")
    metrics = adopted["metrics"] if adopted else list(probe["metrics"])
    started = time.perf_counter()
    estimate(run, metrics, EstimateOptions())
    read_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(dir=args.store) as tmp:
        shutil.copytree(run.dir, Path(tmp) / run.run_id, ignore=shutil.ignore_patterns("influence", "_*"))
        copy = store.open_run(Path(tmp), run.run_id)
        started = time.perf_counter()
        estimate(copy, metrics, EstimateOptions())
        pass_s = time.perf_counter() - started
        name = result_name(EstimateOptions(), n_params(run))
        equal = all(np.array_equal(run.read_npy(f"influence/{m}-{name}/{f}.npy"),
                                   copy.read_npy(f"influence/{m}-{name}/{f}.npy")) for m in metrics for f in FILES)
    print(json.dumps({
        "preset": cfg.preset, "seed": cfg.seed, "from_run": args.from_run, "run_id": run.run_id,
        "threads": args.threads,
        "traced_steps": summary["traced_steps"], "chosen_lr": probe["chosen"], "adopted": adopted,
        "train_seconds_this_call": round(train_s, 1), "probe_seconds": round(probe["seconds"], 1),
        "estimate_seconds_adopted": round(read_s, 2), "estimate_seconds_fresh_pass": round(pass_s, 1),
        "files_equal": equal, "train_again": again}))


def train_again(cfg, root: Path) -> dict:
    """The config trained in a temporary store as before the segment was kept: the probe, then the traced epoch."""
    from influence.train import run as train_run

    keep = train_run._probe_segment
    train_run._probe_segment = lambda *args: None
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root))
    try:
        started = time.perf_counter()
        run = train(cfg, tmp)
        return {"run": run, "root": tmp, "train_seconds": round(time.perf_counter() - started, 1),
                "traced_epoch_seconds": round(run.read_json("history.json")[-1]["seconds"], 1)}
    finally:
        train_run._probe_segment = keep


def same_run(a: store.Run, b: store.Run) -> bool:
    """The two runs' trace and weights equal bit for bit, their histories but for the seconds."""
    names = [f"trace/{n}" for n in ("states", "batches", "z", "lrs", "kinds", "counts", "stored_steps", "final_state")]
    drop = lambda h: [{k: v for k, v in e.items() if k not in ("seconds", "probe_segment")} for e in h]  # noqa: E731
    return (all(np.array_equal(a.read_npy(f"{n}.npy"), b.read_npy(f"{n}.npy")) for n in [*names, "weights/final"])
            and drop(a.read_json("history.json")) == drop(b.read_json("history.json")))


def n_params(run: store.Run) -> int:
    return int(run.read_npy("weights/final.npy").shape[0])


if __name__ == "__main__":
    main()
