"""Counterfactual replays of the traced steps for many removal sets ("lanes") at once.

A lane is a removal set and the weight its instances get (0 removes them; 1 - eps down-weights
them, the linearity check). Lane 0 is always the replay with nothing removed, and every actual
change is a lane minus lane 0 *of the same replay*: no rounding offset from another code path,
thread count or device enters the difference. Steps before a lane's first removal are lane 0's.

Two ways to run the lanes (`LanePlan`):
- sequential: one lane after another through `stepmap.step`, the training step itself. When the
  trace was recorded under this process's conditions (`reproduces_training`), lane 0 *is* the
  recorded trajectory: it is read from the trace, and each lane starts at its first removal from
  the stored state before it (no extra replay). Otherwise lane 0 is replayed here, and each lane
  branches off it at its first removal.
- batched: up to K lanes in one `stepmap.batched_step` (torch.func.vmap over a leading lane axis;
  the recorded batches, z and learning rates shared), lane 0 among them; a lane joins the batch at
  its first removal as a copy of lane 0's state.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

import numpy as np
import torch

from ..context import RunContext
from ..errors import ConfigError
from ..progress import CancelToken, ProgressFn, Reporter
from ..stepmap import TrainState, batched_step, step
from ..train import Trace, to_state, trace_inputs

T = TypeVar("T")
MODES = ("sequential", "batched")


@dataclass(frozen=True)
class Lane:
    """A counterfactual: the traced steps with `removed` at real-loss weight `weight` (0 = left out)."""

    removed: np.ndarray  # training ids
    weight: float = 0.0

    @staticmethod
    def of(ids: Sequence[int], weight: float = 0.0) -> "Lane":
        return Lane(np.unique(np.asarray(ids, dtype=np.int64)), weight)

    @property
    def digest(self) -> str:
        """sha256 of the removed ids (sorted int64): names the set in a stored measurement (the trace-lr probe's
        replay, which a spot check takes instead of replaying the same set again)."""
        return hashlib.sha256(self.removed.tobytes()).hexdigest()


@dataclass(frozen=True)
class LanePlan:
    mode: str  # "sequential" or "batched"
    lanes: int  # removal lanes per batched pass (lane 0 comes on top); 1 for sequential
    reason: str

    def as_dict(self) -> dict:
        return {"mode": self.mode, "lanes": self.lanes, "reason": self.reason}


@dataclass
class LaneOutcome(Generic[T]):
    baseline: T  # what `measure` gave for lane 0 (nothing removed); of the first pass when there were several
    values: list[T]  # the same for every lane, in the order given
    baselines: list[T]  # per lane, lane 0 of its own pass: the actual change of lane i is values[i] - baselines[i]
    plan: LanePlan
    seconds: float
    baseline_from_trace: bool  # lane 0 was the recorded trajectory (sequential plan, training's conditions)


def replayed_steps(trace: Trace, firsts: np.ndarray) -> int:
    """The lane-steps of lanes whose replays start at `firsts` (at least 1): a replay's progress total, and what a
    task weighs in a batch's (`progress.BatchProgress`)."""
    return max(int((trace.steps - firsts).sum()), 1)


def measures(trace: Trace, firsts: np.ndarray, plan: LanePlan, lane0_known: bool = False) -> int:
    """How many states `replay_lanes` measures: each lane that replays a step, and lane 0 once (sequential; none
    where its measure is known) or once per batched pass."""
    lanes = int((firsts < trace.steps).sum())
    if plan.mode == "batched":
        return lanes + max(-(-lanes // plan.lanes), 1)
    return lanes + (0 if lane0_known else 1)


def first_steps(trace: Trace, lanes: list[Lane], n_train: int, start: int = 0) -> np.ndarray:
    """Per lane, the first traced step >= start whose batch holds one of its instances (trace.steps: none)."""
    seen = trace.step_of_instance(n_train, start)
    out = np.full(len(lanes), trace.steps, dtype=np.int64)
    for i, lane in enumerate(lanes):
        steps = seen[lane.removed]
        steps = steps[steps >= 0]
        if steps.size:
            out[i] = steps.min()
    return out


def replay_lanes(
    ctx: RunContext,
    trace: Trace,
    lanes: list[Lane],
    measure: Callable[[TrainState], T],
    plan: LanePlan,
    start: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    baseline_from_trace: bool = False,
    measure_key: Hashable | None = None,
    measure_steps: int = 0,
) -> LaneOutcome[T]:
    """Replay the traced steps from `start` on for every lane (steps before `start` keep every instance) and
    `measure` each lane's final state, lane 0 (nothing removed) included.

    baseline_from_trace: lane 0 is the recorded trajectory (only for the sequential plan, and only right
    when the trace was recorded under this process's conditions: see `reproduces_training`).
    measure_key: what `measure` measures (the same key, the same numbers for the same state); with lane 0 from the
    trace, its measure is taken once per key and trace in this process (`Trace.final_measures`).
    measure_steps: what one `measure` weighs in the progress count, in lane-steps (0: nothing), so that a bar over
    short lanes does not stall at each lane's evaluation.
    """
    if plan.mode not in MODES:
        raise ConfigError(f"lane mode must be one of {MODES}")
    for lane in lanes:
        if lane.removed.size and (lane.removed.min() < 0 or lane.removed.max() >= ctx.dataset.n_train):
            raise ConfigError(f"removal ids must lie in 0..{ctx.dataset.n_train - 1}")
    started = time.perf_counter()
    firsts = first_steps(trace, lanes, ctx.dataset.n_train, start)
    weights = [_weights(ctx, lane) for lane in lanes]
    from_trace = baseline_from_trace and plan.mode == "sequential"
    cached = from_trace and measure_key is not None and measure_key in trace.final_measures
    tick = _Progress(Reporter("replay", replayed_steps(trace, firsts)
                              + measure_steps * measures(trace, firsts, plan, cached), progress, cancel))
    measure = tick.counting(measure, measure_steps)
    if plan.mode == "batched":
        baseline, values, baselines = _batched(ctx, trace, firsts, weights, measure, plan.lanes, tick)
    else:
        if from_trace:
            baseline, values = _sequential_from_trace(ctx, trace, firsts, weights, measure, tick, measure_key, cached)
        else:
            baseline, values = _sequential(ctx, trace, firsts, weights, measure, tick)
        baselines = [baseline] * len(values)
    return LaneOutcome(baseline, values, baselines, plan, time.perf_counter() - started, from_trace)


def _weights(ctx: RunContext, lane: Lane) -> torch.Tensor:
    w = torch.ones(ctx.dataset.n_train, dtype=torch.float64)
    w[torch.as_tensor(lane.removed)] = lane.weight
    return w


class _Progress:
    """Counts lane-steps for the reporter, and each measure as `steps` of them (`counting`)."""

    def __init__(self, report: Reporter):
        self.report, self.done = report, 0

    def __call__(self, steps: int = 1) -> None:
        self.done += steps
        self.report(self.done)

    def counting(self, measure: Callable[[TrainState], T], steps: int) -> Callable[[TrainState], T]:
        if not steps:
            return measure

        def counted(state: TrainState) -> T:
            value = measure(state)
            self(steps)
            return value
        return counted


def _step(ctx: RunContext, trace: Trace, t: int, state: TrainState, w: torch.Tensor | None) -> TrainState:
    return step(ctx.gan, trace.rule, state, trace_inputs(ctx, trace, t, None if w is None else w[trace.batch(t)]))[0]


def _run_lane(ctx: RunContext, trace: Trace, state: TrainState, first: int, w: torch.Tensor, tick: _Progress) -> TrainState:
    for t in range(first, trace.steps):
        state = _step(ctx, trace, t, state, w)
        tick()
    return state


def _sequential_from_trace(ctx, trace, firsts, weights, measure, tick, measure_key, cached):
    """Lane 0 is the recorded final state; each lane branches off the recorded trajectory at its first removal.
    Lanes go in order of first removal, so the trajectory between stored states (a checkpointed trace) is
    recomputed once, not once a lane: 22 window lanes of a one-checkpoint epoch recomputed ~110 steps each.
    The next call on the same trace (the next task of a check or a leave-one-out in this process) goes on from
    where this one stopped (`trace.walked`) instead of from the stored state again, and lane 0's measure is taken
    once (`trace.final_measures`; `cached`: it is there already): a one-lane task paid an evaluation of lane 0
    besides its lane's."""
    if cached:
        baseline = trace.final_measures[measure_key]
    else:
        baseline = measure(to_state(ctx, trace.layout, trace.final_state))
        if measure_key is not None:
            trace.final_measures[measure_key] = baseline
    values: list = [baseline] * len(firsts)
    at, state = trace.walked or (-1, None)  # the recorded trajectory's state at step `at`
    for i in np.argsort(firsts, kind="stable"):
        first = int(firsts[i])
        if first >= trace.steps:
            continue
        t0, flat = trace.stored_before(first)
        if state is None or t0 > at or at > first:  # a stored state nearer than the last start, or behind it
            at, state = t0, to_state(ctx, trace.layout, flat)
        for t in range(at, first):  # recomputed between stored states: the recorded trajectory, bit for bit
            state = _step(ctx, trace, t, state, None)
        at = first
        if at > t0:
            trace.walked = (at, state)
        values[i] = measure(_run_lane(ctx, trace, state, first, weights[i], tick))
    return baseline, values


def _sequential(ctx, trace, firsts, weights, measure, tick):
    """Lane 0 replayed here; each lane branches off it at its first removal (depth first: two states in memory)."""
    order = np.argsort(firsts, kind="stable")
    t0, flat = trace.stored_before(int(firsts.min()) if len(firsts) else trace.steps - 1)
    state = to_state(ctx, trace.layout, flat)
    values: list = [None] * len(firsts)
    pending = [int(i) for i in order if firsts[i] < trace.steps]
    for t in range(t0, trace.steps):
        while pending and firsts[pending[0]] == t:
            i = pending.pop(0)
            values[i] = measure(_run_lane(ctx, trace, state, t, weights[i], tick))
        state = _step(ctx, trace, t, state, None)
    baseline = measure(state)
    return baseline, [baseline if v is None else v for v in values]


def _batched(ctx, trace, firsts, weights, measure, k, tick):
    """Chunks of up to k lanes (sorted by first removal), each one vmapped pass with its own lane 0."""
    order = [int(i) for i in np.argsort(firsts, kind="stable") if firsts[i] < trace.steps]
    values: list = [None] * len(firsts)
    own: list = [None] * len(firsts)
    nb = trace.layout.n_buffers
    base = None
    for c in range(0, max(len(order), 1), k):
        chunk = order[c:c + k]
        t0, flat = trace.stored_before(int(firsts[chunk[0]]) if chunk else trace.steps - 1)
        tensors = tuple(x.unsqueeze(0) for x in to_state(ctx, trace.layout, flat).tensors())
        rows: list[int] = []  # lane index of every row after row 0 (lane 0)
        table = torch.ones(1, len(weights[0]) if weights else 0, dtype=torch.float64)  # row r: its lane's weights
        for t in range(t0, trace.steps):
            joining = [i for i in chunk if firsts[i] == t]
            if joining:
                tensors = tuple(torch.cat([x, x[:1].expand(len(joining), *x.shape[1:])]) for x in tensors)
                rows += joining
                table = torch.cat([table, torch.stack([weights[i] for i in joining])])
            w = table[:, torch.as_tensor(trace.batch(t))]  # one gather a step, not one a lane
            tensors = batched_step(ctx.gan, trace.rule, trace_inputs(ctx, trace, t), nb, tensors,
                                   w.to(ctx.device, ctx.dtype))
            tick(len(rows))
        lane0 = measure(_row(trace, tensors, 0))
        base = lane0 if base is None else base
        for r, i in enumerate(rows):
            values[i], own[i] = measure(_row(trace, tensors, r + 1)), lane0
    # lanes never traced are lane 0 itself (of the first pass)
    return base, [base if v is None else v for v in values], [base if b is None else b for b in own]


def _row(trace: Trace, tensors: tuple[torch.Tensor, ...], r: int) -> TrainState:
    return trace.layout.split(torch.cat([x[r].reshape(-1) for x in tensors]))
