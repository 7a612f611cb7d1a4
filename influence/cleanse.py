"""Counterfactual data cleansing: retrain without a removal set and compare on the test split.

Default: replay the traced epochs without the removed instances (same starting
parameters, z and batch order; the rest of each batch kept). Option: retrain from
scratch with the same seed. Each attempt is stored under cleanse/<key>/ with its
weights, test metrics and a sample grid from the same z as the original's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import time
from typing import Iterable, Iterator

import numpy as np
import torch

from . import store
from .context import RunContext, load_run_config
from .errors import ConfigError
from .estimator import cached_results, chosen_name
from .execution import Executor, Tasks, TaskEnv, open_executor, worker_cached
from .execution.payload import RunPayload, run_payload, trace_segment
from .honesty import scope_text
from .progress import CancelToken, ProgressFn
from .train import Trace, image_grid_png, replay, train_without

MODES = ("replay", "scratch")


def check_removal_ids(ids: Iterable, n_train: int) -> np.ndarray:
    """Validated, sorted int64 ids; ConfigError naming the first problem otherwise."""
    values = list(ids)
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"removal id '{v}' is not an integer")
        out.append(int(v))
    arr = np.asarray(out, dtype=np.int64)
    bad = arr[(arr < 0) | (arr >= n_train)]
    if bad.size:
        raise ConfigError(f"removal id {bad[0]} is outside the training set (ids 0..{n_train - 1})")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ConfigError(f"removal id {uniq[counts > 1][0]} is listed more than once")
    if arr.size >= n_train:
        raise ConfigError("the removal set would remove every training instance")
    return uniq


def removal_key(ids: np.ndarray, mode: str) -> str:
    return f"{mode}-{len(ids)}-" + hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:12]


@dataclasses.dataclass
class CleanseResult:
    key: str
    removed: np.ndarray
    mode: str
    before: dict[str, float]
    after: dict[str, float]
    predicted: dict[str, float]  # sum of estimated influences of the removed set (valid-split metric)
    seconds: float
    predicted_from: str | None = None  # the named influence result the prediction comes from
    predicted_scope: str = ""  # what the prediction covers (the traced steps only)

    def as_dict(self) -> dict:
        return {
            "key": self.key, "mode": self.mode, "n_removed": int(len(self.removed)),
            "before": self.before, "after": self.after,
            "change": {k: self.after[k] - self.before[k] for k in self.after if k in self.before},
            "predicted_change": self.predicted, "seconds": self.seconds,
            "predicted_from": self.predicted_from, "predicted_scope": self.predicted_scope,
        }


def cleanse(
    run: store.Run,
    removal_ids: Iterable[int],
    mode: str = "replay",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    ctx: RunContext | None = None,
) -> CleanseResult:
    if mode not in MODES:
        raise ConfigError(f"cleansing mode must be one of {MODES}")
    cfg = load_run_config(run)
    trace = Trace.load(run)
    ctx = ctx or RunContext.create(cfg, run.root)
    ids = check_removal_ids(removal_ids, ctx.dataset.n_train)
    key = removal_key(ids, mode)
    if run.exists(f"cleanse/{key}/result.json"):
        return _load(run, key, ids)
    with run.exclusive(f"cleanse-{key}", progress, cancel):  # one computation of an attempt, whoever asks
        if run.exists(f"cleanse/{key}/result.json"):
            return _load(run, key, ids)
        started = time.perf_counter()
        theta_d, theta_g, before, after = counterfactual(ctx, trace, ids, mode, progress, cancel)
        return _store_attempt(ctx, run, key, ids, mode, theta_d, theta_g, before, after, time.perf_counter() - started)


def cleanse_many(run: store.Run, removal_sets: list[Iterable[int]], mode: str = "replay", executor: Executor | None = None,
                 progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                 ctx: RunContext | None = None) -> Iterator[tuple[int, CleanseResult]]:
    """Several removal sets of one run, as tasks of the execution layer: (index, result) as each one finishes."""
    for _, i, result in cleanse_runs([(run, removal_sets)], mode, executor, progress, cancel, [ctx]):
        yield i, result


def cleanse_runs(jobs: list[tuple[store.Run, list[Iterable[int]]]], mode: str = "replay",
                 executor: Executor | None = None, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None,
                 contexts: list[RunContext | None] | None = None) -> Iterator[tuple[int, int, CleanseResult]]:
    """Removal sets of several runs (a sweep's seeds) as one batch of tasks: (run index, set index, result) as each
    one finishes.

    Attempts already in the store are read back first. A worker gets a run's whole trace and training
    set once, and the removal ids with each task; the results are stored here.
    """
    if mode not in MODES:
        raise ConfigError(f"cleansing mode must be one of {MODES}")
    runs, todo = [], []
    for r, (run, removal_sets) in enumerate(jobs):
        ctx = (contexts or [None] * len(jobs))[r] or RunContext.create(load_run_config(run), run.root)
        sets = [check_removal_ids(ids, ctx.dataset.n_train) for ids in removal_sets]
        runs.append((run, Trace.load(run), ctx, sets))
        for i, ids in enumerate(sets):
            if run.exists(f"cleanse/{removal_key(ids, mode)}/result.json"):
                yield r, i, _load(run, removal_key(ids, mode), ids)
            else:
                todo.append((r, i))

    held: dict = {}  # item -> its attempt's lock, from the start of its task here until it is stored

    def here(item, env: TaskEnv):
        run, trace, ctx, sets = runs[item[0]]
        env = _tagged(env, item[0])
        held[item] = stack.enter_context(contextlib.ExitStack())
        held[item].enter_context(_attempt_lock(run, sets[item[1]], mode, env.progress, env.cancel))
        if run.exists(f"cleanse/{removal_key(sets[item[1]], mode)}/result.json"):
            return None  # stored by the process this one waited for
        return _timed_counterfactual(ctx, trace, sets[item[1]], mode, env)

    def payload(r: int) -> RunPayload:
        run, trace, ctx, _ = runs[r]
        return run_payload(ctx, run, trace_segment(trace, 0), ("test",), all_rows=True)

    tasks = Tasks(todo, here=here, remote=functools.partial(_cleanse_remote, mode),
                  ship=lambda item: (item[0], runs[item[0]][3][item[1]]), payload=payload,
                  payload_key=lambda item: item[0])
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor(len(todo)))
        for (r, i), out in executor.run(tasks, progress, cancel):
            run, _, ctx, sets = runs[r]
            key = removal_key(sets[i], mode)
            # computed here: its lock is held since; computed on a worker: one writer stores it
            with held.pop((r, i), None) or _attempt_lock(run, sets[i], mode, _tagged(TaskEnv(progress), r).progress,
                                                         cancel):
                if out is None or run.exists(f"cleanse/{key}/result.json"):
                    result = _load(run, key, sets[i])
                else:
                    theta_d, theta_g, before, after, seconds = out
                    result = _store_attempt(ctx, run, key, sets[i], mode, theta_d.to(ctx.device),
                                            theta_g.to(ctx.device), before, after, seconds)
            yield r, i, result


def _attempt_lock(run: store.Run, ids: np.ndarray, mode: str, progress: ProgressFn | None, cancel: CancelToken | None):
    return run.exclusive(f"cleanse-{removal_key(ids, mode)}", progress, cancel)


def _timed_counterfactual(ctx: RunContext, trace: Trace, ids: np.ndarray, mode: str, env: TaskEnv):
    started = time.perf_counter()
    theta_d, theta_g, before, after = counterfactual(ctx, trace, ids, mode, env.progress, env.cancel)
    return theta_d.cpu(), theta_g.cpu(), before, after, time.perf_counter() - started


def _cleanse_remote(mode: str, payload: RunPayload, shipped: tuple[int, np.ndarray], env: TaskEnv):
    ctx = worker_cached(payload.key, payload.context)
    return _timed_counterfactual(ctx, payload.segment, shipped[1], mode, _tagged(env, shipped[0]))


def _tagged(env: TaskEnv, run_index: int) -> TaskEnv:
    """The task's progress reports say which of the batch's runs they come from (info "run")."""
    if env.progress is None:
        return env
    forward = env.progress
    return dataclasses.replace(env, progress=lambda p: forward(dataclasses.replace(p, info={**p.info, "run": run_index})))


def counterfactual(ctx: RunContext, trace: Trace, ids: np.ndarray, mode: str, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None):
    """(theta_D, theta_G, test metrics before, after) of the run without `ids`; the store is not touched."""
    if mode == "replay":
        theta_d, theta_g = replay(ctx, trace, ids, progress=progress, cancel=cancel)
    else:
        theta_d, theta_g = train_without(ctx, ids, progress=progress, cancel=cancel)
    before_d, before_g = (torch.from_numpy(a).to(ctx.device, ctx.dtype) for a in trace.final_eval())
    test = ctx.evaluator("test")
    return theta_d, theta_g, test.evaluate(before_d, before_g), test.evaluate(theta_d, theta_g)


def _store_attempt(ctx: RunContext, run: store.Run, key: str, ids: np.ndarray, mode: str, theta_d, theta_g,
                   before: dict, after: dict, seconds: float) -> CleanseResult:
    cfg = ctx.cfg
    name = chosen_name(run)
    results = cached_results(run, name)
    predicted = {m: float(r.scores[ids].sum()) for m, r in results.items()}
    result = CleanseResult(key, ids, mode, before, after, predicted, seconds, name,
                           predicted_scope(run, cfg, results, mode))
    _save(ctx, run, result, theta_d, theta_g)
    return result


def _save(ctx: RunContext, run: store.Run, result: CleanseResult, theta_d, theta_g) -> None:
    base = f"cleanse/{result.key}"
    run.remove_stale_temp_files([base])  # of a writer killed before: the caller holds the attempt's lock
    run.write_npy(f"{base}/removed.npy", result.removed)
    run.write_npy(f"{base}/weights.npy", torch.cat([theta_d, theta_g]).detach().cpu().numpy())
    with torch.no_grad():
        samples = ctx.gan.generate(theta_g, ctx.latents["grid"]).float().cpu()
    if ctx.cfg.is_2d:
        run.write_npy(f"{base}/samples.npy", samples.numpy())
    else:
        run.write(f"{base}/grid.png", image_grid_png(samples))
    run.write_json(f"{base}/result.json", result.as_dict())  # last: marks the attempt complete


def _load(run: store.Run, key: str, ids: np.ndarray) -> CleanseResult:
    d = run.read_json(f"cleanse/{key}/result.json")
    return CleanseResult(key, ids, d["mode"], d["before"], d["after"], d["predicted_change"], d["seconds"],
                         d.get("predicted_from"), d.get("predicted_scope", ""))


def predicted_scope(run: store.Run, cfg, results: dict, mode: str) -> str:
    """What the predicted change covers: the estimate's traced steps, never the epochs before them."""
    if not results:
        return ""
    steps = run.read_json("summary.json")["steps"]
    traced = next(iter(results.values())).meta["traced_steps"]
    scope = scope_text(traced, steps, cfg.train.epochs)
    if mode == "scratch":
        return (f"the predicted change covers only the traced steps ({scope}); this retrain from scratch also "
                "changes every earlier epoch, which the estimate does not cover")
    return f"the predicted change covers the replayed traced steps ({scope})"


def attempts(run: store.Run) -> list[dict]:
    """All finished cleansing attempts of a run, oldest first."""
    base = run.path("cleanse")
    if not base.exists():
        return []
    out = []
    for d in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime):
        if (d / "result.json").exists():
            out.append(run.read_json(f"cleanse/{d.name}/result.json"))
    return out
