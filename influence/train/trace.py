"""The recorded trace: what it holds, reading it back, the inputs and states of its steps, how it is stored.

Per traced step: the minibatch ids, the z, both learning rates, the step's kind and the players' update counts;
and the full training state (parameters, optimizer buffers, EMA) before every step (`trace_mode=snapshots`) or
before every K-th step (`checkpoints`; the steps between are recomputed bit for bit when needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .. import store
from ..config import RunConfig
from ..context import RunContext
from ..errors import TraceError
from ..stepmap import KIND_G, StateLayout, StepInputs, TraceStorage, TrainingRule, TrainState, step, trace_storage

TRACE_FILES = ("states", "batches", "z", "lrs", "kinds", "counts")


@dataclass
class Trace:
    """Recorded steps; batches padded with -1. states[i] = the full state before step stored_steps[i]."""

    states: np.ndarray  # (C, S) training dtype; S = layout.numel
    stored_steps: np.ndarray  # (C,) int64, ascending, stored_steps[0] = 0
    batches: np.ndarray  # (T, B) int64, -1 = no instance (short last batch, G half-steps)
    z: np.ndarray  # (T, B, z_dim)
    lrs: np.ndarray  # (T, 2) float64: lr_D, lr_G
    kinds: np.ndarray  # (T,) int8: stepmap.KIND_*
    counts: np.ndarray  # (T, 2) int64: updates of D and G before the step
    layout: StateLayout
    rule: TrainingRule
    final_state: np.ndarray  # (S,) state after the last step
    first_step: int  # global index of the first traced step
    ema_eval: bool  # metrics are taken on the EMA generator
    conditions: dict | None = None  # influence.conditions.current() of the training (None: not recorded)
    # (step, TrainState) of the recorded trajectory last recomputed between stored states, so that the next lanes
    # replayed off this trace in this process go on from it (counterfactual.lanes); never saved, not copied by
    # dataclasses.replace
    walked: tuple[int, TrainState] | None = field(default=None, init=False, repr=False, compare=False)
    # lane 0's measures of the recorded final state by what they measured (counterfactual.replay_lanes'
    # measure_key), so that the one-lane tasks of a check or a leave-one-out in this process evaluate it once
    final_measures: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def steps(self) -> int:
        return self.batches.shape[0]

    @property
    def n_d(self) -> int:
        return self.layout.n_d

    @property
    def final(self) -> np.ndarray:
        """(theta_D, theta_G) after the last step, flat."""
        return self.final_state[: self.layout.n_theta]

    @property
    def stores_every_step(self) -> bool:
        return len(self.stored_steps) == self.steps

    def batch(self, t: int) -> np.ndarray:
        b = self.batches[t]
        return b[b >= 0]

    def split(self, flat: np.ndarray | torch.Tensor):
        """(theta_D, theta_G) of a flat parameter vector."""
        return flat[..., : self.n_d], flat[..., self.n_d : self.layout.n_theta]

    def final_eval(self) -> tuple[np.ndarray, np.ndarray]:
        """(theta_D, generator parameters the metrics use) after the last step."""
        s = self.layout.split(torch.from_numpy(np.array(self.final_state)))
        return s.theta_d.numpy(), s.eval_generator(self.ema_eval).numpy()

    def stored_before(self, t: int) -> tuple[int, np.ndarray]:
        """(t0, state) for the last stored state at a step t0 <= t."""
        i = int(np.searchsorted(self.stored_steps, t, side="right")) - 1
        return int(self.stored_steps[i]), self.states[i]

    def step_of_instance(self, n_train: int, first: int = 0) -> np.ndarray:
        """First traced step (>= first) in which each training id occurs, -1 if never."""
        where = np.full(n_train, -1, dtype=np.int64)
        for t in reversed(range(first, self.steps)):
            where[self.batch(t)] = t
        return where

    def traced_count(self, first: int = 0) -> int:
        """How many distinct training ids the traced steps (>= first) hold."""
        return len(np.unique(np.concatenate([self.batch(t) for t in range(first, self.steps)])))

    @staticmethod
    def load(run: store.Run, mmap: bool = True) -> "Trace":
        if not run.exists("trace/meta.json"):
            raise TraceError(f"run {run.run_id} has no trace (train it first, or it was interrupted)")
        meta = run.read_json("trace/meta.json")
        final = run.read_npy("weights/final.npy")
        read = lambda name: run.read_npy(f"trace/{name}.npy", mmap=mmap)  # noqa: E731
        if "layout" not in meta:  # a run from before optimizer state: SGD, simultaneous, every step stored
            params, batches = read("params"), read("batches")
            steps = batches.shape[0]
            trace = Trace(params, np.arange(steps), batches, read("z"), read("lrs"), np.zeros(steps, np.int8),
                          np.zeros((steps, 2), np.int64), StateLayout.of(meta["n_d"], final.shape[0] - meta["n_d"], TrainingRule()),
                          TrainingRule(), final, meta["first_step"], False)
        else:
            trace = Trace(read("states"), read("stored_steps"), read("batches"), read("z"), read("lrs"), read("kinds"),
                          read("counts"), StateLayout.from_dict(meta["layout"]), TrainingRule.from_dict(meta["rule"]),
                          run.read_npy("trace/final_state.npy"), meta["first_step"], meta["ema_eval"],
                          meta.get("conditions"))
        if (trace.states.shape[1] != trace.layout.numel or trace.final_state.shape[0] != trace.layout.numel
                or trace.layout.n_theta != final.shape[0] or trace.stored_steps.shape[0] != trace.states.shape[0]):
            raise TraceError(f"run {run.run_id}: the trace does not match the run's weights")
        return trace


def trace_inputs(ctx: RunContext, trace: Trace, t: int, w: torch.Tensor | None = None) -> StepInputs:
    """The recorded inputs of traced step t (w: the batch's weights, default all 1)."""
    ids = torch.as_tensor(trace.batch(t))
    n_z = len(ids) if trace.kinds[t] != KIND_G else trace.batches.shape[1]
    z = torch.from_numpy(np.array(trace.z[t, :n_z])).to(ctx.device, ctx.dtype)
    w = torch.ones(len(ids), device=ctx.device, dtype=ctx.dtype) if w is None else w.to(ctx.device, ctx.dtype)
    lr_d, lr_g = (float(v) for v in trace.lrs[t])
    count_d, count_g = (int(c) for c in trace.counts[t])
    return StepInputs(int(trace.kinds[t]), ctx.train_x[ids.to(ctx.device)], z, w, lr_d, lr_g, count_d, count_g)


def to_state(ctx: RunContext, layout: StateLayout, flat: np.ndarray | torch.Tensor) -> TrainState:
    """A stored state with every block in storage of its own, as training allocates it. As views into one
    flat tensor (other memory alignment) Adam's elementwise update took other vectorised paths: a resumed
    run differed from an uninterrupted one in the last bit on the CPU, and on CUDA a float32 replay with
    nothing removed differed from training (bench/gpu_check.py on an H200)."""
    flat = torch.from_numpy(np.array(flat)) if isinstance(flat, np.ndarray) else flat
    s = layout.split(flat.to(ctx.device, ctx.dtype))
    own = lambda t: None if t is None else t.clone()  # noqa: E731
    return TrainState(own(s.theta_d), own(s.theta_g), tuple(map(own, s.buf_d)), tuple(map(own, s.buf_g)), own(s.ema))


def states_backward(ctx: RunContext, trace: Trace, first: int = 0, last: int | None = None) -> Iterator[tuple[int, TrainState]]:
    """(t, state before step t) for t = last (default T-1) .. first.

    With checkpoints, each segment between stored states is recomputed forward with the
    same step function (bit for bit) and held in memory only while it is walked back.
    """
    rule = trace.rule
    ends = [int(s) for s in trace.stored_steps] + [trace.steps]
    for i in range(len(trace.stored_steps) - 1, -1, -1):
        t0, t1 = ends[i], ends[i + 1]
        if t1 <= first:
            break
        top = t1 - 1 if last is None else min(t1 - 1, last)
        if top < t0:
            continue
        segment = [to_state(ctx, trace.layout, trace.states[i])]
        for t in range(t0, top):
            segment.append(step(ctx.gan, rule, segment[-1], trace_inputs(ctx, trace, t))[0])
        for t in range(top, max(t0, first) - 1, -1):
            yield t, segment[t - t0]


class Recorder:
    """Collects the trace of steps >= first; the state only every `every` steps (1 = snapshots)."""

    def __init__(self, first: int, every: int, batch: int, z_dim: int, items: dict[str, list] | None = None):
        self.first, self.every, self.batch, self.z_dim = first, every, batch, z_dim
        self.items: dict[str, list] = items or {name: [] for name in TRACE_FILES}

    def __call__(self, t: int, state: TrainState, ids: torch.Tensor, z: torch.Tensor, inp: StepInputs) -> None:
        if t < self.first:
            return
        if (t - self.first) % self.every == 0:
            self.items["states"].append(state.flat().cpu().numpy())
        pad = self.batch - len(ids)
        self.items["batches"].append(np.concatenate([ids.numpy(), np.full(pad, -1)]).astype(np.int64))
        self.items["z"].append(np.concatenate([z.numpy(), np.zeros((self.batch - len(z), self.z_dim))]).astype(np.float64))
        self.items["lrs"].append(np.array([inp.lr_d, inp.lr_g], dtype=np.float64))
        self.items["kinds"].append(np.int8(inp.kind))
        self.items["counts"].append(np.array([inp.count_d, inp.count_g], dtype=np.int64))


def step_input_bytes(cfg: RunConfig) -> int:
    """What a trace stores per step besides states: batch ids, z, both rates, the kind, both counts."""
    return cfg.train.batch_size * (8 + 8 * cfg.model.z_dim) + 16 + 1 + 16


def storage_for(ctx: RunContext, state: TrainState, steps: int) -> TraceStorage:
    """How a trace of `steps` steps from states like `state` is stored (train.trace_mode, its budget)."""
    cfg, layout = ctx.cfg, StateLayout.of(state.theta_d.numel(), state.theta_g.numel(), ctx.rule)
    return trace_storage(steps, cfg.train.trace_mode, cfg.train.checkpoint_every,
                         layout.numel * state.theta_d.element_size(), step_input_bytes(cfg), cfg.train.trace_budget_mb)
