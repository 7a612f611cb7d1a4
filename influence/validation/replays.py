"""Actual changes of the metrics by counterfactual replays, as tasks of the execution layer.

Leave-one-out, group validation and the spot check all ask the same thing: for each lane (a
removal set), the metrics on some splits after replaying the traced steps without it, minus the
same metrics of lane 0 (nothing removed) from the same replay (`counterfactual.replay_lanes`).
A task is a chunk of lanes, here or on a Dask worker; each chunk carries its own lane 0 unless lane 0
is the recorded trajectory (a sequential replay under training's conditions).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from .. import conditions, store
from ..context import RunContext
from ..counterfactual import Lane, LanePlan, first_steps, measures, replay_lanes, replayed_steps
from ..counterfactual.plan import reproduces_training
from ..execution import MIN_TASKS_PER_WORKER, Tasks, TaskEnv, local_workers, worker_cached
from ..execution.payload import RunPayload, run_payload, segment_offset, trace_segment
from ..progress import CancelToken, ProgressFn
from ..stepmap import TrainState
from ..train import Trace

PER_TASK = 10
Splits = tuple[tuple[str, tuple[str, ...]], ...]  # ((split, metrics), ...)
Changes = dict[str, dict[str, float]]  # split -> metric -> change


@dataclass
class ChunkResult:
    changes: list[Changes]  # per lane of the chunk
    baseline: dict[str, dict[str, float]]  # lane 0's metrics (of this chunk's replay)
    baseline_from_trace: bool
    seconds: float
    conditions: dict  # those of the process that ran it (`conditions.current`): a cluster's worker may differ


def chunks(trace: Trace, lanes: list[Lane], n_train: int, plan: LanePlan, start: int, per_task: int) -> list[list[int]]:
    """Lane indices grouped into tasks: sorted by first removal (lanes of a batched pass start together),
    `plan.lanes` per task when batched, else `per_task`."""
    firsts = first_steps(trace, lanes, n_train, start)
    order = [int(i) for i in np.argsort(firsts, kind="stable")]
    size = plan.lanes if plan.mode == "batched" else per_task
    return [order[i:i + size] for i in range(0, len(order), max(size, 1))]


def lanes_per_task(ctx: RunContext, trace: Trace, plan: LanePlan, lanes: int, capacity: int = 1) -> int:
    """Sequential lanes per task: one where lane 0 is the recorded trajectory and every state is stored (a task costs
    only its lane: lane 0's measure is taken once, `Trace.final_measures`), else PER_TASK, so that what a task pays
    besides its lanes costs a fraction of them: its own lane 0, or on a checkpointed trace the walk from a stored
    state to its lanes' starts (shared by its lanes, which are sorted by first removal; one lane a task paid it once
    a lane). Fewer where that leaves local workers idle (`shared_size`)."""
    if plan.mode == "sequential" and reproduces_training(ctx, trace) and trace.stores_every_step:
        return 1
    return shared_size(lanes, capacity)


def shared_size(lanes: int, capacity: int) -> int:
    """Lanes per task for `lanes` lanes where `capacity` local workers could run them: PER_TASK, or fewer (at least
    2) where that gives more workers the MIN_TASKS_PER_WORKER tasks each that `execution.local_workers` asks.
    32 random groups on a checkpointed trace went 10 to a task, 4 tasks: one process, while the other cores idled
    (over an hour on dcgan32's 5k folder at 1 thread); at 4 a task they run on two. A task's own lane 0 or walk then
    costs a larger share, which the second worker more than pays for."""
    already = local_workers(-(-lanes // PER_TASK), capacity)  # the workers PER_TASK's tasks get
    for workers in range(capacity, already, -1):
        size = lanes // (workers * MIN_TASKS_PER_WORKER)
        if size >= 2:
            return min(size, PER_TASK)
    return PER_TASK


def lane_tasks(run: store.Run, ctx: RunContext, trace: Trace, lanes: list[Lane], splits: Splits, plan: LanePlan,
               groups: list[list[int]], start: int = 0) -> Tasks:
    """One task per group of lane indices: its ChunkResult."""
    first = int(min((first_steps(trace, [lanes[i] for i in g], ctx.dataset.n_train, start).min() for g in groups),
                    default=0))
    first = min(first, trace.steps - 1)
    offset = segment_offset(trace, first)
    needed = tuple(split for split, _ in splits)
    return Tasks(groups, here=lambda g, env: measure_lanes(ctx, trace, [lanes[i] for i in g], splits, plan, start,
                                                           env.progress, env.cancel),
                 remote=functools.partial(_remote, splits, plan, max(start - offset, 0)),
                 ship=lambda g: [lanes[i] for i in g],
                 payload=lambda _: run_payload(ctx, run, trace_segment(trace, first), needed))


def _remote(splits: Splits, plan: LanePlan, start: int, payload: RunPayload, lanes: list[Lane], env: TaskEnv):
    ctx = worker_cached(payload.key, payload.context)
    return measure_lanes(ctx, payload.segment, lanes, splits, plan, start, env.progress, env.cancel)


def measure_lanes(ctx: RunContext, trace: Trace, lanes: list[Lane], splits: Splits, plan: LanePlan, start: int = 0,
                  progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> ChunkResult:
    """Replay the lanes and return each one's metric changes against lane 0 of the same replay."""
    evaluators = {split: ctx.evaluator(split) for split, _ in splits}

    def measure(state: TrainState) -> dict[str, dict[str, float]]:
        theta_d, theta_g = state.theta_d.detach(), state.eval_generator(trace.ema_eval).detach()
        return {split: evaluators[split].evaluate(theta_d, theta_g, metrics) for split, metrics in splits}

    # the key: a trace is one run's, measured by that run's evaluators, so the splits and metrics say what it measures
    out = replay_lanes(ctx, trace, lanes, measure, plan, start, progress, cancel,
                       baseline_from_trace=reproduces_training(ctx, trace), measure_key=splits,
                       measure_steps=evaluation_steps(ctx, splits))
    changes = [{split: {m: v[split][m] - b[split][m] for m in v[split]} for split in v}
               for v, b in zip(out.values, out.baselines)]
    return ChunkResult(changes, out.baseline, out.baseline_from_trace, out.seconds,
                       conditions.current(ctx.device, ctx.dtype))


def task_weights(ctx: RunContext, trace: Trace, lanes: list[Lane], groups: list[list[int]], splits: Splits,
                 plan: LanePlan, start: int = 0, lane0_measured: bool = False) -> list[int]:
    """What each task of `lane_tasks` weighs in a bar over them (`progress.BatchProgress`): the lane-steps it replays
    and its evaluations, as its own replay counts them (`replay_lanes`, `measure_steps`). lane0_measured: tasks
    before these took lane 0's measure from the trace in this process; else the first of them does, and later ones
    read it (`Trace.final_measures`)."""
    from_trace = plan.mode == "sequential" and reproduces_training(ctx, trace)
    known = from_trace and (lane0_measured or splits in trace.final_measures)
    steps, out = evaluation_steps(ctx, splits), []
    for group in groups:
        firsts = first_steps(trace, [lanes[i] for i in group], ctx.dataset.n_train, start)
        out.append(replayed_steps(trace, firsts) + steps * measures(trace, firsts, plan, known))
        known = from_trace
    return out


def evaluation_steps(ctx: RunContext, splits: Splits) -> int:
    """A lane's evaluation on `splits` in replayed steps, for progress counts: the splits' fixed z over the batch
    size (a generator pass and a feature pass over them, against a step's passes over one batch). On mnist-adam an
    evaluation of FID and IS took the time of 23 replayed steps in float32 and 11 in float64 (2 threads)."""
    return max(1, round(sum(ctx.latents[split].shape[0] for split, _ in splits) / ctx.cfg.train.batch_size))


def replay_conditions(ctx: RunContext, trace: Trace, ran: Sequence[dict] = ()) -> dict:
    """Training's conditions against those replays run under here (`conditions.compare`; its warnings say how they
    differ). ran: the conditions of the processes the replays ran in (`ChunkResult.conditions`): the warnings are
    then theirs, so replays on a cluster's workers with another processor than this one's say so."""
    activity = "these replays run"
    out = conditions.compare(trace.conditions, ctx.device, ctx.dtype, activity)
    if ran:
        out["warnings"] = list(dict.fromkeys(w for now in ran for w in conditions.differences(trace.conditions, now,
                                                                                                activity)))
    return out


def merged_record(old: dict, new: dict) -> dict:
    """What the replays behind one result were when they were made at different times (a stored result and the
    replays added to it): the lane plan (one of both where they differ), lane 0 ("recorded trajectory" only where
    every round took it), the condition warnings of every round (so replays under other conditions than training's
    keep saying so) and their time added."""
    out = {k: new.get(k, old.get(k)) for k in ("lanes", "baseline", "conditions") if k in old or k in new}
    if old.get("lanes") and new.get("lanes") and old["lanes"] != new["lanes"]:
        modes = list(dict.fromkeys((old["lanes"]["mode"], new["lanes"]["mode"])))
        out["lanes"] = {"mode": " and ".join(modes), "lanes": max(old["lanes"]["lanes"], new["lanes"]["lanes"]),
                        "reason": f"replays made at different times: {old['lanes']['reason']}; {new['lanes']['reason']}"}
    if "baseline" in old and old["baseline"] != new.get("baseline"):
        out["baseline"] = "replayed"
    if old.get("conditions") and new.get("conditions"):
        out["conditions"] = {**new["conditions"], "warnings": list(dict.fromkeys(
            old["conditions"].get("warnings", []) + new["conditions"].get("warnings", [])))}
    out["replay_seconds"] = old.get("replay_seconds", 0.0) + new.get("replay_seconds", 0.0)
    # an earlier round made before the clock was kept leaves no total
    if "wall_seconds" in new and ("wall_seconds" in old or "replay_seconds" not in old):
        out["wall_seconds"] = old.get("wall_seconds", 0.0) + new["wall_seconds"]
    return out
