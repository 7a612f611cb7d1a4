"""The stored influence pass: cached results, a resumable backward pass with progress and cancel."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch

from .. import conditions, store
from ..context import RunContext, load_run_config
from ..errors import ConfigError, StoreError
from ..honesty import metric_report
from ..metrics import METRIC_LABELS, check_metric
from ..objectives import Objective, metric_objectives
from ..progress import CancelToken, ProgressFn, Reporter
from ..train import Trace
from .alternatives import baseline_advance
from .backward import PassState, pass_norms, start_pass, walk_back
from .options import EstimateOptions, result_name
from .results import (CHOSEN, RESULTS_LOCK, TABLE_FILES, TABLE_META, TABLE_VERSION, InfluenceResult, load_result,
                      save_result, write_table)

log = logging.getLogger(__name__)
CHECK_WINDOW_SHARE = 8
ADOPTED = ("the trace-lr probe's walk over these traced steps (train.trace_lr), whose segment training kept as its "
           "traced epoch: the same pass as an estimate's")


def estimate(
    run: store.Run,
    metrics: list[str],
    options: EstimateOptions = EstimateOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, InfluenceResult]:
    """Influence of every training instance on each metric, from cache where possible."""
    cfg = load_run_config(run)
    if not metrics:
        raise ConfigError("name at least one metric")
    for m in metrics:
        check_metric(m, cfg.is_2d)
    trace = Trace.load(run)
    n_params = trace.final.shape[0]
    check_options(options, trace)
    metrics = list(dict.fromkeys(metrics))
    results = {m: r for m in metrics if (r := load_result(run, m, options, n_params)) is not None}
    if len(results) < len(metrics) or _unfinished(run, metrics, options, n_params):
        # One pass per run and options at a time (any caller: jobs, sweeps, the CLI, the app); whoever waited
        # reads what the other one computed.
        with run.exclusive(f"influence-{options.key('', n_params)}", progress, cancel) as waited:
            results = _compute(run, cfg, trace, metrics, options, progress, cancel, None if waited else results)
    return {m: results[m] for m in metrics}


def _compute(run: store.Run, cfg, trace: Trace, metrics: list[str], options: EstimateOptions,
             progress: ProgressFn | None, cancel: CancelToken | None,
             known: dict[str, InfluenceResult] | None) -> dict[str, InfluenceResult]:
    """The pass for the metrics not stored yet (`known`: those read before the lock; None: read them again,
    another process held it), then what a finished pass leaves: no partial, a result in use, its table (also when a kill
    came between the results and these)."""
    n_params = trace.final.shape[0]
    results = dict(known) if known is not None else {
        m: r for m in metrics if (r := load_result(run, m, options, n_params)) is not None}
    todo = [m for m in metrics if m not in results]
    ctx = None
    if todo:
        ctx = RunContext.create(cfg, run.root, dtype=options.resolved_dtype(n_params))
        stacked = _interrupted_pass(run, todo, options, n_params) or todo
        objectives = metric_objectives(stacked, cfg.is_2d)
        state, norms, seconds, first, window = stored_pass(ctx, run, trace, objectives, options, progress, cancel)
        unsaved = [m for m in stacked if m in todo or load_result(run, m, options, n_params) is None]
        saved = _save_pass(run, ctx, trace, stacked, options, state, norms, seconds, first, window, {}, unsaved)
        results.update({m: r for m, r in saved.items() if m in metrics})
        metrics = list(dict.fromkeys(metrics + stacked))
    return _finish_pass(run, cfg, metrics, options, n_params, bool(todo), ctx, results)


def _interrupted_pass(run: store.Run, todo: list[str], options: EstimateOptions, n_params: int) -> list[str] | None:
    """The metrics, in their stacked order, of a pass of these options whose checkpoint is left and which covers
    `todo`: one killed before all its results were stored. Resuming it stacked as it was gives the rest bit for bit
    as the uninterrupted pass would have (a pass over fewer rows rounds otherwise, by about 1e-16 relative)."""
    return next((stacked for stacked in _partials(run, options, n_params).values() if set(todo) <= set(stacked)), None)


def _save_pass(run: store.Run, ctx: RunContext, trace: Trace, metrics: list[str], options: EstimateOptions,
               state: PassState, norms: np.ndarray, seconds: float, first: int, window: torch.Tensor,
               provenance: dict[str, dict], save: list[str] | None = None) -> dict[str, InfluenceResult]:
    """Each metric's result of a finished pass over its stacked objectives (in `metrics` order; only those in `save`
    if given); `provenance`: where a metric's pass came from when not from `estimate` (`adopt_pass`; `save_result`)."""
    n_params = trace.final.shape[0]
    step_of = trace.step_of_instance(ctx.dataset.n_train, first)
    recompute = pass_conditions(run, trace, ctx)
    return {metric: save_result(run, metric, options, n_params, state.scores[i].numpy(), norms[:, i], step_of,
                                state.values[i], seconds / len(metrics), first, trace, window[i].numpy(),
                                window_first(trace.steps, first), recompute, provenance.get(metric))
            for i, metric in enumerate(metrics) if save is None or metric in save}


def _finish_pass(run: store.Run, cfg, metrics: list[str], options: EstimateOptions, n_params: int, computed: bool,
                 ctx: RunContext | None, results: dict[str, InfluenceResult]) -> dict[str, InfluenceResult]:
    """What a finished pass leaves besides its results (`computed`: this call stored some)."""
    for folder in _partials(run, options, n_params):  # only now: a kill before this resumes from it
        drop_partial(run, folder)
    with run.exclusive(RESULTS_LOCK):
        if not run.exists(CHOSEN) and options.method == "exact":
            # the first estimate computed is the one in use until the user picks another (a baseline never is)
            run.write_json(CHOSEN, {"name": result_name(options, n_params)})
        if computed or _unfinished(run, metrics, options, n_params):
            ctx = ctx or RunContext.create(cfg, run.root)
            metric_report(run, ctx)  # the table's flags carry each metric's verdict
            write_table(run, ctx.dataset)
        # temp files of writes a kill interrupted: these locks exclude every other writer of these files
        run.remove_stale_temp_files([f"influence/{options.key(m, n_params)}" for m in metrics])
        run.remove_stale_temp_files(["influence"], [CHOSEN.rsplit("/", 1)[-1], *TABLE_FILES])
    return results


def adopt_pass(run: store.Run, walk: dict, train_ctx: RunContext) -> list[str]:
    """A finished run's influence on the metrics its trace-lr probe walked (`tracelr.Probe.walk`), stored as the
    default estimate's results, when the run's trace is the walked segment (the same batches and, bit for bit, the
    same final state: training kept it as its traced epoch) and no such result exists: the very pass `estimate`
    would run, over the same states in the same dtype. `train_ctx`: the training's context. Returns the metrics
    stored (none where the trace differs)."""
    trace, walked = Trace.load(run), walk["segment"].trace
    if (trace.steps != walked.steps or trace.first_step != walked.first_step
            or not np.array_equal(trace.batches, walked.batches)
            or not np.array_equal(trace.final_state, walked.final_state)):
        return []
    cfg, options, n_params = train_ctx.cfg, EstimateOptions(), trace.final.shape[0]
    metrics = walk["metrics"]
    with run.exclusive(f"influence-{options.key('', n_params)}"):
        if any(load_result(run, m, options, n_params) is not None for m in metrics):
            return []  # an estimate was quicker: its results stay
        dtype = getattr(torch, options.resolved_dtype(n_params))
        ctx = train_ctx if dtype == train_ctx.dtype else train_ctx.with_dtype(dtype)  # as the probe walked
        state = walk["state"]
        norms = pass_norms(training_context(ctx), trace, state).numpy()
        provenance = {m: {"source": ADOPTED + (f"; {walk['notes'][m]}" if m in walk["notes"] else ""),
                          **({"probe_replay": walk["replays"][m]} if m in walk["replays"] else {})} for m in metrics}
        results = _save_pass(run, ctx, trace, metrics, options, state, norms, walk["seconds"], 0, walk["window"],
                             provenance)
        _finish_pass(run, cfg, metrics, options, n_params, True, ctx, results)
    return metrics


def _partials(run: store.Run, options: EstimateOptions, n_params: int) -> dict[str, list[str]]:
    """The metric passes' checkpoints with these options that hold files (not those of sample objectives), each
    with its pass's metrics in their stacked order (the folder's name)."""
    base, suffix = run.path("influence/_partial"), f"-{options.key('', n_params)}"
    if not base.is_dir():
        return {}
    folders = {f"influence/_partial/{d.name}": d.name[: -len(suffix)].split("+") for d in sorted(base.iterdir())
               if d.name.endswith(suffix) and d.is_dir() and any(p.is_file() for p in d.iterdir())}
    return {folder: stacked for folder, stacked in folders.items() if set(stacked) <= set(METRIC_LABELS)}


def _unfinished(run: store.Run, metrics: list[str], options: EstimateOptions, n_params: int) -> bool:
    """A pass of these options left a checkpoint, no result in use, or a table that does not show its
    results although they are in use (its process died after its results), or a table of an older version: cheap
    checks, no result read."""
    if _partials(run, options, n_params) or (options.method == "exact" and not run.exists(CHOSEN)):
        return True
    name = result_name(options, n_params)
    try:
        chosen = run.read_json(CHOSEN)["name"]
        shown = run.read_json(TABLE_META) if run.exists(TABLE_META) else {}
    except (StoreError, KeyError, TypeError):
        return True
    return chosen == name and (shown.get("result") != name or not set(metrics) <= set(shown.get("metrics") or {})
                               or shown.get("version") != TABLE_VERSION)


def check_options(options: EstimateOptions, trace: Trace) -> None:
    """ConfigError for options that cannot apply to this trace, before anything is computed."""
    options.identity(trace.final.shape[0])
    if options.last_steps is not None and not 1 <= options.last_steps <= trace.steps:
        raise ConfigError(f"last_steps must lie in 1..{trace.steps} (the traced steps)")


def pass_conditions(run: store.Run, trace: Trace, ctx: RunContext) -> dict:
    """The conditions of the pass's recompute of checkpoint segments against training's (`conditions.report`);
    a trace that stores every state recomputes nothing, so nothing there can differ."""
    train_ctx = training_context(ctx)
    out = conditions.report(run.read_json("trace/meta.json"), train_ctx.device, train_ctx.dtype,
                            "the influence pass recomputes the trace's checkpoint segments")
    return {**out, "recomputes": not trace.stores_every_step,
            "warnings": out["warnings"] if not trace.stores_every_step else []}


def training_context(ctx: RunContext) -> RunContext:
    """ctx in the run's training dtype: states are recomputed (checkpoint mode) bit for bit, then cast."""
    if str(ctx.dtype) == f"torch.{ctx.cfg.train.dtype}":
        return ctx
    return ctx.with_dtype(getattr(torch, ctx.cfg.train.dtype))


def window_first(steps: int, first: int = 0) -> int:
    """The first step of the quick check's window over traced steps first..steps (`window_scores.npy` starts there)."""
    return steps - check_window(steps - first)


def check_window(steps: int) -> int:
    """How many of the last traced steps the quick spot check replays (`validation.spotcheck`): an eighth of them,
    so that its replays cost about one influence pass."""
    return max(1, math.ceil(steps / CHECK_WINDOW_SHARE))


def stored_pass(ctx: RunContext, run: store.Run, trace: Trace, objectives: list[Objective], options: EstimateOptions,
                progress: ProgressFn | None = None, cancel: CancelToken | None = None
                ) -> tuple[PassState, np.ndarray, float, int, torch.Tensor]:
    """The backward pass for the stacked objectives, checkpointed in the run every `options.checkpoint_every`
    steps and resumed from there: (final pass state, norms (steps + 1, rows, 3), seconds, first traced step,
    the scores of the last `check_window` steps alone (rows, n_train)).
    The caller drops the checkpoint (`drop_partial`) once it has stored what it needs."""
    started = time.perf_counter()
    n_params = trace.final.shape[0]
    first = trace.steps - (options.last_steps or trace.steps)
    train_ctx = training_context(ctx)
    names = [o.name for o in objectives]
    partial = partial_folder(objectives, options, n_params)
    loaded = _load_partial(run, partial, names, options, n_params)
    if loaded is None:
        state, elapsed, window = start_pass(ctx, trace, objectives), 0.0, None
    else:
        state, elapsed, window = loaded
        state.adjoint = [a.to(ctx.device, ctx.dtype) for a in state.adjoint]
    window_start = window_first(trace.steps, first)
    report = Reporter("influence", trace.steps - first, progress, cancel)
    frozen = options.optimizer_state == "frozen"
    advance = None if options.method == "exact" else baseline_advance(ctx, trace, objectives, options.method, frozen)
    for t in walk_back(ctx, trace, state, first, frozen, options.damping, train_ctx, advance):
        if t == window_start:
            window = state.scores.clone()
        done = trace.steps - t
        if options.checkpoint_every and done % options.checkpoint_every == 0 and t > first:
            _save_partial(run, partial, names, options, n_params, state, elapsed + time.perf_counter() - started, window)
        report(done)
    seconds = elapsed + time.perf_counter() - started
    norms = pass_norms(train_ctx, trace, state).numpy()
    return state, norms, seconds, first, window


def partial_folder(objectives: list[Objective], options: EstimateOptions, n_params: int) -> str:
    """The pass's checkpoint folder: named by its objectives and options."""
    return f"influence/_partial/{'+'.join(o.name for o in objectives)}-{options.key('', n_params)}"


def drop_partial(run: store.Run, partial: str) -> None:
    """Forget a pass's checkpoint folder (and any temp file of a checkpoint write that a kill interrupted)."""
    run.forget(partial + "/")
    folder = run.path(partial)
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f.is_file():
            f.unlink(missing_ok=True)


def _save_partial(run, partial, names, options, n_params, state: PassState, elapsed: float,
                  window: torch.Tensor | None) -> None:
    run.write_state_dict(f"{partial}/state.pt", {
        **{f"adjoint_{i}": a.cpu() for i, a in enumerate(state.adjoint)}, "scores": state.scores,
        **({"window_scores": window} if window is not None else {}),
        "block_norms": state.block_norms,
        "values": torch.tensor(state.values, dtype=torch.float64), "t_next": torch.tensor(state.t_next),
        "elapsed": torch.tensor(elapsed),
    })
    run.write_json(f"{partial}/meta.json", {"metrics": names, "options": options.identity(n_params),
                                            "blocks": len(state.adjoint), "scales_found": state.scales_found})


def _load_partial(run, partial, names, options, n_params) -> tuple[PassState, float, torch.Tensor | None] | None:
    if not run.exists(f"{partial}/state.pt"):
        return None
    try:
        meta = run.read_json(f"{partial}/meta.json")
        s = run.read_state_dict(f"{partial}/state.pt")
        if meta.get("metrics") != names or meta.get("options") != options.identity(n_params):
            return None
        adjoint = [s[f"adjoint_{i}"] for i in range(meta["blocks"])]
        state = PassState(adjoint, s["scores"], s["block_norms"], s["values"].tolist(), int(s["t_next"]),
                          meta["scales_found"])
    except (StoreError, KeyError) as e:
        log.warning("ignoring the influence pass checkpoint, the pass starts again: %s", e)
        return None  # damaged or older partial state: start the pass again
    return state, float(s["elapsed"]), s.get("window_scores")
