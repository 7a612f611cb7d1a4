"""The paper's two experiments: estimation accuracy (leave-one-out) and data cleansing (sweep).

Estimation accuracy: for n instances, the actual influence is the validation metric
after replaying the traced steps without that one instance (same z, same batch
order) minus the metric of the original run; compared with the estimate by Kendall
tau, Pearson r and the Jaccard index of the top-10% sets (n/20 most negative plus
n/20 most positive). A replay starts at the instance's first traced step: before it
the trajectory is the original one, stored in the trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import store
from .baselines import methods_for, ranking
from .cleanse import cleanse
from .config import RunConfig
from .context import RunContext, load_run_config
from .errors import ConfigError, StoreError
from .estimate import EstimateOptions, estimate
from .metrics import check_metric, harmful_sign
from .progress import CancelToken, Progress, ProgressFn, Reporter
from .train import Trace, replay, train

log = logging.getLogger(__name__)
SELECTIONS = ("first", "random")
PARTIAL_EVERY = 10


@dataclass
class Accuracy:
    metric: str
    ids: np.ndarray
    estimated: np.ndarray
    actual: np.ndarray
    kendall_tau: float
    pearson_r: float
    jaccard_top10: float
    seconds_loo: float | None  # None: replays cached by a version that did not record their time
    verdict: str

    def as_dict(self) -> dict:
        return {
            "metric": self.metric, "n": int(len(self.ids)), "kendall_tau": self.kendall_tau,
            "pearson_r": self.pearson_r, "jaccard_top10": self.jaccard_top10,
            "seconds_loo": self.seconds_loo, "verdict": self.verdict,
        }


def jaccard_top(estimated: np.ndarray, actual: np.ndarray, k: int) -> float:
    """Jaccard index of {k most negative} + {k most positive} between two score vectors."""
    def extremes(v: np.ndarray) -> set[int]:
        order = np.argsort(v, kind="stable")
        return set(order[:k].tolist()) | set(order[-k:].tolist())

    a, b = extremes(estimated), extremes(actual)
    return len(a & b) / len(a | b)


def accuracy_numbers(estimated: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    tau = float(stats.kendalltau(estimated, actual).statistic)
    r = float(stats.pearsonr(estimated, actual).statistic)
    return tau, r, jaccard_top(estimated, actual, max(1, len(actual) // 20))


def select_ids(n_train: int, n: int, selection: str, seed: int, traced: np.ndarray) -> np.ndarray:
    if selection not in SELECTIONS:
        raise ConfigError(f"selection must be one of {SELECTIONS}")
    candidates = np.flatnonzero(traced)
    if n < 3 or n > len(candidates):
        raise ConfigError(f"n must lie in 3..{len(candidates)} (instances in the traced steps)")
    if selection == "first":
        return candidates[:n]
    return np.sort(np.random.default_rng(seed).choice(candidates, n, replace=False))


def leave_one_out(
    run: store.Run,
    metrics: list[str],
    ids: np.ndarray,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, float | None]:
    """Actual influence (k metrics x n ids) by replays, and the seconds all of them took.

    Replays run in `workers` processes when there are enough of them (default: as many as
    the CPU cores hold at this process's torch thread count, so 1 unless threads are
    fewer than cores). Each worker uses this process's thread count: results are
    bit-identical to replays here (float32 reductions depend on the thread count).
    Finished replays are kept on disk with their accumulated time, so a rerun that finds
    them reports what they cost, not ~0 s (None where an older partial file did not
    record it).
    """
    cfg = load_run_config(run)
    trace = Trace.load(run)
    ctx = RunContext.create(cfg, run.root)
    key = "loo-" + hashlib.sha256(json.dumps([metrics, ids.tolist()]).encode()).hexdigest()[:12]
    done, earlier_seconds = _load_partial(run, key)
    valid = ctx.evaluator("valid")
    final_d, final_g = trace.split(torch.from_numpy(np.array(trace.final)).to(ctx.device, ctx.dtype))
    base = valid.evaluate(final_d, final_g, tuple(metrics))
    report = Reporter("leave-one-out", len(ids), progress, cancel)
    started = time.perf_counter()

    def seconds() -> float | None:
        return None if earlier_seconds is None else earlier_seconds + time.perf_counter() - started

    pending = [j for j in dict.fromkeys(ids.tolist()) if str(j) not in done]
    finished = len(ids) - len(pending)
    report(finished)
    workers = workers or (os.cpu_count() or 1) // torch.get_num_threads()
    workers = max(1, min(workers, len(pending) // MIN_REPLAYS_PER_WORKER))
    with contextlib.closing(_replays(run, ctx, trace, tuple(metrics), pending, workers, cancel)) as replays:
        for j, after in replays:
            done[str(j)] = [after[m] - base[m] for m in metrics]
            if len(done) % PARTIAL_EVERY == 0:
                run.write_json(f"validate/_partial/{key}.json", {"changes": done, "seconds": seconds()})
            finished += 1
            report(finished)
    total = seconds()
    run.write_json(f"validate/_partial/{key}.json", {"changes": done, "seconds": total})
    actual = np.array([done[str(j)] for j in ids.tolist()]).T
    return actual, total


def _replays(run: store.Run, ctx: RunContext, trace: Trace, metrics: tuple[str, ...], ids: list[int], workers: int,
             cancel: CancelToken | None):
    """(id, validation metrics after replaying without it), in order of completion."""
    left = list(ids)
    if workers > 1:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                                   initargs=(str(run.root), run.run_id, torch.get_num_threads()))
        futures = {pool.submit(_worker_replay, j, metrics): j for j in ids}
        try:
            for f in as_completed(futures):
                j = futures[f]
                yield j, f.result()
                left.remove(j)
        except BrokenProcessPool:
            # e.g. a script without `if __name__ == "__main__":` guard, which spawned workers re-import
            log.warning("leave-one-out worker processes failed to start; replaying here instead")
        finally:  # cancelled or failed: drop what has not started, wait for the replays under way
            pool.shutdown(wait=True, cancel_futures=True)
    replayer = _Replayer(ctx, trace) if left else None
    for j in left:
        yield j, replayer(j, metrics, cancel)


class _Replayer:
    def __init__(self, ctx: RunContext, trace: Trace):
        self.ctx, self.trace, self.valid = ctx, trace, ctx.evaluator("valid")
        self.first = trace.step_of_instance(ctx.dataset.n_train)

    def __call__(self, j: int, metrics: tuple[str, ...], cancel: CancelToken | None = None) -> dict[str, float]:
        theta_d, theta_g = replay(self.ctx, self.trace, [j], start=int(self.first[j]), cancel=cancel)
        return self.valid.evaluate(theta_d, theta_g, metrics)


MIN_REPLAYS_PER_WORKER = 4  # below this a worker's start-up (imports, data, classifier) is not worth it
_worker_replayer: _Replayer | None = None  # in a worker process: its own copy of the run


def _worker_start(root: str, run_id: str, threads: int) -> None:
    global _worker_replayer
    torch.set_num_threads(threads)
    run = store.open_run(Path(root), run_id)
    _worker_replayer = _Replayer(RunContext.create(load_run_config(run), run.root), Trace.load(run))


def _worker_replay(j: int, metrics: tuple[str, ...]) -> dict[str, float]:
    return _worker_replayer(j, metrics)


def _load_partial(run: store.Run, key: str) -> tuple[dict, float | None]:
    """(finished replays, seconds they took); files from before the time was recorded give None."""
    rel = f"validate/_partial/{key}.json"
    if not run.exists(rel):
        return {}, 0.0
    try:
        data = run.read_json(rel)
    except StoreError:
        return {}, 0.0
    if "changes" in data:
        return data["changes"], data["seconds"]
    return data, (0.0 if not data else None)


def validate(
    run: store.Run,
    metrics: list[str],
    n: int = 200,
    selection: str = "first",
    seed: int = 0,
    options: EstimateOptions = EstimateOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Accuracy]:
    """Estimated vs actual influence for n instances, per metric; stored under validate/."""
    cfg = load_run_config(run)
    for m in metrics:
        check_metric(m, cfg.is_2d)
    results = estimate(run, metrics, options, progress=progress, cancel=cancel)
    trace = Trace.load(run)
    traced = trace.step_of_instance(len(results[metrics[0]].scores)) >= 0
    ids = select_ids(len(traced), n, selection, seed, traced)
    actual, seconds = leave_one_out(run, metrics, ids, progress, cancel)
    out = {}
    for i, m in enumerate(metrics):
        est = results[m].scores[ids]
        tau, r, jac = accuracy_numbers(est, actual[i])
        acc = Accuracy(m, ids, est, actual[i], tau, r, jac, seconds, results[m].verdict)
        key = f"{m}-n{n}-{selection}-s{seed}-{results[m].meta['options']['dtype']}"
        run.write_npy(f"validate/{key}/pairs.npy", np.stack([ids, est, actual[i]]).T)
        run.write_json(f"validate/{key}/result.json", acc.as_dict())
        out[m] = acc
    return out


def stored_validations(run: store.Run) -> list[dict]:
    base = run.path("validate")
    if not base.exists():
        return []
    out = []
    for d in sorted(base.iterdir()):
        if d.name.startswith("_") or not (d / "result.json").exists():
            continue
        entry = run.read_json(f"validate/{d.name}/result.json")
        pairs = run.read_npy(f"validate/{d.name}/pairs.npy")
        entry.update(key=d.name, ids=pairs[:, 0].astype(int), estimated=pairs[:, 1], actual=pairs[:, 2])
        out.append(entry)
    return out


# ---------------------------------------------------------------- data-cleansing sweep
def sweep(
    configs: list[RunConfig],
    root,
    methods: list[str],
    counts: list[int],
    metric: str = "fid",
    options: EstimateOptions = EstimateOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> pd.DataFrame:
    """For each seed's run, method and removal count: test-metric change of cleansing vs no removal.

    Returns the per-(method, count) table with mean, std, one-sample t-test p-value over seeds.
    """
    root = store.store_root(root)
    run_ids = [c.run_id for c in configs]
    key = hashlib.sha256(json.dumps([run_ids, methods, counts, metric]).encode()).hexdigest()[:12]
    base = root / "_sweeps" / key
    store.write_json(base / "spec.json", {"run_ids": run_ids, "seeds": [c.seed for c in configs],
                                          "presets": sorted({c.preset for c in configs}), "methods": methods,
                                          "counts": counts, "metric": metric})
    rows = []
    report = Reporter("sweep", len(configs) * len(methods) * len(counts), progress, cancel)
    done = 0
    for cfg in configs:
        # The seed's own stages (training, influence, replays) report too, labelled with the sweep's place.
        def inner(p: Progress, seed: int = cfg.seed) -> None:
            if progress is not None:
                progress(dataclasses.replace(p, info={**p.info, "sweep": f"seed {seed}, {done} of {report.total} cleanses done"}))

        run = train(cfg, root, inner, cancel)
        ctx = RunContext.create(cfg, root)
        allowed = methods_for(cfg.is_2d)
        for method in methods:
            if method not in allowed:
                raise ConfigError(f"unknown selection method '{method}'; choose from {', '.join(allowed)}")
            order = ranking(run, ctx, method, seed=cfg.seed, options=options, progress=inner, cancel=cancel)
            for count in counts:
                if not 1 <= count < ctx.dataset.n_train:
                    raise ConfigError(f"removal count {count} must lie in 1..{ctx.dataset.n_train - 1}")
                res = cleanse(run, order[:count], ctx=ctx, progress=inner, cancel=cancel)
                rows.append({"seed": cfg.seed, "run_id": run.run_id, "method": method, "count": count,
                             "before": res.before[metric], "after": res.after[metric],
                             "change": res.after[metric] - res.before[metric]})
                done += 1
                # Written after every cleanse: an interrupted sweep still shows what it measured.
                store.write_bytes(base / "per_run.csv", pd.DataFrame(rows).to_csv(index=False).encode())
                report(done)
    table = summarize_sweep(pd.DataFrame(rows), metric)
    store.write_bytes(base / "table.csv", table.to_csv(index=False).encode())
    return table


def summarize_sweep(per_run: pd.DataFrame, metric: str) -> pd.DataFrame:
    out = []
    for (method, count), g in per_run.groupby(["method", "count"], sort=False):
        changes = g["change"].to_numpy()
        p = float(stats.ttest_1samp(changes, 0.0).pvalue) if len(changes) > 1 and changes.std() > 0 else float("nan")
        improvement = changes * harmful_sign(metric)  # > 0 = metric improved
        out.append({"method": method, "count": int(count), "seeds": len(changes),
                    f"mean_change_{metric}": float(changes.mean()), f"std_change_{metric}": float(changes.std(ddof=1)) if len(changes) > 1 else float("nan"),
                    "improved_in": int((improvement > 0).sum()), "p_value": p})
    return pd.DataFrame(out)


def stored_sweeps(root) -> list[dict]:
    """Sweeps in the store, oldest first, finished or not: spec, per-run rows and their summary table."""
    base = store.store_root(root) / "_sweeps"
    out = []
    for folder in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime) if base.is_dir() else []:
        try:
            spec = store.read_json(folder / "spec.json")
            per_run = pd.read_csv(folder / "per_run.csv") if (folder / "per_run.csv").exists() else pd.DataFrame()
        except (StoreError, OSError, ValueError):
            continue  # a sweep from before specs were written, or one being replaced right now
        planned = len(spec["seeds"]) * len(spec["methods"]) * len(spec["counts"])
        out.append({"key": folder.name, "spec": spec, "per_run": per_run, "planned": planned,
                    "table": summarize_sweep(per_run, spec["metric"]) if len(per_run) else pd.DataFrame()})
    return out
