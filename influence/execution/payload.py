"""What a cluster task carries, so that workers need no store: config, trace segment, data rows, feature net.

Built on the client from the run (`run_payload`, `seed_payload`); turned back into a
`RunContext` on the worker (`RunPayload.context`). The trace travels as a segment cut by
`trace_segment`: the one place that knows which of the trace's arrays a replay needs.
Everything here is in memory and in transit only; nothing is written to disk from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import store
from ..config import RunConfig
from ..context import RunContext, supplied_data
from ..data import Dataset, Split
from ..metrics import FeatureNet, RealStats
from ..train import Trace


def trace_segment(trace: Trace, start: int, stop: int | None = None) -> Trace:
    """Traced steps start..stop-1 (default: to the end) as a Trace of their own, in memory.

    It begins at the last stored state at or before `start`, so a replay from any step
    >= start finds its state in it; step indices inside the segment count from that state
    (`first_step` moves accordingly). Only the stored states in the range travel.
    """
    stop = trace.steps if stop is None else stop
    s0, _ = trace.stored_before(start)
    keep = (trace.stored_steps >= s0) & (trace.stored_steps < stop)
    return dataclasses.replace(
        trace, states=np.array(trace.states[keep]), stored_steps=np.array(trace.stored_steps[keep]) - s0,
        batches=np.array(trace.batches[s0:stop]), z=np.array(trace.z[s0:stop]), lrs=np.array(trace.lrs[s0:stop]),
        kinds=np.array(trace.kinds[s0:stop]), counts=np.array(trace.counts[s0:stop]),
        final_state=np.array(trace.final_state), first_step=trace.first_step + s0)


def segment_offset(trace: Trace, start: int) -> int:
    """Index in the full trace of step 0 of `trace_segment(trace, start)`."""
    return trace.stored_before(start)[0]


@dataclass
class RunPayload:
    """One run's replays on a worker: the trace segment, the training rows it uses, the evaluation split(s)."""

    key: str  # content hash: a worker builds one context per payload
    config: dict
    segment: Trace
    train_ids: torch.Tensor  # int64: the training ids that the segment's batches use
    train_rows: torch.Tensor  # their instances, as in Dataset.train.x
    train_stride: tuple[int, ...]  # Dataset.train.x's memory layout (see `context`)
    n_train: int
    split_sizes: dict[str, int]
    eval_x: dict[str, torch.Tensor]  # the real instances of the splits the tasks evaluate on
    real_stats: dict[str, RealStats]  # feature statistics of those splits that the client had computed
    features: FeatureNet | None

    def context(self) -> RunContext:
        """A context equal to the client's for everything the segment and `eval_x` touch."""
        cfg = RunConfig.from_dict(self.config)
        shape, dtype = self.train_rows.shape[1:], self.train_rows.dtype
        # The client's layout, not a default one: batches cut from a 1-channel tensor with channels-last
        # strides take another convolution path in torch, which rounds differently.
        x = torch.empty_strided((self.n_train, *shape), self.train_stride, dtype=dtype).zero_()
        x[self.train_ids] = self.train_rows  # the other rows are never read
        splits = {s: Split(self.eval_x[s] if s in self.eval_x else torch.zeros((n, *shape), dtype=dtype), None)
                  for s, n in self.split_sizes.items()}
        dataset = Dataset(name=cfg.data.source, train=Split(x, None), valid=splits["valid"], test=splits["test"],
                          source_index=np.arange(self.n_train), class_names=None, skipped=[])
        with supplied_data(cfg, dataset, self.features):
            ctx = RunContext.create(cfg, Path(tempfile.gettempdir()))
            ctx.features  # noqa: B018  resolved now, while the supplied feature net is in place
        for s, stats in self.real_stats.items():
            ctx.evaluator(s, stats.to(ctx.device))
        return ctx


def run_payload(ctx: RunContext, run: store.Run, segment: Trace, splits: tuple[str, ...], all_rows: bool = False) -> RunPayload:
    """The payload for tasks on `run` that replay `segment` and evaluate on `splits` (all_rows: every training row)."""
    used = segment.batches[segment.batches >= 0]
    ids = torch.arange(ctx.dataset.n_train) if all_rows else torch.from_numpy(np.unique(used))
    h = hashlib.sha256(f"{run.run_id}/{segment.first_step}/{segment.steps}/{splits}/{all_rows}".encode())
    h.update(ids.numpy().tobytes())
    ds = ctx.dataset
    # The statistics the client has (leave-one-out's baseline computed them): each worker would spend as
    # long on them as on a replay or two (quick: 2 s). Those it has not, each worker computes when needed.
    stats = {s: st.to("cpu") for s in splits if (st := ctx.computed_real_stats(s)) is not None}
    return RunPayload(h.hexdigest()[:16], ctx.cfg.to_dict(), segment, ids, ds.train.x[ids], ds.train.x.stride(), ds.n_train,
                      {s: len(getattr(ds, s).x) for s in ("valid", "test")},
                      {s: getattr(ds, s).x for s in splits}, stats, ctx.features)


@dataclass
class SeedPayload:
    """One sweep seed on a worker: its config, its whole data set, and the run files the client already has."""

    config: dict
    dataset: Dataset
    features: FeatureNet | None
    files: dict[str, bytes]  # run-relative path -> content (a training checkpoint to resume from)


def seed_payload(ctx: RunContext, run: store.Run) -> SeedPayload:
    files = {rel: run.read_bytes(rel) for rel in ("config.json", "checkpoint/state.pt") if run.exists(rel)}
    return SeedPayload(ctx.cfg.to_dict(), ctx.dataset, ctx.features, files)
