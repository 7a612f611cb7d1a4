"""Overrides that cut a preset to fewer epochs for a benchmark, keeping what the trace depends on."""

from __future__ import annotations


def cut(cfg, epochs: int | None) -> list[str]:
    """`--set` overrides for `epochs` epochs in all, the last one traced at the preset's traced learning rate
    (the rate of its last epoch); none when `epochs` is None or not fewer than the preset's."""
    if epochs is None or epochs >= cfg.train.epochs:
        return []
    schedule = [f"{epochs}:{lr_d:g}:{lr_g:g}" for e, lr_d, lr_g in cfg.train.lr_schedule if e == cfg.train.epochs]
    return [f"train.epochs={epochs}", "train.trace_epochs=1", "train.lr_schedule=" + ",".join(schedule)]
