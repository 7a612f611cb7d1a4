"""Plain simultaneous SGD with a recorded trace, and counterfactual replay of that trace.

The trace of the last K epochs (or last N steps) holds, per step: the minibatch ids,
the z of the fake half, both learning rates and the parameters before the step. From
it, `replay` re-runs exactly those steps, optionally with instances removed (their
real-loss weight set to 0, the batch size B unchanged), and the estimator walks it
backwards. Training checkpoints after every epoch and resumes from the last one.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from . import store
from .config import RunConfig
from .context import RunContext
from .errors import DivergenceError, StoreError, TraceError
from .progress import CancelToken, ProgressFn, Reporter

TRACE_FILES = ("params", "batches", "z", "lrs")
log = logging.getLogger(__name__)


@dataclass
class Trace:
    """Recorded steps. params[t] = (theta_D, theta_G) flat, before step t; batches padded with -1."""

    params: np.ndarray  # (T, P_D + P_G), training dtype
    batches: np.ndarray  # (T, B) int64, -1 = no instance (short last batch)
    z: np.ndarray  # (T, B, z_dim)
    lrs: np.ndarray  # (T, 2) float64: lr_D, lr_G
    n_d: int  # number of discriminator parameters (the first n_d entries of params)
    final: np.ndarray  # (P_D + P_G,) parameters after the last step
    first_step: int  # global index of the first traced step

    @property
    def steps(self) -> int:
        return self.params.shape[0]

    def batch(self, t: int) -> np.ndarray:
        b = self.batches[t]
        return b[b >= 0]

    def split(self, flat: np.ndarray | torch.Tensor):
        return flat[..., : self.n_d], flat[..., self.n_d :]

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
        arrays = {name: run.read_npy(f"trace/{name}.npy", mmap=mmap) for name in TRACE_FILES}
        final = run.read_npy("weights/final.npy")
        trace = Trace(**arrays, n_d=meta["n_d"], final=final, first_step=meta["first_step"])
        if trace.params.shape[1] != final.shape[0] or trace.batches.shape[0] != trace.steps:
            raise TraceError(f"run {run.run_id}: the trace does not match the run's weights")
        return trace


# ---------------------------------------------------------------- one step
def sgd_step(ctx: RunContext, theta_d, theta_g, x, z, w, lr_d: float, lr_g: float):
    """One simultaneous SGD step: both gradients at the current parameters."""
    td = theta_d.detach().requires_grad_(True)
    tg = theta_g.detach().requires_grad_(True)
    g_d, g_g, l_d, l_g = ctx.gan.step_gradients(td, tg, x, z, w)
    return theta_d - lr_d * g_d, theta_g - lr_g * g_g, float(l_d), float(l_g)


def _check_finite(step: int, **tensors) -> None:
    for name, t in tensors.items():
        if not bool(torch.isfinite(torch.as_tensor(t)).all()):
            raise DivergenceError(
                f"training diverged at step {step}: {name} is NaN or infinite; lower the learning rate "
                "(the last good epoch checkpoint is kept)"
            )


# ---------------------------------------------------------------- training
def steps_per_epoch(n: int, batch: int) -> int:
    return math.ceil(n / batch)


def traced_step_range(cfg: RunConfig, n_train: int) -> tuple[int, int]:
    per_epoch = steps_per_epoch(n_train, cfg.train.batch_size)
    total = per_epoch * cfg.train.epochs
    first = total - (cfg.train.trace_steps or per_epoch * cfg.train.trace_epochs)
    return max(first, 0), total


def run_epoch(ctx: RunContext, epoch: int, theta_d, theta_g, rng: torch.Generator, keep: torch.Tensor,
              report: Reporter, rec: dict | None = None, first_traced: int = 0):
    """One epoch of simultaneous SGD; instances with keep=False get real-loss weight 0.

    Records the trace for steps >= first_traced when `rec` is given. The batch order and
    z depend only on `rng`, so removing instances leaves every other batch as it was.
    """
    cfg, n, batch = ctx.cfg, ctx.dataset.n_train, ctx.cfg.train.batch_size
    per_epoch = steps_per_epoch(n, batch)
    lr_d, lr_g = cfg.lr_at_epoch(epoch)
    order = torch.randperm(n, generator=rng)
    losses = []
    for i in range(per_epoch):
        step = (epoch - 1) * per_epoch + i
        ids = order[i * batch : (i + 1) * batch]
        z = torch.randn(len(ids), cfg.model.z_dim, generator=rng, dtype=torch.float64)
        if rec is not None and step >= first_traced:
            _record(rec, theta_d, theta_g, ids, z, lr_d, lr_g, batch)
        w = keep[ids].to(ctx.device, ctx.dtype)
        x = ctx.train_x[ids.to(ctx.device)]
        theta_d, theta_g, l_d, l_g = sgd_step(ctx, theta_d, theta_g, x, z.to(ctx.device, ctx.dtype), w, lr_d, lr_g)
        _check_finite(step, loss_d=l_d, loss_g=l_g, theta_d=theta_d, theta_g=theta_g)
        losses.append((l_d, l_g))
        report(step + 1, epoch=epoch, loss_d=l_d, loss_g=l_g)
    return theta_d, theta_g, losses


def train_without(ctx: RunContext, removed_ids, progress: ProgressFn | None = None, cancel: CancelToken | None = None):
    """Full retraining from the seed's initial weights with `removed_ids` left out of every epoch."""
    gan, G, D = ctx.new_gan()
    theta_d, theta_g = gan.layout_d.flatten(D), gan.layout_g.flatten(G)
    keep = torch.ones(ctx.dataset.n_train, dtype=torch.bool)
    keep[torch.as_tensor(list(removed_ids), dtype=torch.long)] = False
    rng = torch.Generator().manual_seed(ctx.cfg.seed)
    per_epoch = steps_per_epoch(ctx.dataset.n_train, ctx.cfg.train.batch_size)
    report = Reporter("retrain", per_epoch * ctx.cfg.train.epochs, progress, cancel)
    for epoch in range(1, ctx.cfg.train.epochs + 1):
        theta_d, theta_g, _ = run_epoch(ctx, epoch, theta_d, theta_g, rng, keep, report)
    return theta_d, theta_g


def train(
    cfg: RunConfig,
    root,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> store.Run:
    """Train (or resume, or reuse) the run of `cfg`; returns its store folder."""
    root = store.store_root(root)
    run = store.Run(root, cfg.run_id)
    if run.exists("summary.json"):
        run.read_json("summary.json")  # verifies the finished run is intact
        return run
    ctx = RunContext.create(cfg, root)
    started = time.perf_counter()
    gan, G, D = ctx.new_gan()
    theta_d, theta_g = gan.layout_d.flatten(D), gan.layout_g.flatten(G)
    n = ctx.dataset.n_train
    per_epoch = steps_per_epoch(n, cfg.train.batch_size)
    total = per_epoch * cfg.train.epochs
    first_traced, _ = traced_step_range(cfg, n)
    rng = torch.Generator().manual_seed(cfg.seed)
    rec: dict[str, list] = {name: [] for name in TRACE_FILES}
    history: list[dict] = []
    start_epoch = 1

    run.write_json("config.json", cfg.to_dict())
    resumed = _load_checkpoint(run)
    if resumed is not None:
        theta_d, theta_g, rng_state, history, rec, start_epoch = resumed
        theta_d, theta_g = theta_d.to(ctx.device, ctx.dtype), theta_g.to(ctx.device, ctx.dtype)
        rng.set_state(rng_state)

    report = Reporter("train", total, progress, cancel)
    ctx.evaluator("test")  # builds the feature classifier now, not inside the first epoch's timing
    keep = torch.ones(n, dtype=torch.bool)
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        lr_d, lr_g = cfg.lr_at_epoch(epoch)
        theta_d, theta_g, losses = run_epoch(ctx, epoch, theta_d, theta_g, rng, keep, report, rec, first_traced)
        entry = {"epoch": epoch, "lr_d": lr_d, "lr_g": lr_g,
                 "loss_d": float(np.mean([l[0] for l in losses])), "loss_g": float(np.mean([l[1] for l in losses]))}
        if cfg.eval.metrics_every_epoch or epoch == cfg.train.epochs:
            entry.update(ctx.evaluator("test").evaluate(theta_d, theta_g))
        history.append(entry)
        _write_grid(ctx, run, epoch, theta_g)
        _save_checkpoint(run, epoch, theta_d, theta_g, rng, history, rec)
        report(epoch * per_epoch, epoch=epoch, epoch_done=entry)

    _finish(ctx, run, theta_d, theta_g, rec, first_traced, history, time.perf_counter() - started, total)
    return run


def _record(rec, theta_d, theta_g, ids, z, lr_d, lr_g, batch) -> None:
    pad = batch - len(ids)
    rec["params"].append(torch.cat([theta_d, theta_g]).detach().cpu().numpy())
    rec["batches"].append(np.concatenate([ids.numpy(), np.full(pad, -1)]).astype(np.int64))
    rec["z"].append(np.concatenate([z.numpy(), np.zeros((pad, z.shape[1]))]).astype(np.float64))
    rec["lrs"].append(np.array([lr_d, lr_g], dtype=np.float64))


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


def _save_checkpoint(run, epoch, theta_d, theta_g, rng, history, rec) -> None:
    # One file, written atomically: a kill at any moment leaves the previous epoch's checkpoint whole.
    state = {"theta_d": theta_d.cpu(), "theta_g": theta_g.cpu(), "rng": rng.get_state(), "epoch": epoch,
             "history": json.dumps(history)}
    for name, items in rec.items():
        state[f"trace_{name}"] = torch.from_numpy(np.stack(items)) if items else torch.zeros(0)
    run.write_state_dict("checkpoint/state.pt", state)


def _load_checkpoint(run: store.Run):
    if not run.exists("checkpoint/state.pt"):
        return None
    try:
        state = run.read_state_dict("checkpoint/state.pt")
        rec = {name: list(state[f"trace_{name}"].numpy()) for name in TRACE_FILES}
    except (StoreError, KeyError) as e:
        log.warning("ignoring the training checkpoint, training starts again: %s", e)
        return None  # a damaged or foreign checkpoint is ignored: training restarts from scratch
    return state["theta_d"], state["theta_g"], state["rng"], json.loads(state["history"]), rec, state["epoch"] + 1


def _finish(ctx, run, theta_d, theta_g, rec, first_traced, history, seconds, total) -> None:
    run.write_npy("weights/final.npy", torch.cat([theta_d, theta_g]).detach().cpu().numpy())
    gan = ctx.gan
    run.write_state_dict("weights/generator.pt", gan.layout_g.unflatten(theta_g.detach().cpu()))
    run.write_state_dict("weights/discriminator.pt", gan.layout_d.unflatten(theta_d.detach().cpu()))
    for name, items in rec.items():
        run.write_npy(f"trace/{name}.npy", np.stack(items))
    run.write_json("trace/meta.json", {"n_d": gan.layout_d.numel, "first_step": first_traced, "steps": len(rec["params"])})
    run.write_json("history.json", history)
    summary = {
        "run_id": run.run_id,
        "preset": ctx.cfg.preset,
        "device": str(ctx.device),
        "steps": total,
        "traced_steps": len(rec["params"]),
        "seconds": seconds,
        "n_train": ctx.dataset.n_train,
        "test": {k: v for k, v in history[-1].items() if k in ("is", "fid", "all", "dloss")},
    }
    run.write_json("summary.json", summary)
    # The checkpoint is no longer needed once the finished run is on disk, nor are the temp
    # files of writes that a kill interrupted (only training writes these folders).
    run.forget("checkpoint/")
    for p in sorted(run.path("checkpoint").iterdir()) if run.exists("checkpoint") else []:
        if p.is_file():
            p.unlink(missing_ok=True)
    run.remove_stale_temp_files(("", "grids", "weights", "trace"))


# ---------------------------------------------------------------- replay
def replay(
    ctx: RunContext,
    trace: Trace,
    removed_ids: Iterable[int] = (),
    start: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    removed_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-run traced steps start..T-1 from the stored parameters before `start`, skipping removed instances.

    With nothing removed this reproduces the run's final parameters exactly (same
    function, same data order, same z). `removed_weight` = 1 - eps keeps the "removed"
    instances at weight 1 - eps instead of 0: the eps-down-weighting counterfactual whose
    change / eps tends to the estimator's first-order prediction as eps -> 0.
    Returns (theta_D, theta_G) after the last step.
    """
    weight = torch.ones(ctx.dataset.n_train, dtype=torch.float64)
    weight[torch.as_tensor(list(removed_ids), dtype=torch.long)] = removed_weight
    flat = torch.from_numpy(np.array(trace.params[start])).to(ctx.device, ctx.dtype)
    theta_d, theta_g = trace.split(flat)
    report = Reporter("replay", trace.steps - start, progress, cancel)
    for t in range(start, trace.steps):
        ids = torch.as_tensor(trace.batch(t))
        z = torch.from_numpy(np.array(trace.z[t, : len(ids)])).to(ctx.device, ctx.dtype)
        w = weight[ids].to(ctx.device, ctx.dtype)
        lr_d, lr_g = trace.lrs[t]
        theta_d, theta_g, _, _ = sgd_step(ctx, theta_d, theta_g, ctx.train_x[ids.to(ctx.device)], z, w, float(lr_d), float(lr_g))
        report(t - start + 1)
    return theta_d.detach(), theta_g.detach()


def load_history(run: store.Run) -> list[dict]:
    return run.read_json("history.json")


def checkpoint_history(run: store.Run) -> list[dict]:
    """Per-epoch history of a run still training, from its last checkpoint; [] if none or unreadable."""
    if not run.exists("checkpoint/state.pt"):
        return []
    try:
        return json.loads(run.read_state_dict("checkpoint/state.pt")["history"])
    except (StoreError, KeyError, ValueError):
        return []  # being replaced right now, or damaged: the caller polls again
