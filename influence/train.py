"""Training with a recorded trace, and counterfactual replay of that trace.

Every step is `stepmap.step` (SGD, momentum or Adam; simultaneous or alternating; optional
EMA generator). The trace of the last K epochs (or last N steps) holds, per step: the
minibatch ids, the z, both learning rates, the step's kind and the players' update counts;
and the full training state (parameters, optimizer buffers, EMA) before every step
(`trace_mode=snapshots`) or before every K-th step (`checkpoints`; the steps between are
recomputed bit for bit when needed). From it, `replay` re-runs exactly those steps,
optionally with instances removed (their real-loss weight set to 0, the batch size B
unchanged), and the estimator walks it backwards. Training checkpoints after every epoch
and resumes from the last one.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from . import conditions, store
from .classifier import PINNED, feature_weights
from .config import RunConfig
from .context import RunContext
from .data import SOURCE_RECORD, require_prepared
from .errors import DivergenceError, StoreError, TraceError
from .pretrained import load_optimizer_state, start_record
from .progress import CancelToken, ProgressFn, Reporter
from .stepmap import (KIND_BOTH, KIND_D, KIND_G, StateLayout, StepInputs, TraceStorage, TrainingRule, TrainState,
                      initial_state, step, trace_storage)

TRACE_FILES = ("states", "batches", "z", "lrs", "kinds", "counts")
CHECKPOINT = "checkpoint/state.pt"
TRACE_LR_RECORD = "trace_lr.json"  # the probe of train.trace_lr (influence.tracelr), written before the traced epochs
log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------- one step
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


def _check_finite(step_index: int, state: TrainState, *losses) -> None:
    # per block, without concatenating: this runs after every training step
    bad = [name for name, ok in (("loss", all(math.isfinite(l) for l in losses if l is not None)),
                                 ("the parameters", all(bool(torch.isfinite(t).all()) for t in (state.theta_d, state.theta_g))))
           if not ok]
    if bad:
        raise DivergenceError(
            f"training diverged at step {step_index}: {bad[0]} became NaN or infinite; lower the learning rate "
            "(the last good epoch checkpoint is kept)"
        )


# ---------------------------------------------------------------- training
def steps_per_epoch(n: int, batch: int) -> int:
    """Minibatches of real data per epoch."""
    return math.ceil(n / batch)


def epoch_kinds(cfg: RunConfig, n_train: int) -> list[int]:
    """The step kinds of one epoch, in order: one per minibatch (simultaneous), or per minibatch a
    D half-step plus a G half-step after every d_steps-th one and after the last."""
    batches = steps_per_epoch(n_train, cfg.train.batch_size)
    if cfg.train.scheme == "simultaneous":
        return [KIND_BOTH] * batches
    kinds = []
    for i in range(batches):
        kinds.append(KIND_D)
        if (i + 1) % cfg.train.d_steps == 0 or i == batches - 1:
            kinds.append(KIND_G)
    return kinds


def traced_step_range(cfg: RunConfig, n_train: int) -> tuple[int, int]:
    per_epoch = len(epoch_kinds(cfg, n_train))
    total = per_epoch * cfg.train.epochs
    first = total - (cfg.train.trace_steps or per_epoch * cfg.train.trace_epochs)
    return max(first, 0), total


def _updates_before_epoch(ctx: RunContext, kinds: list[int], epoch: int) -> tuple[int, int]:
    """Each player's updates before the epoch: those of the run's earlier epochs, plus those a supplied optimizer
    state had made (its step count: Adam's bias correction continues from there)."""
    n_d = sum(k != KIND_G for k in kinds)
    n_g = sum(k != KIND_D for k in kinds)
    start_d, start_g = ctx.start_counts
    return start_d + (epoch - 1) * n_d, start_g + (epoch - 1) * n_g


def first_traced_epoch(cfg: RunConfig, n_train: int) -> int:
    """The 1-based epoch holding the first traced step: from it on, train.trace_lr decides the rate."""
    first, _ = traced_step_range(cfg, n_train)
    return first // len(epoch_kinds(cfg, n_train)) + 1


def epoch_lr(cfg: RunConfig, epoch: int, n_train: int, traced_lr: tuple[float, float] | None) -> tuple[float, float]:
    """(lr_d, lr_g) of `epoch`: the schedule's, or in the traced epochs the probe's choice (train.trace_lr=auto)."""
    if traced_lr is not None and epoch >= first_traced_epoch(cfg, n_train):
        return traced_lr
    return cfg.lr_at_epoch(epoch)


def chosen_traced_lr(cfg: RunConfig, trace: "Trace") -> tuple[float, float] | None:
    """The rate the probe chose for the traced epochs (train.trace_lr=auto), read from the trace; None otherwise."""
    if cfg.train.trace_lr != "auto":
        return None
    return float(trace.lrs[0, 0]), float(trace.lrs[0, 1])


class _Recorder:
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


def run_epoch(ctx: RunContext, epoch: int, state: TrainState, rng: torch.Generator, keep: torch.Tensor,
              report: Reporter, rec: _Recorder | None = None, lr: tuple[float, float] | None = None,
              steps: int | None = None) -> tuple[TrainState, list[tuple]]:
    """One epoch (or its first `steps` steps); instances with keep=False get real-loss weight 0.

    The batch order and every z depend only on `rng`, so removing instances leaves every
    other batch as it was. Records the trace when `rec` is given. lr: (lr_d, lr_g), default the schedule's.
    """
    cfg, n, batch = ctx.cfg, ctx.dataset.n_train, ctx.cfg.train.batch_size
    kinds = epoch_kinds(cfg, n)
    lr_d, lr_g = lr or cfg.lr_at_epoch(epoch)
    count_d, count_g = _updates_before_epoch(ctx, kinds, epoch)
    order = torch.randperm(n, generator=rng)
    losses, i = [], 0
    no_ids = torch.zeros(0, dtype=torch.long)
    for k, kind in enumerate(kinds[:steps]):
        t = (epoch - 1) * len(kinds) + k
        if kind == KIND_G:
            ids = no_ids
            z = torch.randn(batch, cfg.model.z_dim, generator=rng, dtype=torch.float64)
        else:
            ids = order[i * batch : (i + 1) * batch]
            i += 1
            z = torch.randn(len(ids), cfg.model.z_dim, generator=rng, dtype=torch.float64)
        inp = StepInputs(kind, ctx.train_x[ids.to(ctx.device)], z.to(ctx.device, ctx.dtype),
                         keep[ids].to(ctx.device, ctx.dtype), lr_d, lr_g, count_d, count_g)
        if rec is not None:
            rec(t, state, ids, z, inp)
        state, l_d, l_g = step(ctx.gan, ctx.rule, state, inp)
        count_d, count_g = count_d + (kind != KIND_G), count_g + (kind != KIND_D)
        _check_finite(t, state, l_d, l_g)
        losses.append((l_d, l_g))
        report(t + 1, epoch=epoch, loss_d=l_d, loss_g=l_g)
    return state, losses


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def initial_train_state(ctx: RunContext) -> TrainState:
    """The state before the first step: the seed's weights (or model.init_g / init_d) and fresh optimizer buffers
    (or those of model.init_opt_d / init_opt_g)."""
    gan, G, D = ctx.new_gan()
    state = initial_state(gan.layout_d.flatten(D), gan.layout_g.flatten(G), ctx.rule)
    supplied = load_optimizer_state(ctx.cfg.model, gan, ctx.rule)
    if supplied is not None:
        state.buf_d, state.buf_g = (tuple(b.to(ctx.device, ctx.dtype) for b in bufs) for bufs in supplied)
    return state


def train_without(ctx: RunContext, removed_ids, progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                  traced_lr: tuple[float, float] | None = None):
    """Full retraining from the seed's initial weights with `removed_ids` left out of every epoch.

    traced_lr: the run's traced epochs' rate when its probe chose it (`chosen_traced_lr`); the retraining
    keeps that choice. Returns (theta_D, generator parameters the metrics use)."""
    state = initial_train_state(ctx)
    n = ctx.dataset.n_train
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.as_tensor(list(removed_ids), dtype=torch.long)] = False
    rng = torch.Generator().manual_seed(ctx.cfg.seed)
    _, total = traced_step_range(ctx.cfg, n)
    report = Reporter("retrain", total, progress, cancel)
    for epoch in range(1, ctx.cfg.train.epochs + 1):
        state, _ = run_epoch(ctx, epoch, state, rng, keep, report, lr=epoch_lr(ctx.cfg, epoch, n, traced_lr))
    return state.theta_d, state.eval_generator(ctx.cfg.eval.ema_generator)


def record_segment(ctx: RunContext, epoch: int, state: TrainState, rng: torch.Generator, lr: tuple[float, float],
                   steps: int, report: Reporter, every: int = 1) -> "Trace":
    """The first `steps` steps of `epoch` from `state` at rate `lr`, trained and traced in memory (the state every
    `every` steps: 1 = snapshots); `rng` is consumed (pass a copy to leave a run's own stream alone). The trace-lr
    probe's segment."""
    cfg, n = ctx.cfg, ctx.dataset.n_train
    start = (epoch - 1) * len(epoch_kinds(cfg, n))
    rec = _Recorder(start, every, cfg.train.batch_size, cfg.model.z_dim)
    keep = torch.ones(n, dtype=torch.bool)
    end, _ = run_epoch(ctx, epoch, state, rng, keep, report, rec, lr=lr, steps=steps)
    items = {name: np.stack(values) for name, values in rec.items.items()}
    layout = StateLayout.of(state.theta_d.numel(), state.theta_g.numel(), ctx.rule)
    return Trace(items["states"], np.arange(len(items["states"]), dtype=np.int64) * every, items["batches"], items["z"],
                 items["lrs"], items["kinds"], items["counts"], layout, ctx.rule, end.flat().cpu().numpy(), start,
                 bool(cfg.eval.ema_generator and end.ema is not None), conditions.current(ctx.device, ctx.dtype))


def pin_feature_net(ctx: RunContext, run: store.Run) -> None:
    """Copy the feature net the run's metrics came from into the run (`classifier.PINNED`), once."""
    if ctx.cfg.is_2d or run.exists(PINNED):
        return
    source = feature_weights(ctx.cfg.eval, ctx.cfg.identity()["data"], store.cache_dir(ctx.root))
    if source is not None and source.exists():  # absent where the caller supplied the data and its net
        run.write(PINNED, source.read_bytes())


def train(
    cfg: RunConfig,
    root,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> store.Run:
    """Train (or resume, or reuse) the run of `cfg`; returns its store folder.

    One trainer per run (`Run.exclusive("train")`), whoever calls: a train job, a sweep, the CLI. A second
    one waits and then finds the run finished."""
    root = store.store_root(root)
    run = store.Run(root, cfg.run_id)
    if run.exists("summary.json") and not run.exists(CHECKPOINT):
        run.read_json("summary.json")  # verifies the finished run is intact
        return run
    with run.exclusive("train", progress, cancel):
        if run.exists("summary.json"):  # trained by the process this one waited for, or tidied here
            run.read_json("summary.json")
            _tidy(run)
            return run
        require_prepared(cfg)
        _train(cfg, run, progress, cancel)
    return run


def _train(cfg: RunConfig, run: store.Run, progress: ProgressFn | None, cancel: CancelToken | None) -> None:
    root = run.root
    ctx = RunContext.create(cfg, root)
    started = time.perf_counter()
    state = initial_train_state(ctx)
    layout = StateLayout.of(state.theta_d.numel(), state.theta_g.numel(), ctx.rule)
    n = ctx.dataset.n_train
    per_epoch = len(epoch_kinds(cfg, n))
    first_traced, total = traced_step_range(cfg, n)
    storage = storage_for(ctx, state, total - first_traced)
    every = storage.every
    rng = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    start_epoch = 1
    items = None

    run.write_json("config.json", cfg.to_dict())
    resumed = _load_checkpoint(run, layout)
    if resumed is not None:
        flat, rng_state, history, items, start_epoch = resumed
        state = to_state(ctx, layout, flat)
        rng.set_state(rng_state)
    rec = _Recorder(first_traced, every, cfg.train.batch_size, cfg.model.z_dim, items)

    report = Reporter("train", total, progress, cancel)
    ctx.evaluator("test")  # builds the feature classifier now, not inside the first epoch's timing
    keep = torch.ones(n, dtype=torch.bool)
    use_ema = cfg.eval.ema_generator
    probe = None
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        if probe is None and cfg.train.trace_lr != "schedule" and epoch >= first_traced_epoch(cfg, n):
            probe = _traced_lr_probe(ctx, run, state, epoch, rng, total - first_traced, progress, cancel)
        lr_d, lr_g = epoch_lr(cfg, epoch, n, probe.chosen if probe is not None and probe.mode == "auto" else None)
        epoch_started = time.perf_counter()
        state, losses = run_epoch(ctx, epoch, state, rng, keep, report, rec, lr=(lr_d, lr_g))
        entry = {"epoch": epoch, "lr_d": lr_d, "lr_g": lr_g, "seconds": time.perf_counter() - epoch_started,
                 "loss_d": _mean(l[0] for l in losses), "loss_g": _mean(l[1] for l in losses)}
        if cfg.eval.metrics_every_epoch or epoch == cfg.train.epochs:
            entry.update(ctx.evaluator("test").evaluate(state.theta_d, state.eval_generator(use_ema)))
        history.append(entry)
        _write_grid(ctx, run, epoch, state.eval_generator(use_ema))
        _save_checkpoint(run, epoch, state, rng, history, rec.items)
        report(epoch * per_epoch, epoch=epoch, epoch_done=entry)

    _finish(ctx, run, state, layout, rec, first_traced, history, time.perf_counter() - started, total, storage, probe)
    return run


def step_input_bytes(cfg: RunConfig) -> int:
    """What a trace stores per step besides states: batch ids, z, both rates, the kind, both counts."""
    return cfg.train.batch_size * (8 + 8 * cfg.model.z_dim) + 16 + 1 + 16


def storage_for(ctx: RunContext, state: TrainState, steps: int) -> TraceStorage:
    """How a trace of `steps` steps from states like `state` is stored (train.trace_mode, its budget)."""
    cfg, layout = ctx.cfg, StateLayout.of(state.theta_d.numel(), state.theta_g.numel(), ctx.rule)
    return trace_storage(steps, cfg.train.trace_mode, cfg.train.checkpoint_every,
                         layout.numel * state.theta_d.element_size(), step_input_bytes(cfg), cfg.train.trace_budget_mb)


def _traced_lr_probe(ctx: RunContext, run: store.Run, state: TrainState, epoch: int, rng: torch.Generator,
                     traced_steps: int, progress, cancel):
    """The probe of train.trace_lr before the first traced epoch (from a copy of the run's generator, so the run's
    own stream is untouched), stored in the run; a resumed run reads it (the same state gave it: deterministic)."""
    from .tracelr import Probe, probe_traced_lr  # the probe walks the estimator's loop, which reads this module

    if run.exists(TRACE_LR_RECORD):
        return Probe.from_dict(run.read_json(TRACE_LR_RECORD))
    if epoch > first_traced_epoch(ctx.cfg, ctx.dataset.n_train):
        raise StoreError(f"run {run.run_id}: the traced epochs began but {TRACE_LR_RECORD} is missing; delete the "
                         "run's checkpoint/ folder to train it again")
    copy = torch.Generator()
    copy.set_state(rng.get_state())
    probe = probe_traced_lr(ctx, state, epoch, copy, traced_steps, progress, cancel)
    run.write_json(TRACE_LR_RECORD, probe.as_dict())
    return probe


def _write_grid(ctx: RunContext, run: store.Run, epoch: int, theta_g: torch.Tensor) -> None:
    with torch.no_grad():
        samples = ctx.gan.generate(theta_g, ctx.latents["grid"]).float().cpu()
    if ctx.cfg.is_2d:
        run.write_npy(f"grids/epoch_{epoch:03d}.npy", samples.numpy())
        return
    run.write(f"grids/epoch_{epoch:03d}.png", image_grid_png(samples))


def image_grid_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    from torchvision.utils import make_grid  # here: importing torchvision costs job workers seconds

    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    grid = make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def _save_checkpoint(run, epoch, state: TrainState, rng, history, items) -> None:
    # One file, written atomically: a kill at any moment leaves the previous epoch's checkpoint whole.
    ckpt = {"state": state.flat().cpu(), "rng": rng.get_state(), "epoch": epoch, "history": json.dumps(history)}
    for name, values in items.items():
        ckpt[f"trace_{name}"] = torch.from_numpy(np.stack(values)) if values else torch.zeros(0)
    run.write_state_dict(CHECKPOINT, ckpt)


def _load_checkpoint(run: store.Run, layout: StateLayout):
    if not run.exists(CHECKPOINT):
        return None
    try:
        ckpt = run.read_state_dict(CHECKPOINT)
        items = {name: list(ckpt[f"trace_{name}"].numpy()) for name in TRACE_FILES}
        if ckpt["state"].numel() != layout.numel:
            raise KeyError("state size")
    except (StoreError, KeyError) as e:
        log.warning("ignoring the training checkpoint, training starts again: %s", e)
        return None  # a damaged or foreign checkpoint is ignored: training restarts from scratch
    return ckpt["state"], ckpt["rng"], json.loads(ckpt["history"]), items, int(ckpt["epoch"]) + 1


def _finish(ctx, run, state: TrainState, layout: StateLayout, rec: _Recorder, first_traced, history, seconds, total,
            storage, probe) -> None:
    gan = ctx.gan
    run.write_npy("weights/final.npy", torch.cat([state.theta_d, state.theta_g]).detach().cpu().numpy())
    # clone: after a resume the blocks are views of one flat state, and torch.save would store all of it
    run.write_state_dict("weights/generator.pt", gan.layout_g.unflatten(state.theta_g.detach().cpu().clone()))
    run.write_state_dict("weights/discriminator.pt", gan.layout_d.unflatten(state.theta_d.detach().cpu().clone()))
    if state.ema is not None:
        run.write_state_dict("weights/generator_ema.pt", gan.layout_g.unflatten(state.ema.detach().cpu().clone()))
    items = rec.items
    for name, values in items.items():
        run.write_npy(f"trace/{name}.npy", np.stack(values))
    stored = np.arange(first_traced, total, rec.every, dtype=np.int64) - first_traced
    run.write_npy("trace/stored_steps.npy", stored)
    run.write_npy("trace/final_state.npy", state.flat().cpu().numpy())
    run.write_json("trace/meta.json", {
        "n_d": gan.layout_d.numel, "first_step": first_traced, "steps": len(items["batches"]),
        "layout": layout.as_dict(), "rule": ctx.rule.as_dict(), "scheme": ctx.cfg.train.scheme,
        "ema_eval": bool(ctx.cfg.eval.ema_generator and state.ema is not None),
        **storage.as_dict(),
        # what a bit-exact recompute or replay needs besides the config and seed (influence.conditions)
        "conditions": conditions.current(ctx.device, ctx.dtype),
    })
    run.write_json("history.json", history)
    summary = {
        "run_id": run.run_id,
        "preset": ctx.cfg.preset,
        "device": str(ctx.device),
        "steps": total,
        "traced_steps": len(items["batches"]),
        "seconds": seconds,
        "n_train": ctx.dataset.n_train,
        "n_unreadable": len(ctx.dataset.skipped),
        "test": {k: v for k, v in history[-1].items() if k in ("is", "fid", "all", "dloss")},
        "trace_storage": storage.as_dict(),
        "start": start_record(ctx.cfg.model, ctx.start_counts),
    }
    if probe is not None:  # its cost against the traced epochs' training, now that they ran
        traced = [h.get("seconds") for h in history if h["epoch"] >= first_traced_epoch(ctx.cfg, ctx.dataset.n_train)]
        summary["trace_lr"] = probe.with_traced_seconds(sum(traced) if all(t is not None for t in traced) else None)
        run.write_json(TRACE_LR_RECORD, summary["trace_lr"])
    pin_feature_net(ctx, run)
    if ctx.dataset.notes is not None:  # own images: what was read, skipped, renamed, held out
        run.write_json(SOURCE_RECORD, ctx.dataset.source_report())
    run.write_json("summary.json", summary)
    _tidy(run)


def _tidy(run: store.Run) -> None:
    """A finished run needs neither its checkpoint nor the temp files of writes that a kill interrupted
    (only training writes these folders). The checkpoint goes last: while it is there, `train` comes back
    here (a kill in between)."""
    run.remove_stale_temp_files(("grids", "weights", "trace", "features"))
    # the run folder holds others' files too (the manifest's temp files are written under its lock, which this holds)
    run.remove_stale_temp_files([""], ["config.json", "history.json", "summary.json", "manifest.json"])
    run.forget("checkpoint/")
    for p in sorted(run.path("checkpoint").iterdir()) if run.exists("checkpoint") else []:
        if p.is_file():
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------- replay
def replay_state(
    ctx: RunContext,
    trace: Trace,
    removed_ids: Iterable[int] = (),
    start: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    removed_weight: float = 0.0,
) -> TrainState:
    """The full state after re-running traced steps start..T-1 with `removed_ids` weighted `removed_weight`.

    Starts from the last stored state at or before `start` (steps before `start` keep every
    instance). With nothing removed this reproduces the run's final state exactly (same
    function, same data order, same z). `removed_weight` = 1 - eps keeps the "removed"
    instances at weight 1 - eps instead of 0: the eps-down-weighting counterfactual whose
    change / eps tends to the estimator's first-order prediction as eps -> 0.
    """
    weight = torch.ones(ctx.dataset.n_train, dtype=torch.float64)
    weight[torch.as_tensor(list(removed_ids), dtype=torch.long)] = removed_weight
    t0, flat = trace.stored_before(start)
    state = to_state(ctx, trace.layout, flat)
    report = Reporter("replay", trace.steps - t0, progress, cancel)
    for t in range(t0, trace.steps):
        w = weight[torch.as_tensor(trace.batch(t))] if t >= start else None
        state = step(ctx.gan, trace.rule, state, trace_inputs(ctx, trace, t, w))[0]
        report(t - t0 + 1)
    return state


def replay(ctx: RunContext, trace: Trace, removed_ids: Iterable[int] = (), start: int = 0,
           progress: ProgressFn | None = None, cancel: CancelToken | None = None,
           removed_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """`replay_state`, returned as (theta_D, generator parameters the metrics use)."""
    s = replay_state(ctx, trace, removed_ids, start, progress, cancel, removed_weight)
    return s.theta_d.detach(), s.eval_generator(trace.ema_eval).detach()


def load_history(run: store.Run) -> list[dict]:
    return run.read_json("history.json")


def checkpoint_history(run: store.Run) -> list[dict]:
    """Per-epoch history of a run still training, from its last checkpoint; [] if none or unreadable."""
    if not run.exists(CHECKPOINT):
        return []
    try:
        return json.loads(run.read_state_dict(CHECKPOINT)["history"])
    except (StoreError, KeyError, ValueError):
        return []  # being replaced right now, or damaged: the caller polls again
