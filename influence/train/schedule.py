"""The steps of an epoch and the traced range: step kinds, update counts, which epochs are traced, their rates."""

from __future__ import annotations

import math

from ..config import RunConfig
from ..context import RunContext
from ..stepmap import KIND_BOTH, KIND_D, KIND_G
from .trace import Trace


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


def updates_before_epoch(ctx: RunContext, kinds: list[int], epoch: int) -> tuple[int, int]:
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
