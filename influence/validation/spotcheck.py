"""The spot check behind every verdict: a few replays that measure how far an estimate can be acted on.

Counterfactual replays (`counterfactual.replay_lanes`), lanes measured against lane 0 of the same
replay, on the evaluation the estimate targets (validation split, its fixed z):
- groups: random removal sets, plus the most harmful and the most helpful set by the estimate:
  predicted (the sum of their scores) against actual, Pearson r and Spearman; and how the most
  harmful set moved the metric against what was predicted;
- singles: random instances, Kendall tau (what leave-one-out of random images measures); and apart from them
  the instances with the largest |score|, whether each moved the predicted way. (Checks stored before 2026-12-05
  took tau over a mix of both, which its cross pairs lift: 0.57 for estimates that are noise within each half.)

Levels (`CHECK_LEVELS`):
- full: the whole trace, 16 random groups of 5%, the harmful / helpful 5%, 16 random singles and the 8
  largest |scores|. The random groups give a small LDS (Spearman of summed estimates against actual changes),
  the measure of group validation.
- quick: the random groups (12) and singles (8 random, the 4 largest |scores|) over the last eighth of the
  traced steps (`estimator.check_window`), compared with the scores those steps alone give (window_scores.npy),
  and the helpful sets; each metric's most harmful 5% over the whole trace, against the whole estimate: the
  window cannot see what the earlier steps do to a large removal (docs/trust.md).
- auto (the default): full where the lanes run batched (small nets, or a GPU: the whole check is a few
  batched replays), quick otherwise. The check records the level it ran and why.
Stored per named result: influence/_checks/<result name>-<level>.json; `trust.verdict` reads it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection

import numpy as np
from scipy import stats

from .. import conditions, store
from ..context import RunContext, load_run_config
from ..counterfactual import Lane
from ..counterfactual.plan import choose_plan
from ..errors import ConfigError
from ..estimator import EstimateOptions, estimate, result_name
from ..execution import open_executor
from ..models import has_kinks
from ..progress import BatchProgress, CancelToken, ProgressFn
from ..train import Trace
from .replays import chunks, lane_tasks, lanes_per_task, merged_record, task_weights

log = logging.getLogger(__name__)
CHECK_LEVELS = ("none", "auto", "quick", "full")
SETUP = {"quick": {"groups": 12, "fraction": 0.05, "singles": 8, "top_singles": 4},
         "full": {"groups": 16, "fraction": 0.05, "singles": 16, "top_singles": 8}}


def auto_level(ctx: RunContext, trace: Trace, lanes: int | None = None) -> tuple[str, str]:
    """(level, why) for --check auto: full where the check's lanes run batched, quick where one after another."""
    setup = SETUP["full"]
    plan = choose_plan(ctx, trace, setup["groups"] + 2 + setup["singles"] + setup["top_singles"], lanes)
    if plan.mode == "batched":
        return "full", f"auto: full, the lanes run batched ({plan.reason})"
    return "quick", f"auto: quick, the lanes run one after another ({plan.reason})"


def check_path(name: str, level: str) -> str:
    return f"influence/_checks/{name}-{level}.json"


def stored_check(run: store.Run, name: str) -> dict | None:
    """The most thorough check stored for the named result (full before quick), or None."""
    for level in ("full", "quick"):
        if run.exists(check_path(name, level)):
            return run.read_json(check_path(name, level))
    return None


def spot_check(run: store.Run, metrics: list[str], options: EstimateOptions = EstimateOptions(), level: str = "quick",
               progress: ProgressFn | None = None, cancel: CancelToken | None = None, lanes: int | None = None,
               seed: int = 0) -> dict | None:
    """Check the named result of `options` on `metrics` (computing the estimate if needed); stored and returned.

    None for level "none", and for a quick check of an estimate from before spot checks (it has no window scores).
    Reads the stored check when there is one.
    """
    if level not in CHECK_LEVELS:
        raise ConfigError(f"check must be one of {', '.join(CHECK_LEVELS)}")
    if level == "none":
        return None
    results = estimate(run, metrics, options, progress, cancel)
    trace = Trace.load(run)
    name = result_name(options, trace.final.shape[0])
    reason = f"asked for {level}"
    if level == "auto":
        stored = stored_check(run, name)
        if stored is not None and all(m in stored["metrics"] for m in metrics):
            return stored
        level, reason = auto_level(RunContext.create(load_run_config(run), run.root), trace, lanes)
    rel = check_path(name, level)
    with run.exclusive(f"check-{name}-{level}", progress, cancel):  # one check of a result at a time, whoever asks
        run.remove_stale_temp_files(["influence/_checks"], [rel.rsplit("/", 1)[1]])  # a killed writer's (this lock's)
        stored = run.read_json(rel) if run.exists(rel) else None
        missing = [m for m in metrics if stored is None or m not in stored["metrics"]]
        if not missing:
            return stored
        # only the metrics the stored check lacks are checked; the stored ones keep their replays
        check = _check(run, trace, {m: results[m] for m in missing}, missing, options, name, level, reason, progress,
                       cancel, lanes, seed)
        if check is None:
            return stored
        if stored is not None:
            check = _merged(stored, check)
        run.write_json(rel, check)
        return check


def _merged(old: dict, new: dict) -> dict:
    """A stored check and a check of more metrics of the same result and level, as one: each metric with the
    replays it was checked with, the costs added."""
    return {**new, "metrics": old["metrics"] + new["metrics"], "per_metric": {**old["per_metric"], **new["per_metric"]},
            **{k: old[k] + new[k] for k in ("seconds", "pass_seconds")}, **merged_record(old, new),
            "probe_lanes": sorted({*old.get("probe_lanes", ()), *new["probe_lanes"]})}


def _check(run: store.Run, trace: Trace, results: dict, metrics: list[str], options: EstimateOptions, name: str,
           level: str, reason: str, progress: ProgressFn | None, cancel: CancelToken | None, lanes: int | None,
           seed: int) -> dict | None:
    if level == "quick" and any("check_window_first_step" not in r.meta for r in results.values()):
        log.warning("this estimate was computed before spot checks existed: it stays 'not checked' (a full check, "
                    "or group validation, can test it)")
        return None
    started = time.perf_counter()
    ctx = RunContext.create(load_run_config(run), run.root)
    whole = trace.steps - next(iter(results.values())).meta["traced_steps"]  # the first step the estimate walked
    first = max(next(iter(results.values())).meta["check_window_first_step"] if level == "quick" else 0, whole)
    n_params = trace.final.shape[0]
    scores = {m: r.scores if level == "full" else run.read_npy(f"influence/{options.key(m, n_params)}/window_scores.npy")
              for m, r in results.items()}
    n_train, setup = ctx.dataset.n_train, SETUP[level]
    # A quick check judges the set a curator removes over the whole trace (a whole replay each; the helpful sets
    # stay in the window): on quick seed 1 the window saw IS's most harmful 5% move as predicted, while over all
    # steps removing it lowered IS (docs/trust.md).
    harmful = {f"{harmful_side(r.meta['harmful_sign'])}:{m}" for m, r in results.items()}
    whole_trace_sets = harmful if level == "quick" else set()
    lanes_list, kinds = check_lanes(trace, n_train, first, scores, setup, seed, skip_sets=whole_trace_sets)
    predicted = {m: [scores[m][lane.removed].sum() for lane in lanes_list] for m in metrics}
    starts = [first] * len(lanes_list)
    if whole_trace_sets:
        every = {f"{side}:{m}" for m in results for side in ("low", "high")}
        sets, set_kinds = extreme_sets(trace, n_train, whole, {m: r.scores for m, r in results.items()},
                                       setup["fraction"], skip=every - whole_trace_sets)
        lanes_list, kinds = lanes_list + sets, kinds + set_kinds
        for m in metrics:
            predicted[m] += [results[m].scores[lane.removed].sum() for lane in sets]
        starts += [whole] * len(sets)
    probed = probe_measured(results, lanes_list, kinds, starts, whole)
    actual: list = [probed.get(i) for i in range(len(lanes_list))]
    replay_seconds, from_trace = 0.0, True
    # A set drawn twice is replayed once: where the window holds few instances, 5% of it is one image, so the
    # random groups and the extreme sets repeat the singles.
    first_of: dict = {}
    twin = [first_of.setdefault((s0, lane.digest, lane.weight), i)  # the first lane with the same set and start
            for i, (s0, lane) in enumerate(zip(starts, lanes_list))]
    parts = []  # one replay per start: the window's lanes, the whole trace's sets (but those the probe measured)
    for start in sorted(set(starts)):
        part = [i for i, s0 in enumerate(starts) if s0 == start and i not in probed and twin[i] == i]
        if not part:
            continue
        plan = choose_plan(ctx, trace, len(part), lanes)
        groups = chunks(trace, [lanes_list[i] for i in part], n_train, plan, start,
                        lanes_per_task(ctx, trace, plan, len(part)))
        parts.append((start, part, plan, groups))
    # one bar over every task, each weighing the steps its lanes replay and their evaluations (its replay's total)
    splits = (("valid", tuple(metrics)),)
    weights: list[int] = []
    for start, part, plan, groups in parts:
        weights += task_weights(ctx, trace, [lanes_list[i] for i in part], groups, splits, plan, start, bool(weights))
    tally = BatchProgress("spot check", weights, progress, cancel)
    first_task = 0
    for start, part, plan, groups in parts:
        part_lanes = [lanes_list[i] for i in part]
        tasks = lane_tasks(run, ctx, trace, part_lanes, splits, plan, groups, start)
        with open_executor(len(groups), 1) as executor, \
                contextlib.closing(executor.run(tasks, tally.part(first_task), cancel)) as out:
            for group, result in out:
                for i, change in zip(group, result.changes):
                    actual[part[i]] = change["valid"]
                replay_seconds += result.seconds
                from_trace &= result.baseline_from_trace
                tally.finished(first_task + groups.index(group))
        first_task += len(groups)
    actual = [a if a is not None else actual[twin[i]] for i, a in enumerate(actual)]
    return {
        "level": level, "level_reason": reason, "result": name, "metrics": metrics, "window_first_step": first,
        "traced_steps": trace.steps, "window_steps": trace.steps - first, "lanes": plan.as_dict(),
        "baseline": "recorded trajectory" if from_trace else "replayed", "seconds": time.perf_counter() - started,
        "replay_seconds": replay_seconds, "pass_seconds": sum(r.meta["seconds"] for r in results.values()),
        "conditions": conditions.compare(trace.conditions, ctx.device, ctx.dtype, "this check runs"),
        "sets_over_whole_trace": True,  # each metric's harmful set, also in a quick check
        "probe_lanes": sorted(m for change in probed.values() for m in change),
        # trust.verdict caps a quick check of such a run (docs/trust.md: mnist-adam with ReLU, float32 and float64)
        "kinked": has_kinks(ctx.cfg.model),
        "per_metric": {m: agreement(m, kinds, lanes_list, np.array(predicted[m]), [a.get(m, np.nan) for a in actual],
                                    results[m].meta["harmful_sign"], starts)
                       for m in metrics},
    }


def probe_measured(results: dict, lanes: list[Lane], kinds: list[str], starts: list[int],
                   whole: int) -> dict[int, dict[str, float]]:
    """{lane index: {metric: actual change}} of the lanes the trace-lr probe already replayed: an adopted result's
    most harmful set over the whole trace (`estimator.adopt_pass`: the trace is the probe's segment), the very set
    (its ids' digest) the probe's replay left out, measured on the same split and z against lane 0 of that replay."""
    out = {}
    for m, r in results.items():
        replay, kind = r.meta.get("probe_replay"), f"{harmful_side(r.meta['harmful_sign'])}:{m}"
        if replay is None or kind not in kinds:
            continue
        i = kinds.index(kind)
        if starts[i] == whole and lanes[i].digest == replay["ids_sha256"]:
            out[i] = {m: replay["actual"]}
    return out


def check_lanes(trace: Trace, n_train: int, first: int, scores: dict[str, np.ndarray], setup: dict, seed: int,
                skip_sets: Collection[str] = ()) -> tuple[list[Lane], list[str]]:
    """The check's lanes and their kinds: random groups; per metric its harmful and helpful sets ("high:<m>",
    "low:<m>": the largest and smallest scores; those in `skip_sets` left out); random singles ("single"); the
    instances with the largest |score| of the first metric ("top-single"). Also the trace-lr probe's check
    (`tracelr`)."""
    seen = np.flatnonzero(trace.step_of_instance(n_train, first) >= 0)
    if len(seen) < 4:
        raise ConfigError(f"only {len(seen)} instances lie in the checked steps: too few to check")
    rng = np.random.default_rng(seed)
    size = max(1, round(setup["fraction"] * len(seen)))
    lanes, kinds = [], []
    for _ in range(setup["groups"]):
        lanes.append(Lane.of(rng.choice(seen, size, replace=False)))
        kinds.append("random")
    sets, set_kinds = extreme_sets(trace, n_train, first, scores, setup["fraction"], skip_sets)
    lanes, kinds = lanes + sets, kinds + set_kinds
    first_scores = next(iter(scores.values()))
    largest = seen[np.argsort(-np.abs(first_scores[seen]), kind="stable")][: setup.get("top_singles", 0)]
    rest = np.setdiff1d(seen, largest)  # random singles apart from the largest: their tau is leave-one-out's
    for kind, ids in (("single", rng.choice(rest, min(setup["singles"], len(rest)), replace=False)),
                      ("top-single", largest)):
        for j in ids:
            lanes.append(Lane.of([j]))
            kinds.append(kind)
    return lanes, kinds


def extreme_sets(trace: Trace, n_train: int, first: int, scores: dict[str, np.ndarray], fraction: float,
                 skip: Collection[str] = ()) -> tuple[list[Lane], list[str]]:
    """Per metric the `fraction` of the instances in the steps from `first` with the smallest and the largest
    scores ("low:<m>", "high:<m>"): each metric's most harmful and most helpful sets (but the kinds in `skip`)."""
    seen = np.flatnonzero(trace.step_of_instance(n_train, first) >= 0)
    size = max(1, round(fraction * len(seen)))
    lanes, kinds = [], []
    for m, metric_scores in scores.items():
        order = seen[np.argsort(metric_scores[seen], kind="stable")]  # most negative first
        for kind, ids in (("low", order[:size]), ("high", order[-size:])):
            if f"{kind}:{m}" in skip:
                continue
            lanes.append(Lane.of(ids))
            kinds.append(f"{kind}:{m}")
    return lanes, kinds


def harmful_side(sign: int) -> str:
    """The kind of set the estimate calls most harmful: "high" scores where harmful is positive, else "low"."""
    return "high" if sign > 0 else "low"


def agreement(metric: str, kinds: list[str], lanes: list[Lane], predicted: np.ndarray, actual: list[float],
              sign: int, starts: list[int] | None = None) -> dict:
    """Predicted (`predicted`: each lane's summed scores for this metric) against actual changes per kind of
    lane, for one metric (sign: its harmful sign), on the lanes that judge it: the random groups, its own
    harmful and helpful sets, the random singles, the singles with the largest |score|. `starts`: each lane's
    first replayed step, kept with the lane."""
    keep = [i for i, k in enumerate(kinds) if ":" not in k or k.endswith(f":{metric}")]
    kinds, lanes, actual = [kinds[i].split(":")[0] for i in keep], [lanes[i] for i in keep], [actual[i] for i in keep]
    firsts = [{"first_step": int(starts[i])} for i in keep] if starts is not None else [{}] * len(keep)
    predicted = np.asarray(predicted, dtype=np.float64)[keep]
    actual_arr = np.array(actual, dtype=np.float64)
    is_single, is_top = (np.array([k == kind for k in kinds]) for kind in ("single", "top-single"))
    is_group = ~is_single & ~is_top
    harmful = kinds.index(harmful_side(sign))
    is_random = np.array([k == "random" for k in kinds])
    out = {"groups": _pairs(predicted[is_group], actual_arr[is_group]),
           "random_groups": _pairs(predicted[is_random], actual_arr[is_random]),
           "singles": _pairs(predicted[is_single], actual_arr[is_single]),
           "top_singles": _pairs(predicted[is_top], actual_arr[is_top]),
           "harmful_set": {"size": int(len(lanes[harmful].removed)), "predicted": float(predicted[harmful]),
                           "actual": float(actual_arr[harmful])},
           "lanes": [{"kind": k, "size": int(len(lane.removed)), "predicted": float(p), "actual": float(a), **f}
                     for k, lane, p, a, f in zip(kinds, lanes, predicted, actual_arr, firsts)]}
    return out


def _pairs(predicted: np.ndarray, actual: np.ndarray) -> dict:
    finite = np.isfinite(actual)
    p, a = predicted[finite], actual[finite]
    out = {"n": int(len(p)), "kendall_tau": float("nan"), "spearman": float("nan"), "pearson": float("nan"),
           "signs_agree": float(np.mean(np.sign(p) == np.sign(a))) if len(p) else float("nan")}
    if len(p) >= 3 and np.ptp(p) > 0 and np.ptp(a) > 0:
        out.update(kendall_tau=float(stats.kendalltau(p, a).statistic), spearman=float(stats.spearmanr(p, a).statistic),
                   pearson=float(stats.pearsonr(p, a).statistic))
    return out
