"""Counterfactual data cleansing: retrain without a removal set and compare on the test split.

Default: replay the traced epochs without the removed instances (same starting
parameters, z and batch order; the rest of each batch kept). Option: retrain from
scratch with the same seed. Each attempt is stored under cleanse/<key>/ with its
weights, test metrics and a sample grid from the same z as the original's. The
metrics are also taken on the validation split with the estimate's z, where the
predicted change and the actual one are the same quantity.
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
from .counterfactual import Lane, LanePlan, replay_lanes
from .counterfactual.plan import choose_plan, reproduces_training
from .errors import ConfigError
from .estimator import cached_results, chosen_name
from .execution import Executor, Tasks, TaskEnv, open_executor, worker_cached
from .execution.payload import RunPayload, run_payload, trace_segment
from .honesty import scope_text
from .progress import CancelToken, ProgressFn
from .train import Trace, chosen_traced_lr, image_grid_png, train_without

MODES = ("replay", "scratch")
SPLITS = ("test", "valid")  # the attempt's result; what its prediction is checked on


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
    # metrics on the validation split the estimate is taken on (its z): {"before": ..., "after": ...};
    # None for attempts stored before they were measured
    validation: dict | None = None

    def as_dict(self) -> dict:
        out = {
            "key": self.key, "mode": self.mode, "n_removed": int(len(self.removed)),
            "before": self.before, "after": self.after,
            "change": _change(self.before, self.after),
            "predicted_change": self.predicted, "seconds": self.seconds,
            "predicted_from": self.predicted_from, "predicted_scope": self.predicted_scope,
        }
        if self.validation is not None:
            out["validation"] = {**self.validation,
                                 "change": _change(self.validation["before"], self.validation["after"])}
        return out


def _change(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in after if k in before}


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
    with _attempt_locks(run, [ids], mode, progress, cancel):  # one computation of an attempt, whoever asks
        if run.exists(f"cleanse/{key}/result.json"):
            return _load(run, key, ids)
        plan = choose_plan(ctx, trace, 1) if mode == "replay" else LanePlan("sequential", 1, "")
        (theta_d, theta_g, measured, seconds), = _timed_counterfactuals(ctx, trace, [ids], mode, plan,
                                                                      TaskEnv(progress, cancel))
        return _store_attempt(ctx, run, key, ids, mode, theta_d.to(ctx.device), theta_g.to(ctx.device), measured,
                              seconds)


def cleanse_runs(jobs: list[tuple[store.Run, list[Iterable[int]]]], mode: str = "replay",
                 executor: Executor | None = None, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None,
                 contexts: list[RunContext | None] | None = None,
                 lanes: int | None = None) -> Iterator[tuple[int, int, CleanseResult]]:
    """Removal sets of several runs (a sweep's seeds) as one batch of tasks: (run index, set index, result) as each
    one finishes.

    Attempts already in the store are read back first. In replay mode a run's removal sets are lanes of
    `counterfactual.replay_lanes` (`lanes`: the lane plan, None = automatic): "before" is lane 0 of the same
    replay, so a before/after difference has no rounding offset from another code path or thread count. A
    worker gets a run's whole trace and training set once, and the removal ids with each task; the results are
    stored here.
    """
    if mode not in MODES:
        raise ConfigError(f"cleansing mode must be one of {MODES}")
    runs, todo = [], []
    for r, (run, removal_sets) in enumerate(jobs):
        ctx = (contexts or [None] * len(jobs))[r] or RunContext.create(load_run_config(run), run.root)
        sets = [check_removal_ids(ids, ctx.dataset.n_train) for ids in removal_sets]
        trace = Trace.load(run)
        waiting = []
        for i, ids in enumerate(sets):
            if run.exists(f"cleanse/{removal_key(ids, mode)}/result.json"):
                yield r, i, _load(run, removal_key(ids, mode), ids)
            else:
                waiting.append(i)
        plan = choose_plan(ctx, trace, len(waiting), lanes) if mode == "replay" else LanePlan("sequential", 1, "")
        runs.append((run, trace, ctx, sets, plan))
        size = plan.lanes if plan.mode == "batched" else 1
        todo += [(r, tuple(waiting[i:i + size])) for i in range(0, len(waiting), size)]

    held: dict = {}  # item -> its attempt's lock, from the start of its task here until it is stored

    def here(item, env: TaskEnv):
        run, trace, ctx, sets, plan = runs[item[0]]
        env = _tagged(env, item[0])
        held[item] = stack.enter_context(contextlib.ExitStack())  # closed once the results are stored
        held[item].enter_context(_attempt_locks(run, [sets[i] for i in item[1]], mode, env.progress, env.cancel))
        # sets stored by a process this one waited for are not computed again
        missing = [i for i in item[1] if not run.exists(f"cleanse/{removal_key(sets[i], mode)}/result.json")]
        computed = dict(zip(missing, _timed_counterfactuals(ctx, trace, [sets[i] for i in missing], mode, plan, env)
                            if missing else []))
        return [computed.get(i) for i in item[1]]

    def payload(r: int) -> RunPayload:
        run, trace, ctx, _, _ = runs[r]
        return run_payload(ctx, run, trace_segment(trace, 0), SPLITS, all_rows=True)

    tasks = Tasks(todo, here=here, remote=functools.partial(_cleanse_remote, mode),
                  ship=lambda item: (item[0], [runs[item[0]][3][i] for i in item[1]], runs[item[0]][4]),
                  payload=payload, payload_key=lambda item: item[0])
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(open_executor(len(todo)))
        for (r, indices), attempts in executor.run(tasks, progress, cancel):
            run, _, ctx, sets, _ = runs[r]
            stored = []
            # computed here: their locks are held since; computed on a worker: one writer stores each
            with held.pop((r, indices), None) or _attempt_locks(run, [sets[i] for i in indices], mode,
                                                                 _tagged(TaskEnv(progress), r).progress, cancel):
                for i, out in zip(indices, attempts):
                    key = removal_key(sets[i], mode)
                    if out is None or run.exists(f"cleanse/{key}/result.json"):
                        stored.append((i, _load(run, key, sets[i])))
                    else:
                        theta_d, theta_g, measured, seconds = out
                        stored.append((i, _store_attempt(ctx, run, key, sets[i], mode, theta_d.to(ctx.device),
                                                         theta_g.to(ctx.device), measured, seconds)))
            for i, result in stored:
                yield r, i, result


@contextlib.contextmanager
def _attempt_locks(run: store.Run, sets: list[np.ndarray], mode: str, progress: ProgressFn | None,
                   cancel: CancelToken | None):
    """The locks of these attempts, taken in the order of their keys (two processes never wait on each other)."""
    with contextlib.ExitStack() as locks:
        for key in sorted({removal_key(ids, mode) for ids in sets}):
            locks.enter_context(run.exclusive(f"cleanse-{key}", progress, cancel))
        yield


def _evaluate(ctx: RunContext, theta_d, theta_g) -> dict[str, dict[str, float]]:
    """Metrics per split: the test split's are the attempt's result, the validation split's (the estimate's z)
    what its prediction is checked against."""
    return {split: ctx.evaluator(split).evaluate(theta_d, theta_g) for split in SPLITS}


def _timed_counterfactuals(ctx: RunContext, trace: Trace, sets: list[np.ndarray], mode: str, plan: LanePlan,
                           env: TaskEnv) -> list[tuple]:
    """(theta_D, theta_G, {split: (metrics before, after)}, seconds) per removal set, on the CPU."""
    started = time.perf_counter()
    if mode == "scratch":
        out = [retrained(ctx, trace, ids, env.progress, env.cancel) for ids in sets]
    else:
        def measure(state):
            theta_d, theta_g = state.theta_d.detach(), state.eval_generator(trace.ema_eval).detach()
            return theta_d.cpu(), theta_g.cpu(), _evaluate(ctx, theta_d, theta_g)

        lanes_out = replay_lanes(ctx, trace, [Lane.of(ids) for ids in sets], measure, plan, 0, env.progress,
                                 env.cancel, baseline_from_trace=reproduces_training(ctx, trace))
        out = [(v[0], v[1], {s: (b[2][s], v[2][s]) for s in SPLITS})
               for v, b in zip(lanes_out.values, lanes_out.baselines)]
    seconds = (time.perf_counter() - started) / max(len(sets), 1)
    return [(theta_d.cpu(), theta_g.cpu(), measured, seconds) for theta_d, theta_g, measured in out]


def _cleanse_remote(mode: str, payload: RunPayload, shipped: tuple[int, list[np.ndarray], LanePlan], env: TaskEnv):
    ctx = worker_cached(payload.key, payload.context)
    return _timed_counterfactuals(ctx, payload.segment, shipped[1], mode, shipped[2], _tagged(env, shipped[0]))


def _tagged(env: TaskEnv, run_index: int) -> TaskEnv:
    """The task's progress reports say which of the batch's runs they come from (info "run")."""
    if env.progress is None:
        return env
    forward = env.progress
    return dataclasses.replace(env, progress=lambda p: forward(dataclasses.replace(p, info={**p.info, "run": run_index})))


def retrained(ctx: RunContext, trace: Trace, ids: np.ndarray, progress: ProgressFn | None = None,
              cancel: CancelToken | None = None):
    """(theta_D, theta_G, {split: (metrics before, after)}) of the run retrained from scratch without `ids`;
    "before" is the trained run (a retraining is no replay: there is no lane 0 to compare with)."""
    # a run whose probe chose its traced rate (train.trace_lr=auto) is retrained at that rate, as it was trained
    theta_d, theta_g = train_without(ctx, ids, progress, cancel, chosen_traced_lr(ctx.cfg, trace))
    before_d, before_g = (torch.from_numpy(a).to(ctx.device, ctx.dtype) for a in trace.final_eval())
    before, after = _evaluate(ctx, before_d, before_g), _evaluate(ctx, theta_d, theta_g)
    return theta_d, theta_g, {s: (before[s], after[s]) for s in SPLITS}


def _store_attempt(ctx: RunContext, run: store.Run, key: str, ids: np.ndarray, mode: str, theta_d, theta_g,
                   measured: dict[str, tuple[dict, dict]], seconds: float) -> CleanseResult:
    cfg = ctx.cfg
    name = chosen_name(run)
    results = cached_results(run, name)
    predicted = {m: float(r.scores[ids].sum()) for m, r in results.items()}
    (before, after), (valid_before, valid_after) = measured["test"], measured["valid"]
    result = CleanseResult(key, ids, mode, before, after, predicted, seconds, name,
                           predicted_scope(run, cfg, results, mode), {"before": valid_before, "after": valid_after})
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
    validation = d.get("validation")
    return CleanseResult(key, ids, d["mode"], d["before"], d["after"], d["predicted_change"], d["seconds"],
                         d.get("predicted_from"), d.get("predicted_scope", ""),
                         validation and {"before": validation["before"], "after": validation["after"]})


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
