"""Estimation accuracy by leave-one-out (the paper's protocol).

For for n instances, the actual influence is the validation metric
after replaying the traced steps without that one instance (same z, same batch
order) minus the metric of the original run; compared with the estimate by Kendall
tau, Pearson r and the Jaccard index of the top-10% sets (n/20 most negative plus
n/20 most positive). A replay starts at the instance's first traced step: before it
the trajectory is the original one, stored in the trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats

from .. import conditions, store
from ..context import RunContext, load_run_config, resolve_device
from ..errors import ConfigError, StoreError
from ..estimator import EstimateOptions, estimate, result_name
from ..counterfactual import Lane
from ..counterfactual.plan import choose_plan
from ..execution import open_executor, worker_capacity
from ..metrics import check_metric, scored_with
from ..progress import BatchProgress, CancelToken, ProgressFn
from ..train import Trace, epoch_kinds
from .intervals import MIN_PAIRS
from .replays import chunks, lane_tasks, lanes_per_task, replay_conditions

SELECTIONS = ("first", "random")


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
    growth: float | None = None  # the estimate's growth factor over the validated steps
    trace_epochs: int | None = None  # validated over the last K traced epochs; None: the whole trace
    conditions: dict | None = None  # the replays' conditions against training's (influence.conditions.compare)

    def as_dict(self) -> dict:
        return {
            "metric": self.metric, "n": int(len(self.ids)), "kendall_tau": self.kendall_tau,
            "pearson_r": self.pearson_r, "jaccard_top10": self.jaccard_top10,
            "seconds_loo": self.seconds_loo, "verdict": self.verdict, "growth": self.growth,
            "trace_epochs": self.trace_epochs, "conditions": self.conditions,
        }


def jaccard_top(estimated: np.ndarray, actual: np.ndarray, k: int) -> float:
    """Jaccard index of {k most negative} + {k most positive} between two score vectors."""
    def extremes(v: np.ndarray) -> set[int]:
        order = np.argsort(v, kind="stable")
        return set(order[:k].tolist()) | set(order[-k:].tolist())

    a, b = extremes(estimated), extremes(actual)
    return len(a & b) / len(a | b)


def jaccard_k(n: int) -> int:
    """How many instances from each end the "top 10%" of n leave-one-out replays takes (the paper's n/20)."""
    return max(1, n // 20)


JACCARD_ROUGH_K = 5  # below this many from each end, one instance more or less swings the index a lot


def accuracy_numbers(estimated: np.ndarray, actual: np.ndarray) -> tuple[float, float, float]:
    tau = float(stats.kendalltau(estimated, actual).statistic)
    r = float(stats.pearsonr(estimated, actual).statistic)
    return tau, r, jaccard_top(estimated, actual, jaccard_k(len(actual)))


def check_n(n: int, n_traced: int) -> None:
    if not MIN_PAIRS <= n <= n_traced:
        raise ConfigError(f"n must lie in {MIN_PAIRS}..{n_traced} (instances in the traced steps; below "
                          f"{MIN_PAIRS} even a perfect ranking is consistent with no correlation)")


def select_ids(n_train: int, n: int, selection: str, seed: int, traced: np.ndarray) -> np.ndarray:
    if selection not in SELECTIONS:
        raise ConfigError(f"selection must be one of {SELECTIONS}")
    candidates = np.flatnonzero(traced)
    check_n(n, len(candidates))
    if selection == "first":
        return candidates[:n]
    return np.sort(np.random.default_rng(seed).choice(candidates, n, replace=False))


class Replayed(NamedTuple):
    """What `leave_one_out` measured: the changes (metrics x ids), the replays' seconds and their condition
    warnings."""
    actual: np.ndarray
    seconds: float
    warnings: list[str]


def leave_one_out(
    run: store.Run,
    metrics: list[str],
    ids: np.ndarray,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    workers: int | None = None,
    first_step: int = 0,
    lanes: int | None = None,
) -> Replayed:
    """Actual influence (k metrics x n ids) by replays, the seconds all of them took, and the warnings of the
    conditions they ran under (each as it was replayed).

    Each id is a lane of `counterfactual.replay_lanes`: its change is its replay minus lane 0 (nothing
    removed) of the same replay; it starts at the instance's first traced step at or after `first_step`
    (the traced steps before `first_step` are taken as they were recorded). `lanes`: the lane plan
    (None: chosen by `counterfactual.plan.choose_plan`; 1: one after another).

    Chunks of lanes are tasks of the execution layer (`influence.execution`): here, on a local Dask
    cluster when the cores hold more than one worker at this process's torch thread count (`workers`
    overrides how many), or on the scheduler of GAN_INFLUENCE_CLUSTER. They run at this process's thread
    count: results are bit-identical to replays here. Finished replays are kept on disk, per instance, with
    their time and every metric they were scored on (`metrics.scored_with`): a rerun, more instances or a metric
    scored already replay only what is missing, and the seconds returned are what the ids' replays cost, not
    ~0 s.
    """
    cfg = load_run_config(run)
    trace = Trace.load(run)
    ctx = RunContext.create(cfg, run.root)
    name = _replays_name(first_step)
    with run.exclusive(f"validate-{name}", progress, cancel):  # one writer of these replays at a time, whoever asks
        return _leave_one_out(run, ctx, trace, metrics, ids, f"validate/_partial/{name}.json", progress, cancel,
                              workers, first_step, lanes)


def _leave_one_out(run: store.Run, ctx: RunContext, trace: Trace, metrics: list[str], ids: np.ndarray, rel: str,
                   progress: ProgressFn | None, cancel: CancelToken | None, workers: int | None,
                   first_step: int, lanes: int | None) -> Replayed:
    # Replays are kept per instance, scored also on the metrics that cost nothing beside those asked, so a later
    # validation of those, or of more instances, replays only what no earlier one did.
    scored = scored_with(metrics, ctx.cfg.is_2d)
    done = _load_replays(run, rel)
    pending = [j for j in dict.fromkeys(ids.tolist()) if not all(m in done.get(str(j), {}).get("changes", {})
                                                                  for m in metrics)]
    if pending:
        lane_list = [Lane.of([j]) for j in pending]
        plan = choose_plan(ctx, trace, len(lane_list), lanes)
        groups = chunks(trace, lane_list, ctx.dataset.n_train, plan, first_step,
                        lanes_per_task(ctx, trace, plan, len(lane_list), worker_capacity(workers)))
        tasks = lane_tasks(run, ctx, trace, lane_list, (("valid", scored),), plan, groups, first_step)
        tally = BatchProgress("leave-one-out", [len(g) for g in groups], progress, cancel, len(ids) - len(pending))
        with open_executor(len(groups), workers) as executor, \
                contextlib.closing(executor.run(tasks, tally.part(0), cancel)) as replays:
            for group, result in replays:
                # kept with each replay (a later reading of it says so), as they were where it ran: maybe a worker
                ran = replay_conditions(ctx, trace, [result.conditions])["warnings"]
                for i, change in zip(group, result.changes):
                    earlier = done.get(str(pending[i]), {})  # an earlier replay's metrics stay, and its warnings
                    done[str(pending[i])] = {
                        "changes": {**earlier.get("changes", {}), **change["valid"]},
                        "seconds": result.seconds / len(group),
                        "warnings": list(dict.fromkeys(earlier.get("warnings", []) + ran))}
                run.write_json(rel, {"version": REPLAYS_VERSION, "replays": done})  # kept after every task
                tally.finished(groups.index(group))
    run.remove_stale_temp_files(["validate/_partial"], [rel.rsplit("/", 1)[1]])  # a killed writer's (this lock's)
    actual = np.array([[done[str(j)]["changes"][m] for j in ids.tolist()] for m in metrics])
    unique = [done[str(j)] for j in dict.fromkeys(ids.tolist())]
    # replays kept before their conditions were recorded: this process's
    here = replay_conditions(ctx, trace)["warnings"]
    said = (replay.get("warnings", here) for replay in unique)
    return Replayed(actual, sum(replay["seconds"] for replay in unique),
                    list(dict.fromkeys(w for ws in said for w in ws)))


REPLAYS_VERSION = 2  # {id: {"changes": {metric: change}, "seconds": its replay's share of its task, "warnings": [...]}}


def _replays_name(first_step: int) -> str:
    return f"loo-replays{f'-from{first_step}' if first_step else ''}"


def _load_replays(run: store.Run, rel: str) -> dict:
    """The finished replays of one first step ({} when none, or the file is damaged: they are replayed again)."""
    if not run.exists(rel):
        return {}
    try:
        data = run.read_json(rel)
    except StoreError:
        return {}
    return data["replays"] if data.get("version") == REPLAYS_VERSION else {}


def validate(
    run: store.Run,
    metrics: list[str],
    n: int = 200,
    selection: str = "first",
    seed: int = 0,
    options: EstimateOptions = EstimateOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    trace_epochs: int | None = None,
    lanes: int | None = None,
) -> dict[str, Accuracy]:
    """Estimated vs actual influence for n instances, per metric; stored under validate/.

    `trace_epochs` = K validates over the last K traced epochs only (the paper's accuracy
    against the number of traced epochs): the estimate runs over those steps, and each
    replay starts at the instance's first step among them. The run must trace at least K.
    """
    cfg = load_run_config(run)
    for m in metrics:
        check_metric(m, cfg.is_2d)
    trace = Trace.load(run)
    first_step = 0
    if trace_epochs is not None:
        first_step = first_step_of_last_epochs(run, trace_epochs, trace)
        if options.last_steps is not None:
            raise ConfigError("give either trace_epochs or last_steps, not both")
        options = dataclasses.replace(options, last_steps=trace.steps - first_step)
    check_n(n, trace.traced_count(first_step))  # before the estimate, which may be a whole pass
    results = estimate(run, metrics, options, progress=progress, cancel=cancel)
    traced = trace.step_of_instance(len(results[metrics[0]].scores), first_step) >= 0
    ids = select_ids(len(traced), n, selection, seed, traced)
    actual, seconds, warnings = leave_one_out(run, metrics, ids, progress, cancel, first_step=first_step, lanes=lanes)
    replays = conditions.compare(trace.conditions, resolve_device(cfg.train.device), cfg.train.dtype,
                                 "these replays run")
    replays["warnings"] = warnings  # as each replay was made
    out = {}
    for i, m in enumerate(metrics):
        est = results[m].scores[ids]
        tau, r, jac = accuracy_numbers(est, actual[i])
        acc = Accuracy(m, ids, est, actual[i], tau, r, jac, seconds, results[m].verdict, results[m].meta["growth"],
                       trace_epochs, replays)
        epochs = f"-ep{trace_epochs}" if trace_epochs is not None else ""
        # named by the estimate's options (all of them), so results with other options do not overwrite it
        key = f"{m}-n{n}-{selection}-s{seed}-{result_name(options, trace.final.shape[0])}{epochs}"
        with run.exclusive(f"validate-{key}"):  # one writer; a killed one's temp files go
            run.remove_stale_temp_files([f"validate/{key}"])
            run.write_npy(f"validate/{key}/pairs.npy", np.stack([ids, est, actual[i]]).T)
            run.write_json(f"validate/{key}/result.json", acc.as_dict())
        out[m] = acc
    return out


def first_step_of_last_epochs(run: store.Run, k: int, trace: Trace | None = None) -> int:
    """Index within the trace of the first step of the run's last k epochs; ConfigError unless all are traced."""
    if k < 1:
        raise ConfigError("trace_epochs must be at least 1")
    trace = trace or Trace.load(run)
    per_epoch = len(epoch_kinds(load_run_config(run), run.read_json("summary.json")["n_train"]))
    first = trace.steps - k * per_epoch  # the trace ends with training
    if first < 0:
        raise ConfigError(f"the run traced {trace.steps} steps, fewer than its last {k} epochs; train it with "
                          f"train.trace_epochs of at least {k}")
    return first


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
