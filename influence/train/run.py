"""A run in the store: train (or resume, or reuse) it, epoch checkpoints, the trace-lr probe before the traced
epochs, sample grids, and the finished run's weights, trace, history and summary."""

from __future__ import annotations

import io
import json
import logging
import math
import time

import numpy as np
import torch
from PIL import Image

from .. import conditions, store
from ..classifier import PINNED, PINNED_INFO, feature_weights
from ..config import RunConfig
from ..context import RunContext, feature_net_record, pinned_feature_run
from ..data import SOURCE_RECORD, require_prepared
from ..errors import StoreError
from ..pretrained import start_record
from ..progress import CancelToken, ProgressFn, Reporter
from ..stepmap import StateLayout, TrainState
from .loop import initial_train_state, run_epoch
from .schedule import epoch_kinds, epoch_lr, first_traced_epoch, traced_step_range
from .trace import TRACE_FILES, Recorder, storage_for, to_state

CHECKPOINT = "checkpoint/state.pt"
TRACE_LR_RECORD = "trace_lr.json"  # the probe of train.trace_lr (influence.tracelr), written before the traced epochs
log = logging.getLogger(__name__)


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def pin_feature_net(ctx: RunContext, run: store.Run) -> None:
    """Copy the feature net the run's metrics came from, and its record, into the run (`classifier.PINNED`,
    `PINNED_INFO`), once: from a fine-tune's source run, else from the cache."""
    if ctx.cfg.is_2d or run.exists(PINNED):
        return
    if (source := pinned_feature_run(ctx.root, ctx.cfg)) is not None:
        weights = source.verify(PINNED)
        record = feature_net_record(source)
    else:
        weights = feature_weights(ctx.cfg.eval, ctx.cfg.identity()["data"], store.cache_dir(ctx.root))
        record = weights.with_suffix(".json") if weights is not None else None
    if weights is not None and weights.exists():  # absent where the caller supplied the data and its net
        if record is not None and record.exists():
            run.write(PINNED_INFO, record.read_bytes())
        run.write(PINNED, weights.read_bytes())  # last: a run holding it holds both


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
    probe = None

    run.write_json("config.json", cfg.to_dict())
    resumed = _load_checkpoint(run, layout)
    if resumed is not None:
        flat, rng_state, history, items, start_epoch = resumed
        state = to_state(ctx, layout, flat)
        rng.set_state(rng_state)
        if run.exists(TRACE_LR_RECORD):  # probed before the kill (perhaps after the last epoch: the summary needs it)
            probe = _stored_probe(run)
    rec = Recorder(first_traced, every, cfg.train.batch_size, cfg.model.z_dim, items)

    report = Reporter("train", total, progress, cancel)
    ctx.evaluator("test")  # builds the feature classifier now, not inside the first epoch's timing
    keep = torch.ones(n, dtype=torch.bool)
    use_ema = cfg.eval.ema_generator
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        if probe is None and cfg.train.trace_lr != "schedule" and epoch >= first_traced_epoch(cfg, n):
            probe = _traced_lr_probe(ctx, run, state, epoch, rng, total - first_traced, progress, cancel)
        lr_d, lr_g = epoch_lr(cfg, epoch, n, probe.chosen if probe is not None and probe.mode == "auto" else None)
        epoch_started = time.perf_counter()
        kept = _probe_segment(probe, (lr_d, lr_g), rec, first_traced, per_epoch)
        if kept is not None:  # the probe trained this very epoch at this rate: keep it instead of training it again
            state, losses, seconds = to_state(ctx, layout, kept.trace.final_state), kept.losses, kept.seconds
            rng.set_state(kept.rng_state)
            rec.items = {name: list(getattr(kept.trace, name)) for name in TRACE_FILES}
        else:
            state, losses = run_epoch(ctx, epoch, state, rng, keep, report, rec, lr=(lr_d, lr_g))
            seconds = time.perf_counter() - epoch_started
        entry = {"epoch": epoch, "lr_d": lr_d, "lr_g": lr_g, "seconds": seconds,
                 "loss_d": _mean(l[0] for l in losses), "loss_g": _mean(l[1] for l in losses),
                 **({"probe_segment": True} if kept is not None else {})}
        if cfg.eval.metrics_every_epoch or epoch == cfg.train.epochs:
            entry.update(ctx.evaluator("test").evaluate(state.theta_d, state.eval_generator(use_ema)))
        history.append(entry)
        _write_grid(ctx, run, epoch, state.eval_generator(use_ema))
        _save_checkpoint(run, epoch, state, rng, history, rec.items)
        report(epoch * per_epoch, epoch=epoch, epoch_done=entry)

    _finish(ctx, run, state, layout, rec, first_traced, history, time.perf_counter() - started, total, storage, probe)
    return run


def _traced_lr_probe(ctx: RunContext, run: store.Run, state: TrainState, epoch: int, rng: torch.Generator,
                     traced_steps: int, progress, cancel):
    """The probe of train.trace_lr before the first traced epoch (from a copy of the run's generator, so the run's
    own stream is untouched), stored in the run; a resumed run reads it (the same state gave it: deterministic)."""
    from ..tracelr import probe_traced_lr  # the probe walks the estimator's loop, which reads this module

    if run.exists(TRACE_LR_RECORD):
        return _stored_probe(run)
    if epoch > first_traced_epoch(ctx.cfg, ctx.dataset.n_train):
        raise StoreError(f"run {run.run_id}: the traced epochs began but {TRACE_LR_RECORD} is missing; delete the "
                         "run's checkpoint/ folder to train it again")
    copy = torch.Generator()
    copy.set_state(rng.get_state())
    probe = probe_traced_lr(ctx, state, epoch, copy, traced_steps, progress, cancel)
    run.write_json(TRACE_LR_RECORD, probe.as_dict())
    return probe


def _stored_probe(run: store.Run):
    from ..tracelr import Probe  # the probe walks the estimator's loop, which reads this module

    return Probe.from_dict(run.read_json(TRACE_LR_RECORD))


def _probe_segment(probe, lr: tuple[float, float], rec: Recorder, first_traced: int, per_epoch: int):
    """The probe's segment at its pick (`tracelr.Probe.walk`) where it is the traced epoch training is about to run:
    trained from this state with a copy of this generator over every step of the epoch, at this rate; else None,
    and a segment of other steps is dropped (its states are not needed beside the epoch's)."""
    if probe is None or probe.walk is None or rec.items["batches"]:
        return None
    segment = probe.walk["segment"]
    walked = segment.trace
    # not where the trace starts inside the epoch (train.trace_steps: the segment is the epoch's first steps), nor
    # at another rate (check: the user's, above the pick)
    if walked.first_step != first_traced or walked.steps != per_epoch or not np.all(walked.lrs == np.array(lr)):
        probe.walk = None
        return None
    return segment


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


def _finish(ctx, run, state: TrainState, layout: StateLayout, rec: Recorder, first_traced, history, seconds, total,
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
        traced = [h for h in history if h["epoch"] >= first_traced_epoch(ctx.cfg, ctx.dataset.n_train)]
        probe.epoch_kept = any(h.get("probe_segment") for h in traced)
        seconds = [h.get("seconds") for h in traced]
        summary["trace_lr"] = probe.with_traced_seconds(sum(seconds) if all(t is not None for t in seconds) else None)
        run.write_json(TRACE_LR_RECORD, summary["trace_lr"])
    pin_feature_net(ctx, run)
    if ctx.dataset.notes is not None:  # own images: what was read, skipped, renamed, held out
        run.write_json(SOURCE_RECORD, ctx.dataset.source_report())
    run.write_json("summary.json", summary)
    if probe is not None and probe.walk is not None:
        from ..estimator.runner import adopt_pass  # here: the estimator reads this module

        adopted = adopt_pass(run, probe.walk, ctx)
        if adopted:  # the probe walked these very steps: its pass is the estimate's
            summary["trace_lr"]["influence"] = {"metrics": adopted, "seconds": probe.walk["seconds"]}
            run.write_json(TRACE_LR_RECORD, summary["trace_lr"])
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
