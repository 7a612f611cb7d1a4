"""Replay lanes: batched (torch.func.vmap) against sequential, on the same run and the same removal sets.

    .venv/bin/python bench/lanes.py --preset toy2d --k 32 [--lanes 32] [--threads 2] [--repeat 3] [--store DIR]
    .venv/bin/python bench/lanes.py --preset quick --k auto ...        # the plan the engine would choose
    .venv/bin/python bench/lanes.py --preset mnist-adam --k 8 --lanes 8 --last-steps 20 ...   # a big net, briefly

Trains the preset (or reuses it in --store; `--set` overrides apply, e.g. fewer epochs: throughput does not
depend on convergence), draws --lanes removal sets of 5% of the traced instances (each starts near the first
traced step, so every lane replays about the whole trace; with --last-steps S, of the instances in the last S
traced steps, replayed from there) and replays them:
- sequential: one lane after another through the training step, lane 0 read from the trace (the cheapest
  sequential way: what the engine does when the trace was recorded under these conditions);
- batched: K lanes per vmapped pass, each pass with its own lane 0.
Prints one JSON line per round (seconds, lanes per second, speed-up, the largest difference between the two
ways' changes relative to the largest change) and the medians. Rounds interleave the two ways.

--flops adds what bounds the batched pass: torch.profiler's count of the matrix products' floating-point
operations in one batched and one sequential replay (each way's GFLOP/s), beside the rate of the same
products (their shapes as the profiler recorded them) timed alone, back to back: the most the batched pass
could reach if everything but its products cost nothing.

--phases times one traced step's parts with a clock, not the profiler (torch.profiler inflates the small
elementwise calls of a vmapped pass several-fold): `stepmap.step` for one lane, `stepmap.batched_step` for
K + 1 lanes, and that step's vmapped forward alone (losses of every lane), each the median over the traced
steps' first 20, repeated --repeat times; the backward is the batched step less its forward.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence import allocator  # noqa: E402
from influence.config import apply_overrides, preset  # noqa: E402
from influence.context import RunContext  # noqa: E402
from influence.counterfactual import Lane, LanePlan, replay_lanes  # noqa: E402
from influence.counterfactual.plan import choose_plan, reproduces_training  # noqa: E402
from influence.stepmap import KIND_PLAYERS, batched_step, step  # noqa: E402
from influence.train import Trace, to_state, trace_inputs, train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="toy2d")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--store", default="/tmp/bench-lanes")
    p.add_argument("--lanes", type=int, default=32, help="removal sets to replay")
    p.add_argument("--k", default="32", help="lanes per batched pass, or 'auto' (the engine's plan)")
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--last-steps", type=int, default=None, help="replay only the last S traced steps")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--flops", action="store_true", help="also count the passes' FLOPs and time their products alone")
    p.add_argument("--phases", action="store_true", help="also time a step's parts: forward, backward, one lane")
    args = p.parse_args()
    allocator.tune_this_process()
    torch.set_num_threads(args.threads)
    cfg = apply_overrides(preset(args.preset, args.seed), args.set)
    started = time.perf_counter()
    run = train(cfg, args.store)
    trained = time.perf_counter() - started
    trace = Trace.load(run)
    ctx = RunContext.create(cfg, run.root)
    start = trace.steps - args.last_steps if args.last_steps else 0
    traced = np.flatnonzero(trace.step_of_instance(ctx.dataset.n_train, start) >= 0)
    rng = np.random.default_rng(0)
    size = max(1, round(args.fraction * len(traced)))
    lanes = [Lane.of(rng.choice(traced, size, replace=False)) for _ in range(args.lanes)]
    plan = choose_plan(ctx, trace, len(lanes)) if args.k == "auto" else LanePlan("batched", int(args.k), "bench")
    sequential = LanePlan("sequential", 1, "bench")
    from_trace = reproduces_training(ctx, trace)

    def flat(state):
        return state.flat().clone()

    def once(way: LanePlan):
        t = time.perf_counter()
        out = replay_lanes(ctx, trace, lanes, flat, way, start, baseline_from_trace=from_trace)
        return time.perf_counter() - t, [v - b for v, b in zip(out.values, out.baselines)]

    rounds = []
    for r in range(args.repeat):
        s_seq, c_seq = once(sequential)
        s_bat, c_bat = once(plan)
        scale = max(float(c.abs().max()) for c in c_seq)
        diff = max(float((a - b).abs().max()) for a, b in zip(c_seq, c_bat))
        line = {"round": r, "seconds_sequential": s_seq, "seconds_batched": s_bat, "speedup": s_seq / s_bat,
                "lanes_per_s_sequential": len(lanes) / s_seq, "lanes_per_s_batched": len(lanes) / s_bat,
                "max_abs_diff_of_changes": diff, "max_rel_diff_of_changes": diff / scale if scale else 0.0}
        print(json.dumps(line), flush=True)
        rounds.append(line)
    median = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0] if k != "round"}
    if args.flops:
        counts = {"batched": flop_count(lambda: once(plan), ctx.dtype),
                  "sequential": flop_count(lambda: once(sequential), ctx.dtype)}
        for way, c in counts.items():  # the profiler slows a replay many times: rates use the unprofiled median
            c["gflops_per_s_in_replay"] = c["products_gflop"] / median[f"seconds_{way}"]
        print(json.dumps({"flops": counts}), flush=True)
    if args.phases:
        print(json.dumps({"phases": phases(ctx, trace, min(plan.lanes, len(lanes)) + 1, start, args.repeat)}),
              flush=True)
    print(json.dumps({"preset": args.preset, "set": args.set, "run_id": run.run_id, "parameters": trace.layout.n_theta,
                      "traced_steps": trace.steps, "replayed_steps": trace.steps - start, "lanes": len(lanes),
                      "set_size": size, "plan": plan.as_dict(),
                      "baseline_from_trace": from_trace, "threads": args.threads, "train_seconds": trained,
                      "rounds": args.repeat, "median": median}), flush=True)


def phases(ctx: RunContext, trace: Trace, width: int, start: int, repeat: int, steps: int = 20) -> dict:
    """Median seconds per traced step of one lane's `step`, a `batched_step` of `width` lanes and its forward."""
    nb = trace.layout.n_buffers
    state = to_state(ctx, trace.layout, trace.stored_before(start)[1])
    wide = tuple(x.unsqueeze(0).expand(width, *x.shape).clone() for x in state.tensors())
    ts = range(start, min(start + steps, trace.steps))
    inputs = [trace_inputs(ctx, trace, t) for t in ts]

    def forward(inp):
        players = KIND_PLAYERS[inp.kind]
        td, tg = (x.detach().requires_grad_(True) for x in wide[:2])
        w = inp.w.expand(width, -1)
        with torch.enable_grad():
            torch.func.vmap(lambda a, b, c: tuple(v for v in ctx.gan.losses(a, b, inp.x, inp.z, c, players)
                                                  if v is not None))(td, tg, w)

    def timed(f) -> float:
        f(inputs[0])  # warm-up
        out = []
        for inp in inputs:
            t = time.perf_counter()
            f(inp)
            out.append(time.perf_counter() - t)
        return float(np.median(out))

    ways = {"step_one_lane": lambda inp: step(ctx.gan, trace.rule, state, inp),
            "batched_step": lambda inp: batched_step(ctx.gan, trace.rule, inp, nb, wide,
                                                     inp.w.expand(width, -1).contiguous()),
            "batched_forward": forward}
    rounds = [{k: timed(f) for k, f in ways.items()} for _ in range(repeat)]
    out = {k: float(np.median([r[k] for r in rounds])) for k in ways}
    out["batched_backward"] = out["batched_step"] - out["batched_forward"]
    out.update(width=width, steps=len(inputs), per_lane_speedup=out["step_one_lane"] * width / out["batched_step"])
    return out


def flop_count(replay, dtype: torch.dtype) -> dict:
    """The matrix products' FLOPs in one replay (torch.profiler), and the same products timed alone (each shape
    as often as the replay ran it, inputs of the run's dtype) and their GFLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        replay()
    counted: dict[tuple, list] = {}
    for ev in prof.events():
        if ev.flops and ev.name in ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul"):
            key = (ev.name, tuple(tuple(s) for s in ev.input_shapes if s))
            counted.setdefault(key, [0, ev.flops])[0] += 1
    flops = sum(n * f for n, f in counted.values())
    alone = 0.0
    for (name, shapes), (n, _) in counted.items():
        args = [torch.randn(*s, dtype=dtype) for s in shapes]
        op = {"aten::mm": torch.mm, "aten::bmm": torch.bmm, "aten::matmul": torch.matmul,
              "aten::addmm": torch.addmm}[name]
        op(*args)
        t = time.perf_counter()
        for _ in range(n):
            op(*args)
        alone += time.perf_counter() - t
    return {"products_gflop": flops / 1e9, "products_alone_seconds": alone,
            "gflops_per_s_alone": flops / 1e9 / alone if alone else None, "distinct_shapes": len(counted)}


if __name__ == "__main__":
    main()
