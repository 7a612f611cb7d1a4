"""Training epochs through `stepmap.step`: one epoch, the initial state, a retraining without instances, and a
segment trained and traced in memory (the trace-lr probe's)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import conditions
from ..context import RunContext
from ..errors import DivergenceError
from ..pretrained import load_optimizer_state
from ..progress import CancelToken, ProgressFn, Reporter
from ..stepmap import KIND_D, KIND_G, StateLayout, StepInputs, TrainState, initial_state, step
from .schedule import epoch_kinds, epoch_lr, traced_step_range, updates_before_epoch
from .trace import Recorder, Trace


def check_finite(step_index: int, state: TrainState, *losses) -> None:
    # per block, without concatenating: this runs after every training step
    bad = [name for name, ok in (("loss", all(math.isfinite(l) for l in losses if l is not None)),
                                 ("the parameters", all(bool(torch.isfinite(t).all()) for t in (state.theta_d, state.theta_g))))
           if not ok]
    if bad:
        raise DivergenceError(
            f"training diverged at step {step_index}: {bad[0]} became NaN or infinite; lower the learning rate "
            "(the last good epoch checkpoint is kept)"
        )


def run_epoch(ctx: RunContext, epoch: int, state: TrainState, rng: torch.Generator, keep: torch.Tensor,
              report: Reporter, rec: Recorder | None = None, lr: tuple[float, float] | None = None,
              steps: int | None = None) -> tuple[TrainState, list[tuple]]:
    """One epoch (or its first `steps` steps); instances with keep=False get real-loss weight 0.

    The batch order and every z depend only on `rng`, so removing instances leaves every
    other batch as it was. Records the trace when `rec` is given. lr: (lr_d, lr_g), default the schedule's.
    """
    cfg, n, batch = ctx.cfg, ctx.dataset.n_train, ctx.cfg.train.batch_size
    kinds = epoch_kinds(cfg, n)
    lr_d, lr_g = lr or cfg.lr_at_epoch(epoch)
    count_d, count_g = updates_before_epoch(ctx, kinds, epoch)
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
        check_finite(t, state, l_d, l_g)
        losses.append((l_d, l_g))
        report(t + 1, epoch=epoch, loss_d=l_d, loss_g=l_g)
    return state, losses


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


@dataclass
class Segment:
    """A segment trained and traced in memory (`record_segment`), with what a training that keeps it as its epoch
    needs besides the trace: the steps' losses, the generator's state after them, the seconds they took."""

    trace: Trace
    losses: list[tuple]
    rng_state: torch.Tensor
    seconds: float


def record_segment(ctx: RunContext, epoch: int, state: TrainState, rng: torch.Generator, lr: tuple[float, float],
                   steps: int, report: Reporter, every: int = 1) -> Segment:
    """The first `steps` steps of `epoch` from `state` at rate `lr`, trained and traced in memory (the state every
    `every` steps: 1 = snapshots); `rng` is consumed (pass a copy to leave a run's own stream alone). The trace-lr
    probe's segment."""
    cfg, n = ctx.cfg, ctx.dataset.n_train
    start = (epoch - 1) * len(epoch_kinds(cfg, n))
    rec = Recorder(start, every, cfg.train.batch_size, cfg.model.z_dim)
    keep = torch.ones(n, dtype=torch.bool)
    started = time.perf_counter()
    end, losses = run_epoch(ctx, epoch, state, rng, keep, report, rec, lr=lr, steps=steps)
    seconds = time.perf_counter() - started
    items = {name: np.stack(values) for name, values in rec.items.items()}
    layout = StateLayout.of(state.theta_d.numel(), state.theta_g.numel(), ctx.rule)
    trace = Trace(items["states"], np.arange(len(items["states"]), dtype=np.int64) * every, items["batches"],
                  items["z"], items["lrs"], items["kinds"], items["counts"], layout, ctx.rule, end.flat().cpu().numpy(),
                  start, bool(cfg.eval.ema_generator and end.ema is not None),
                  conditions.current(ctx.device, ctx.dtype))
    return Segment(trace, losses, rng.get_state(), seconds)
