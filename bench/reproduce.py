"""Runs that can be reproduced and moved, at real scale: a run's config.json trained again in another store
(`train --config`), and own images moved to another folder (`relocate`).

    .venv/bin/python bench/reproduce.py --work DIR [--threads 1] [--n 5000] [--preset mnist-adam] [--json OUT]

Two cases, each trained through the CLI in store A, then trained again in store B from A's config.json:
- the preset (mnist-adam), seed 0, on the embedded MNIST;
- own images: N synthetic 32x32 RGB shapes (bench/own_images.shapes_folder) under the preset's recipe, the
  images copied to another folder for store B (`--set data.root=COPY`).
Store B has a user-level cache of its own, as on another machine. Compared bit for bit: the final weights, the
trace's last state and the training history's test metrics. Then the own images' original folder is moved, A's run
is pointed to its new place (`relocate`, timed) and loaded from there (timed), its data compared with the load
before the move. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from own_images import shapes_folder  # noqa: E402

from influence import store  # noqa: E402
from influence.cli import main as cli  # noqa: E402
from influence.context import RunContext, load_run_config  # noqa: E402
from influence.train.trace import Trace  # noqa: E402


def _train(argv: list[str]) -> tuple[str, float]:
    """(run id, seconds) of `gan-influence train ... --json`, its JSON read from stdout."""
    import contextlib
    import io

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = cli([*argv, "--json"])
    if code != 0:
        raise SystemExit(f"train failed ({code}): {argv}")
    return json.loads(out.getvalue().strip().splitlines()[-1])["run_id"], time.perf_counter() - started


def _same(a: store.Run, b: store.Run) -> dict:
    """Bit-for-bit comparison of two runs' results."""
    wa, wb = a.read_npy("weights/final.npy"), b.read_npy("weights/final.npy")
    ta, tb = Trace.load(a), Trace.load(b)
    ha, hb = a.read_json("summary.json")["test"], b.read_json("summary.json")["test"]
    return {"parameters": int(wa.size), "weights_differing": int((wa != wb).sum()),
            "weights_max_abs_diff": float(np.abs(wa - wb).max()),
            "trace_final_equal": bool(np.array_equal(ta.final, tb.final)), "trace_steps": int(ta.steps),
            "test_metrics": ha, "test_metrics_equal": ha == hb}


def case(work: Path, name: str, argv: list[str], copy_images: Path | None = None, images: Path | None = None) -> dict:
    """Store A trains with the work folder's cache (`cache-a`), store B from A's config.json with a cache of its
    own (another machine: MNIST converted and the feature net trained again)."""
    store_a, store_b = work / f"{name}-a", work / f"{name}-b"
    os.environ[store.ENV_CACHE] = str(work / "cache-a")
    run_id, seconds_a = _train(["--store", str(store_a), "train", *argv])
    config = store_a / run_id / "config.json"
    again = ["--set", f"data.root={copy_images}"] if copy_images else []
    if copy_images:
        shutil.copytree(images, copy_images)
    os.environ[store.ENV_CACHE] = str(work / f"cache-b-{name}")
    run_b, seconds_b = _train(["--store", str(store_b), "train", "--config", str(config), *again])
    os.environ[store.ENV_CACHE] = str(work / "cache-a")
    result = {"case": name, "run_id": run_id, "same_run_id": run_b == run_id, "train_a_s": round(seconds_a, 1),
              "train_again_s": round(seconds_b, 1),
              **_same(store.open_run(store_a, run_id), store.open_run(store_b, run_b))}
    print(json.dumps(result), flush=True)
    return result


def moved(work: Path, images: Path, run_id: str) -> dict:
    """Move the images of store A's run, point the run to them, load it from there."""
    run = store.open_run(work / "own-a", run_id)
    cfg = load_run_config(run)
    before = RunContext.create(cfg, run.root).dataset
    target = work / "moved" / images.name
    target.parent.mkdir()
    images.rename(target)
    started = time.perf_counter()
    code = cli(["--store", str(run.root), "relocate", "--images", str(target)])
    relocate_s = time.perf_counter() - started
    started = time.perf_counter()
    after = RunContext.create(cfg, run.root).dataset
    load_s = time.perf_counter() - started
    result = {"case": "own images moved", "relocate_exit": code, "relocate_s": round(relocate_s, 2),
              "load_after_s": round(load_s, 2),
              "data_equal": bool(all(torch.equal(getattr(before, s).x, getattr(after, s).x)
                                     for s in ("train", "valid", "test")) and before.paths == after.paths),
              "read_from": after.notes.root}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a new folder for the stores and images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=5000, help="own images written")
    ap.add_argument("--preset", default="mnist-adam", help="the recipe of both cases (tiny: a smoke test)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=False)
    images = args.work / "shapes"
    shapes_folder(images, args.n)
    results = [case(args.work, args.preset, ["--preset", args.preset, "--seed", "0"]),
               case(args.work, "own", ["--preset", args.preset, "--seed", "0", "--set", "data.source=folder",
                                       "--set", f"data.root={images}", "--set", "data.labels=none"],
                    copy_images=args.work / "elsewhere" / "shapes", images=images)]
    results.append(moved(args.work, images, results[1]["run_id"]))
    ok = all(r.get("same_run_id", True) and r.get("weights_differing", 0) == 0 and r.get("trace_final_equal", True)
             and r.get("test_metrics_equal", True) and r.get("data_equal", True) and r.get("relocate_exit", 0) == 0
             for r in results)
    out = {"preset": args.preset, "threads": args.threads, "n_images": args.n, "torch": torch.__version__, "results": results, "ok": ok}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    print("all checks passed" if ok else "A CHECK FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
