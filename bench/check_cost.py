"""Where a spot check's time goes on a run: one replay step in the training's dtype, and one lane's evaluation.

    .venv/bin/python bench/check_cost.py --store DIR --run RUN_ID [--steps 25] [--threads 1]
    .venv/bin/python bench/check_cost.py --store DIR --run RUN_ID --check quick [--metrics fid dloss]
    .venv/bin/python bench/check_cost.py --store DIR --run RUN_ID --check quick --adopted [--rounds 2]

Prints ms per replayed step (the last --steps traced steps, nothing removed) and seconds per evaluation of the
run's metrics on the validation split, the two costs a check's lanes pay (docs/benchmarks.md, "Spot check cost").
With --check: the influence pass of --metrics and then the spot check, both computed afresh on a copy of the run
(the store is left as it is), so the ratio compares two computations under the same conditions.
With --adopted (a run whose estimate of FID and D-loss is its trace-lr probe's walk, `estimator.adopt_pass`): the
check alone, on copies of the run that keep that estimate, taking the probe's replay of FID's most harmful set
("taken") or made to replay it ("replayed": `probe_replay` dropped from the copy's meta), in alternating order.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence import store  # noqa: E402
from influence.context import RunContext, load_run_config  # noqa: E402
from influence.estimator import EstimateOptions, estimate  # noqa: E402
from influence.stepmap import step  # noqa: E402
from influence.train import Trace, to_state, trace_inputs  # noqa: E402
from influence.validation.spotcheck import spot_check  # noqa: E402


def time_check(run: store.Run, metrics: list[str], level: str) -> dict:
    """The influence pass and then the spot check at `level`, both computed afresh on a copy of the run (the store
    is left as it is), so that the two run under the same conditions."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(run.dir, Path(tmp) / run.run_id)
        fresh = store.open_run(Path(tmp), run.run_id)
        fresh.forget("influence/")
        shutil.rmtree(fresh.dir / "influence", ignore_errors=True)  # a run never estimated has none
        started = time.perf_counter()
        estimate(fresh, metrics, EstimateOptions())
        pass_seconds = time.perf_counter() - started
        check = spot_check(fresh, metrics, EstimateOptions(), level)
    return {"run": run.run_id, "level": check["level"], "metrics": metrics, "check_seconds": round(check["seconds"], 1),
            "replay_seconds": round(check["replay_seconds"], 1), "pass_seconds": round(pass_seconds, 1),
            "check_over_pass": round(check["seconds"] / pass_seconds, 2), "lanes": check["lanes"]["mode"],
            "baseline": check["baseline"], "window_steps": check["window_steps"],
            "trust": {m: check["per_metric"][m]["random_groups"]["spearman"] for m in metrics}}


def time_adopted_check(run: store.Run, metrics: list[str], level: str, rounds: int) -> list[dict]:
    """The check of an adopted estimate taking the probe's replay and replaying it, `rounds` times each, alternating
    which goes first; each on a fresh copy of the run (its stored checks removed)."""
    rows = []
    for r in range(rounds):
        for mode in ("taken", "replayed") if r % 2 == 0 else ("replayed", "taken"):
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copytree(run.dir, Path(tmp) / run.run_id)
                fresh = store.open_run(Path(tmp), run.run_id)
                fresh.forget("influence/_checks/")
                shutil.rmtree(fresh.dir / "influence" / "_checks", ignore_errors=True)
                results = estimate(fresh, metrics, EstimateOptions())
                if not any("probe_replay" in result.meta for result in results.values()):
                    raise SystemExit(f"{run.run_id}: no estimate of {metrics} carries the probe's replay")
                walk_seconds = sum(result.meta["seconds"] for result in results.values())
                if mode == "replayed":
                    n_params = Trace.load(fresh).final.shape[0]
                    for m, result in results.items():
                        fresh.write_json(f"influence/{EstimateOptions().key(m, n_params)}/meta.json",
                                         {k: v for k, v in result.meta.items() if k != "probe_replay"})
                check = spot_check(fresh, metrics, EstimateOptions(), level)
            rows.append({"run": run.run_id, "round": r, "mode": mode, "level": check["level"], "metrics": metrics,
                         "probe_lanes": check["probe_lanes"], "check_seconds": round(check["seconds"], 1),
                         "replay_seconds": round(check["replay_seconds"], 1), "walk_seconds": round(walk_seconds, 1),
                         "harmful_set": {m: check["per_metric"][m]["harmful_set"] for m in metrics},
                         "trust": {m: check["per_metric"][m]["random_groups"]["spearman"] for m in metrics}})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--metrics", nargs="+", default=["fid", "is"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", choices=["quick", "full"], help="time the spot check at this level instead")
    ap.add_argument("--adopted", action="store_true", help="with --check: the check of the run's adopted estimate, "
                    "taking the probe's replay against replaying it")
    ap.add_argument("--rounds", type=int, default=2, help="with --adopted: rounds of the two")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = store.open_run(store.store_root(args.store), args.run)
    if args.check and args.adopted:
        time_adopted_check(run, args.metrics, args.check, args.rounds)
        return
    if args.check:
        print(json.dumps(time_check(run, args.metrics, args.check)))
        return
    ctx = RunContext.create(load_run_config(run), run.root)
    trace = Trace.load(run)
    t0, flat = trace.stored_before(max(trace.steps - args.steps, 0))
    state = to_state(ctx, trace.layout, flat)
    started = time.perf_counter()
    for t in range(t0, trace.steps):
        state = step(ctx.gan, trace.rule, state, trace_inputs(ctx, trace, t))[0]
    per_step = (time.perf_counter() - started) / (trace.steps - t0)
    evaluator = ctx.evaluator("valid")
    evaluator.evaluate(state.theta_d, state.eval_generator(trace.ema_eval), args.metrics)  # built once per process
    started = time.perf_counter()
    evaluator.evaluate(state.theta_d, state.eval_generator(trace.ema_eval), args.metrics)
    print(json.dumps({"run": args.run, "dtype": str(ctx.dtype), "threads": args.threads, "steps": trace.steps - t0,
                      "ms_per_step": round(per_step * 1e3, 1), "metrics": args.metrics,
                      "eval_seconds": round(time.perf_counter() - started, 2)}))


if __name__ == "__main__":
    main()
