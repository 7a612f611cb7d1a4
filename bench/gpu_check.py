"""CUDA check in one short script (about 5 minutes on a GPU): exactness and speed.

    .venv/bin/python bench/gpu_check.py [--store DIR] [--presets quick mnist-adam dcgan32] [--steps 3]

For each preset, on a copy whose training is cut to a few steps (a fraction of one epoch,
all of it traced):
1. trains on CUDA, twice in two stores, and checks the two runs bit for bit (deterministic
   kernels, no cuDNN autotuning, fixed cuBLAS workspace: `context.make_cuda_deterministic`);
2. replays the trace with nothing removed and checks the final state bit for bit, and a
   leave-one-out replay twice;
3. estimates influence on D-loss on CUDA and on the CPU from the same trace, and prints
   their relative L2 difference (float64 backward pass on both: only reduction order differs);
4. prints seconds per training step, per backward step and per leave-one-out replay step;
5. fine-tunes and traces the check run (`finetune`: its final weights, its optimizer state kept where it has
   one, train.trace_lr=auto with 2-step probe segments) twice in two stores, and checks the probe's table and
   the fine-tuned trace bit for bit; prints the pick and the probe's cost against the traced epoch;
6. replays 8 leave-one-out lanes batched (one vmapped pass) and one after another: seconds of each, and the
   largest difference of their changes (float rounding, not bit for bit); the plan the engine picks here;
7. explains the realism of 1 and of 64 generated samples (stacked rows, one pass each): seconds and ratio.
Prints one JSON line per preset; exits 1 if any bit-for-bit check fails. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from influence import store
from influence.config import apply_overrides, preset
from influence.context import RunContext, load_run_config
from influence.estimator import EstimateOptions, estimate
from influence.train import Trace, replay_state, train


def _short(name: str, steps: int):
    cfg = preset(name)
    batch = cfg.train.batch_size
    kinds = 1 if cfg.train.scheme == "simultaneous" else 2
    return apply_overrides(cfg, [f"data.n_train={batch * steps}", "train.epochs=1", "train.lr_schedule=none",
                                 "train.trace_epochs=1", "train.device=auto", "eval.metrics_every_epoch=false",
                                 "eval.n_valid_z=500", "eval.n_test_z=500"]), steps * kinds


def check(name: str, root, steps: int) -> dict:
    cfg, traced = _short(name, steps)
    started = time.perf_counter()
    a = train(cfg, root / "a")
    torch.cuda.synchronize()
    train_s = (time.perf_counter() - started) / traced
    b = train(cfg, root / "b")
    same_training = all(np.array_equal(a.read_npy(f), b.read_npy(f))
                        for f in ("weights/final.npy", "trace/final_state.npy", "trace/states.npy"))
    ctx = RunContext.create(load_run_config(a), a.root)
    trace = Trace.load(a)
    start = time.perf_counter()
    again = replay_state(ctx, trace).flat().cpu().numpy()
    torch.cuda.synchronize()
    replay_s = (time.perf_counter() - start) / trace.steps
    j = int(trace.batch(0)[0])
    loo = [replay_state(ctx, trace, [j]).flat().cpu().numpy() for _ in range(2)]
    start = time.perf_counter()
    gpu = estimate(a, ["dloss"], EstimateOptions(dtype="float64"))["dloss"].scores
    torch.cuda.synchronize()
    backward_s = (time.perf_counter() - start) / trace.steps
    cpu = _cpu_estimate(a, root / "cpu")
    return {
        "preset": name, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "traced_steps": trace.steps, "parameters": int(trace.final.shape[0]),
        "train_bit_exact": same_training, "replay_bit_exact": bool(np.array_equal(again, trace.final_state)),
        "leave_one_out_bit_exact": bool(np.array_equal(*loo)),
        "cpu_vs_cuda_rel_l2": float(np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu)),
        "s_per_train_step": train_s, "s_per_backward_step": backward_s, "s_per_replay_step": replay_s,
        **_reported(finetune_check, a, root / "finetune"),
        **_reported(lanes_check, ctx, trace),
        **_reported(explain_check, a),
    }


def _reported(check_part, *args) -> dict:
    """One part's figures, or its error as a figure: the other parts still run and print."""
    try:
        return check_part(*args)
    except Exception as e:  # noqa: BLE001 (any failure on the device is a finding to print)
        return {f"{check_part.__name__}_error": f"{type(e).__name__}: {e}"[:300]}


def lanes_check(ctx: RunContext, trace: Trace, k: int = 8) -> dict:
    """k single-instance lanes batched against one after another on this device: seconds and agreement."""
    from influence.counterfactual import Lane, LanePlan, replay_lanes
    from influence.counterfactual.plan import choose_plan

    lanes = [Lane.of([int(j)]) for j in np.unique(np.concatenate([trace.batch(t) for t in range(trace.steps)]))[:k]]
    theta_d = lambda s: s.theta_d.detach().double().cpu()  # noqa: E731 (the final D: every lane moves it)
    out = {}
    for mode, plan in (("sequential", LanePlan("sequential", 1, "gpu_check")), ("batched", LanePlan("batched", k, "gpu_check"))):
        started = time.perf_counter()
        r = replay_lanes(ctx, trace, lanes, theta_d, plan)
        torch.cuda.synchronize()
        out[mode] = (time.perf_counter() - started, [v - b for v, b in zip(r.values, r.baselines)])
    diff = max(float((a - b).abs().max()) for a, b in zip(out["sequential"][1], out["batched"][1]))
    scale = max(float(a.abs().max()) for a in out["sequential"][1])
    return {"lanes": k, "lanes_sequential_s": out["sequential"][0], "lanes_batched_s": out["batched"][0],
            "lanes_speedup": out["sequential"][0] / out["batched"][0], "lanes_largest_difference": diff,
            "lanes_largest_change": scale, "lanes_auto_plan": choose_plan(ctx, trace, k).as_dict()}


def explain_check(run: store.Run) -> dict:
    """Seconds of one stacked pass over 1 and over 64 samples' realism (issue 25's cost target: 64 <= 8x 1)."""
    from influence.samples import explain

    explain(run, {"seed": 6, "n": 1}, "realism")  # a warm-up: one-time imports and kernels
    one, many = (explain(run, {"seed": 7, "n": n}, "realism").meta for n in (1, 64))
    return {"explain_1_s": one["seconds"], "explain_64_s": many["seconds"], "explain_64_vs_1": many["seconds"] / one["seconds"],
            "explain_rows_per_product": many["rows_per_product"]}


def finetune_check(run: store.Run, root) -> dict:
    """The fine-tune workflow on the device: the run fine-tuned and traced twice, in two stores."""
    import shutil

    from influence.finetune import configure

    keep = load_run_config(run).train.optimizer != "sgd"
    runs = []
    for side in ("a", "b"):
        dest = store.store_root(root / side)
        shutil.copytree(run.dir, dest / run.run_id, ignore=shutil.ignore_patterns("influence"))
        cfg = configure(dest, 1, "auto", from_run_id=run.run_id, keep_optimizer=keep,
                        overrides=["train.trace_lr_probe_steps=2"])
        runs.append(train(cfg, dest))
    probes = [r.read_json("summary.json")["trace_lr"] for r in runs]
    same_probe = [[r["growth"], r["extrapolated"]] for r in probes[0]["rungs"]] == \
        [[r["growth"], r["extrapolated"]] for r in probes[1]["rungs"]]
    return {"finetune_bit_exact": all(np.array_equal(runs[0].read_npy(f), runs[1].read_npy(f))
                                      for f in ("trace/states.npy", "trace/final_state.npy")),
            "finetune_probe_same": same_probe, "finetune_optimizer_state": "kept" if keep else "fresh",
            "finetune_lr": probes[0]["chosen"], "finetune_reliable": probes[0]["reliable"],
            "finetune_probe_rungs": len(probes[0]["rungs"]), "finetune_probe_cost": probes[0]["cost"]}


def _cpu_estimate(run: store.Run, root) -> np.ndarray:
    """The same trace estimated on the CPU: a copy of the run, in a process that sees no GPU (device auto)."""
    import os
    import shutil
    import subprocess

    dest = store.store_root(root)
    shutil.copytree(run.dir, dest / run.run_id, ignore=shutil.ignore_patterns("influence"))
    store.open_run(dest, run.run_id).forget("influence/")
    code = ("import sys, numpy as np; from influence import store; from influence.estimator import EstimateOptions, "
            "estimate; r = store.open_run(store.store_root(sys.argv[1]), sys.argv[2]); "
            "np.save(sys.argv[3], estimate(r, ['dloss'], EstimateOptions(dtype='float64'))['dloss'].scores)")
    out = dest / "cpu_scores.npy"
    subprocess.run([sys.executable, "-c", code, str(dest), run.run_id, str(out)], check=True,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    return np.load(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None)
    ap.add_argument("--presets", nargs="+", default=["quick", "mnist-adam", "dcgan32"])
    ap.add_argument("--steps", type=int, default=3, help="minibatches per check run")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing checked", file=sys.stderr)
        return 2
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        base = store.store_root(args.store or tmp)
        for name in args.presets:
            row = check(name, base / name, args.steps)
            ok &= row["train_bit_exact"] and row["replay_bit_exact"] and row["leave_one_out_bit_exact"] \
                and row.get("finetune_bit_exact", False) and row.get("finetune_probe_same", False)
            print(json.dumps(row), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
