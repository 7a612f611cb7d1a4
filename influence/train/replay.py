"""Counterfactual replay of the traced steps: the same function, data order and z, with instances removed
(their real-loss weight set to 0, the batch size B unchanged) or down-weighted."""

from __future__ import annotations

from typing import Iterable

import torch

from ..context import RunContext
from ..progress import CancelToken, ProgressFn, Reporter
from ..stepmap import TrainState, step
from .trace import Trace, to_state, trace_inputs


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
    function, same data order, same z) under training's conditions (`influence.conditions`).
    `removed_weight` = 1 - eps keeps the "removed" instances at weight 1 - eps instead of 0:
    the eps-down-weighting counterfactual whose change / eps tends to the estimator's first-order
    prediction as eps -> 0.
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
