"""A real DCGAN end to end on CPU (issue 11): DCGAN-32 (Radford layout, LayerNorm, w=64, Adam, alternating,
checkpointed trace) on a 32x32 RGB folder of 5,000 synthetic images, through the CLI.

    .venv/bin/python bench/dcgan32_e2e.py --work DIR [--n 5000] [--threads 2] [--trace-lr schedule|auto]

The images are `bench/own_images.py`'s coloured shapes on gradients (seeded, nested sub-folders,
unlabelled, so FID uses the autoencoder features). Phases, each one CLI process: train 1 epoch plus
1 traced epoch (the preset's traced rate 2e-5, or with --trace-lr auto the probe's pick from a ladder under the
first epoch's 2e-4; its table printed), influence on D-loss and FID (one pass), one cleanse
without the 100 most harmful by FID (replay of the traced epoch). Prints the wall seconds and the
peak RSS of every phase (each its own process), and the trace size on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from own_images import shapes_folder  # noqa: E402


def phase(name: str, store: Path, threads: int, *args: str) -> dict:
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "influence", "--store", str(store), *args, "--json"], cwd=REPO,
                                env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this phase's own peak RSS, not the largest of all so far
        seconds = time.perf_counter() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed: {stderr.strip()[-2000:]}")
    print(json.dumps({"phase": name, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}),
          flush=True)
    return json.loads(stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--trace-lr", choices=["schedule", "auto"], default="schedule")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    images, store = work / "images", work / "store"
    if not images.exists():
        shapes_folder(images, args.n)
    sets = [f"data.root={images}", "data.source=folder", "data.labels=none", "data.color=rgb", "data.n_train=none",
            "data.image_size=32", f"model.width={args.width}", "train.epochs=2",
            "train.lr_schedule=2:0.00002:0.00002", "eval.feature=autoencoder", "eval.n_valid_z=500",
            "eval.n_test_z=500"]
    trained = phase("train (1 epoch + 1 traced)", store, args.threads, "train", "--preset", "dcgan32",
                    "--trace-lr", args.trace_lr, *[a for s in sets for a in ("--set", s)])
    if trained.get("trace_lr"):
        p = trained["trace_lr"]
        print(json.dumps({"trace_lr": {"chosen": p["chosen"], "reason": p["reason"], "cost": p["cost"]["sentence"],
                                       "rungs": p["rungs"]}}), flush=True)
    run_id = trained["run_id"]
    trace_mb = sum(p.stat().st_size for p in (store / run_id / "trace").rglob("*") if p.is_file()) / 2**20
    print(json.dumps({"run_id": run_id, "steps": trained["steps"], "traced_steps": trained.get("traced_steps"),
                      "test": trained["test"], "trace_mb": round(trace_mb, 1)}), flush=True)
    est = phase("influence (D-loss and FID, one pass)", store, args.threads, "estimate", "--run", run_id,
                "--metric", "dloss", "--metric", "fid", "--top", "100")
    print(json.dumps({m: {"verdict": r["verdict"], "growth": r["growth"]} for m, r in est.items()}), flush=True)
    ids = work / "top100.csv"
    ids.write_text("id\n" + "\n".join(str(t["id"]) for t in est["fid"]["most_harmful"]) + "\n")
    clean = phase("cleanse (replay without the top 100 by FID)", store, args.threads, "cleanse", "--run", run_id,
                  "--remove", str(ids))
    print(json.dumps({"before": clean["before"], "after": clean["after"],
                      "predicted_change": clean["predicted_change"]}), flush=True)


if __name__ == "__main__":
    main()
