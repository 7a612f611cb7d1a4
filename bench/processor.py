"""What another processor's kernels change: a run trained again with lesser vector instructions, and what reading
its recorded final state as lane 0 would put into leave-one-out.

    .venv/bin/python bench/processor.py --work DIR [--preset mnist-adam] [--set KEY=VALUE ...] [--seed 0]
                                        [--threads 2] [--n 16] [--json OUT]

torch's CPU kernels, oneDNN and MKL pick their code by the processor's vector instructions. Store A trains the
preset here; store B trains A's config.json again in a subprocess told to use AVX2 kernels (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), as a machine without AVX512 would, at the same thread count. Compared:
the run id, the weights, the test metrics, and the processor each run records (`influence.conditions`).

Then B's run is used here, as a run brought from another machine is: its influence on FID, and leave-one-out of
--n random training images (FID on the validation split, sequential lanes) two ways. (a) Lane 0 replayed here
(what replays do since the processor is recorded: it differs from training's). (b) Lane 0 read from the trace, as
replays did before for a run whose threads, device, dtype and torch matched: each change is then a lane replayed
here minus the final state B recorded. Reported: the offset between the ways, against the changes' sizes, and
Kendall's tau of predicted against actual for each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from scipy.stats import kendalltau

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from influence import conditions, store  # noqa: E402
from influence.cli import main as cli  # noqa: E402
from influence.context import RunContext, load_run_config  # noqa: E402
from influence.counterfactual import Lane, LanePlan, replay_lanes  # noqa: E402
from influence.counterfactual.plan import reproduces_training  # noqa: E402
from influence.estimator import estimate  # noqa: E402
from influence.train import Trace  # noqa: E402

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def train_here(root: Path, argv: list[str]) -> tuple[str, float]:
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        if cli(["--store", str(root), "train", *argv, "--json"]) != 0:
            raise SystemExit(f"train failed: {argv}")
    return json.loads(out.getvalue().strip().splitlines()[-1])["run_id"], time.perf_counter() - started


def train_avx2(root: Path, config: Path, threads: int) -> tuple[str, float]:
    env = {**os.environ, **AVX2, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    argv = ["--store", str(root), "train", "--config", str(config), "--json"]
    done = subprocess.run([sys.executable, "-m", "influence", *argv], env=env, capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"train with AVX2 kernels failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["run_id"], time.perf_counter() - started


def leave_one_out(run: store.Run, n: int, seed: int) -> dict:
    """Leave-one-out of n random images on `run`, lane 0 replayed here and lane 0 read from the trace."""
    ctx, trace = RunContext.create(load_run_config(run), run.root), Trace.load(run)
    started = time.perf_counter()
    predicted = estimate(run, ["fid"])["fid"].scores
    pass_s = time.perf_counter() - started
    evaluator = ctx.evaluator("valid")

    def fid(state) -> float:
        theta_g = state.eval_generator(trace.ema_eval).detach()
        return evaluator.evaluate(state.theta_d.detach(), theta_g, ("fid",))["fid"]

    ids = np.random.default_rng(seed).choice(ctx.dataset.n_train, n, replace=False)
    lanes, plan = [Lane.of([int(i)]) for i in ids], LanePlan("sequential", 1, "bench")
    out: dict = {"reproduces_training": reproduces_training(ctx, trace), "pass_s": round(pass_s, 1),
                 "ids": ids.tolist(), "predicted": [float(predicted[i]) for i in ids]}
    for way, from_trace in (("replayed", False), ("from_trace", True)):
        started = time.perf_counter()
        lane = replay_lanes(ctx, trace, lanes, fid, plan, baseline_from_trace=from_trace)
        changes = [v - b for v, b in zip(lane.values, lane.baselines)]
        out[way] = {"lane0_fid": lane.baseline, "changes": changes, "seconds": round(time.perf_counter() - started, 1),
                    "tau": float(kendalltau(out["predicted"], changes).statistic)}
    offset = np.subtract(out["from_trace"]["changes"], out["replayed"]["changes"])
    out["offset"] = {"lane0_difference": out["replayed"]["lane0_fid"] - out["from_trace"]["lane0_fid"],
                     "per_lane_min": float(offset.min()), "per_lane_max": float(offset.max()),
                     "median_abs_change_replayed": float(np.median(np.abs(out["replayed"]["changes"]))),
                     "median_abs_predicted": float(np.median(np.abs(out["predicted"])))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a new folder for the two stores")
    ap.add_argument("--preset", default="mnist-adam")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides of the recipe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=16, help="leave-one-out images")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        raise SystemExit(f"this machine's kernels are {torch.backends.cpu.get_cpu_capability()}: the bench trains "
                         "with AVX2 kernels against AVX512 ones")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=False)
    recipe = ["--preset", args.preset, "--seed", str(args.seed), *(a for kv in args.set for a in ("--set", kv))]
    run_id, train_a = train_here(args.work / "a", recipe)
    config = args.work / "a" / run_id / "config.json"
    run_b_id, train_b = train_avx2(args.work / "b", config, args.threads)
    a, b = store.open_run(args.work / "a", run_id), store.open_run(args.work / "b", run_b_id)
    wa, wb = a.read_npy("weights/final.npy"), b.read_npy("weights/final.npy")
    result = {"preset": args.preset, "overrides": args.set, "seed": args.seed, "threads": args.threads,
              "torch": torch.__version__, "run_id": run_id, "same_run_id": run_b_id == run_id,
              "train_here_s": round(train_a, 1), "train_avx2_s": round(train_b, 1), "parameters": int(wa.size),
              "weights_differing": int((wa != wb).sum()), "weights_max_abs_diff": float(np.abs(wa - wb).max()),
              "test_here": a.read_json("summary.json")["test"], "test_avx2": b.read_json("summary.json")["test"],
              "processor_here": conditions.processor("cpu"),
              "processor_recorded_b": b.read_json("trace/meta.json")["conditions"]["processor"]}
    print(json.dumps(result), flush=True)
    result["leave_one_out_on_b"] = leave_one_out(b, args.n, args.seed)
    print(json.dumps(result["leave_one_out_on_b"]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
