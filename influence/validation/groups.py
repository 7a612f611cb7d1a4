"""Group validation: the linear datamodeling score (LDS; Park et al. 2023, TRAK) of an estimate.

People curate sets, not single images. M random removal sets, each a fraction F of the traced
instances, are replayed without them (lanes of one counterfactual replay); the actual change of
each set is compared with the estimate's prediction for it, the sum of its instances' scores
(first order, so additive). Reported per fraction: Spearman (the LDS) and Pearson correlation, and
the slope of actual on predicted (above 1: the sums under-predict). The actual changes are taken on
the evaluation the estimate targets (validation split, its fixed z) and, beside it, on the test split.

A cleansing curve comes with it from the same replay: the k most harmful by the estimate and k random
instances, at a few k, predicted against actual. Where the random groups hold k instances too, the top-k is
also ranked among them (`against_random`: does removing the most harmful help more than removing at random?).

Actual changes do not depend on the estimate, so every named result of the run (exact, frozen,
no-propagation, TracIn-style; `estimator.result_sets`) is scored against the same replays.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from .. import store
from ..context import RunContext, load_run_config
from ..counterfactual import Lane
from ..counterfactual.plan import choose_plan
from ..errors import ConfigError
from ..estimator import EstimateOptions, estimate, harmful_order, result_name, result_sets
from ..execution import open_executor, worker_capacity
from ..metrics import check_metric, scored_with
from ..progress import BatchProgress, CancelToken, ProgressFn
from ..train import Trace
from . import against_random
from .intervals import MIN_PAIRS
from .replays import chunks, lane_tasks, lanes_per_task, merged_record, replay_conditions

SPLITS = ("valid", "test")
KINDS = ("random", "top", "random-k")  # random groups (LDS); the curve: top-k by the estimate, random k


@dataclass(frozen=True)
class GroupSpec:
    """What a group validation replays: random groups, and a cleansing curve, drawn from the traced instances."""

    groups: int = 32
    fractions: tuple[float, ...] = (0.01, 0.05, 0.2)
    seed: int = 0
    curve: tuple[float, ...] = (0.01, 0.05, 0.2)  # fractions of the traced instances for top-k / random-k; () = none

    def check(self, n_traced: int) -> None:
        if not MIN_PAIRS <= self.groups <= 1000:
            raise ConfigError(f"groups must lie in {MIN_PAIRS}..1000 (below {MIN_PAIRS} even a perfect ranking is "
                              f"consistent with no correlation; 16-64 is usual)")
        if not self.fractions:
            raise ConfigError("give at least one fraction")
        for f in (*self.fractions, *self.curve):
            if not 0 < f < 1:
                raise ConfigError(f"fractions must lie strictly between 0 and 1, got {f}")
            if round(f * n_traced) < 1:
                raise ConfigError(f"a fraction of {f} of the {n_traced} traced instances is empty")

    def key(self) -> str:
        """Names the random groups (the curve is stored per estimate beside them)."""
        ident = json.dumps([self.groups, list(self.fractions), self.seed])
        return hashlib.sha256(ident.encode()).hexdigest()[:10]


def folder_name(metrics: list[str], spec: GroupSpec) -> str:
    """The folder (under validate/groups/) of the group validation of `metrics` with these random sets."""
    return f"{'+'.join(metrics)}-{spec.key()}"


def draw_groups(spec: GroupSpec, traced: np.ndarray) -> pd.DataFrame:
    """The random removal sets: kind, fraction, group, ids (sorted), size."""
    rng = np.random.default_rng(spec.seed)
    rows = [{"kind": "random", "fraction": f, "group": g,
             "ids": np.sort(rng.choice(traced, max(1, round(f * len(traced))), replace=False))}
            for f in spec.fractions for g in range(spec.groups)]
    return _sized(rows)


def draw_curve(spec: GroupSpec, traced: np.ndarray, orders: dict[str, np.ndarray]) -> pd.DataFrame:
    """The cleansing curve's sets, per fraction: for each metric the k most harmful traced instances by its own
    estimate (`orders`: metric -> harmful order), and k random ones shared by all metrics."""
    rows = []
    for f in spec.curve:
        k = max(1, round(f * len(traced)))
        for metric, order in orders.items():
            rows.append({"kind": "top", "metric": metric, "fraction": f, "group": 0,
                         "ids": np.sort(order[np.isin(order, traced)][:k])})
        # seeded by the fraction itself, so a fraction added to a stored curve later draws the set it would
        # have drawn with the others
        rng = np.random.default_rng([spec.seed, 1, round(f * 1_000_000)])
        rows.append({"kind": "random-k", "metric": "", "fraction": f, "group": 0,
                     "ids": np.sort(rng.choice(traced, k, replace=False))})
    return _sized(rows)


def _at(table: pd.DataFrame, fractions: tuple[float, ...]) -> np.ndarray:
    """Which rows of a curve table lie at one of `fractions`."""
    return np.isclose(table["fraction"].to_numpy(dtype=float)[:, None], np.asarray(fractions, dtype=float)[None, :]
                      ).any(1) if len(table) and fractions else np.zeros(len(table), dtype=bool)


def _sized(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=["kind", "metric", "fraction", "group", "ids"])
    out["size"] = [len(i) for i in out["ids"]]
    return out


def lds(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Spearman (the LDS), Pearson, and the least-squares line actual ~ slope * predicted + intercept."""
    if len(predicted) < 2 or np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return {"spearman": float("nan"), "pearson": float("nan"), "slope": float("nan"), "intercept": float("nan")}
    fit = stats.linregress(predicted, actual)
    return {"spearman": float(stats.spearmanr(predicted, actual).statistic),
            "pearson": float(stats.pearsonr(predicted, actual).statistic),
            "slope": float(fit.slope), "intercept": float(fit.intercept)}


def validate_groups(
    run: store.Run,
    metrics: list[str],
    spec: GroupSpec = GroupSpec(),
    options: EstimateOptions = EstimateOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    lanes: int | None = None,
    workers: int | None = None,
) -> dict:
    """Replay every group (and the curve of the estimate with `options`) without its instances, and score every
    named result of the run against the groups.

    Stored under validate/groups/<metrics>-<spec key>/: groups.parquet (kind, fraction, group, size, ids, actual
    change per split and metric), curve-<result name>.parquet (the same for the curve's sets) and result.json
    (the scores per named result). A rerun reads the replays back; new named results are scored against them.
    """
    cfg = load_run_config(run)
    for m in metrics:
        check_metric(m, cfg.is_2d)
    trace = Trace.load(run)
    spec.check(trace.traced_count())  # before the estimate, which may be a whole pass
    chosen = estimate(run, metrics, options, progress=progress, cancel=cancel)
    n_train = len(next(iter(chosen.values())).scores)
    traced = np.flatnonzero(trace.step_of_instance(n_train) >= 0)
    folder = f"validate/groups/{folder_name(metrics, spec)}"
    name = result_name(options, trace.final.shape[0])
    # one set of these replays at a time, whoever asks (two tabs, the CLI)
    tables = (f"{folder}/groups.parquet", f"{folder}/curve-{name}.parquet")
    with run.exclusive(f"validate-groups-{'_'.join(metrics)}-{spec.key()}", progress, cancel):
        run.remove_stale_temp_files([folder])  # a killed writer's (this lock's folder)
        meta = run.read_json(f"{folder}/result.json") if run.exists(f"{folder}/result.json") else {}
        groups = _read(run, tables[0]) if _committed(run, tables[0], meta) else None
        curve = (_read(run, tables[1]) if _committed(run, tables[1], meta) else None) if spec.curve else _sized([])
        borrowed = same_sets(run, spec, metrics) if groups is None else None
        if borrowed is not None:  # the same random sets, replayed for other metrics and scored on these too
            groups, meta = borrowed
        if curve is not None and "metric" not in curve:  # drawn before each metric had its own top-k: again
            curve = None
        orders = {m: harmful_order(chosen[m]) for m in metrics}
        # curve fractions the stored curve lacks (asked for later, with the same groups) are replayed and added
        missing = tuple(f for f in spec.curve if curve is None or not _at(curve, (f,)).any())
        todo = ([draw_groups(spec, traced)] if groups is None else []) + (
            [draw_curve(replace(spec, curve=missing), traced, orders)] if missing else [])
        if todo:
            both = pd.concat(todo, ignore_index=True)
            both, replayed = _replay(run, cfg, trace, both, metrics, lanes, workers, progress, cancel)
            meta = merged_record(meta, replayed)
            groups = both[both["kind"] == "random"].reset_index(drop=True) if groups is None else groups
            added = both[both["kind"] != "random"]
            curve = pd.concat([c for c in (curve, added) if c is not None], ignore_index=True)
            if spec.curve:
                run.write(f"{folder}/curve-{name}.parquet", _parquet(curve))
        if todo or borrowed is not None:
            run.write(f"{folder}/groups.parquet", _parquet(groups))
        replayed_fractions = sorted({float(f) for f in curve["fraction"]})
        curve = curve[_at(curve, spec.curve)].reset_index(drop=True)  # the fractions asked for, in the result
        listed = {**meta.get("tables", {}), **{rel: run.manifest()[rel]["sha256"] for rel in tables if run.exists(rel)}}
    scores = {}
    for rname, results in result_sets(run).items():
        if all(m in results for m in metrics):
            scores[rname] = {m: _lds_rows(groups, results[m].scores, m) for m in metrics}
    curve_rows = {m: _curve_rows(curve, groups, chosen[m].scores, m) for m in metrics}
    result = {**meta, "metrics": metrics, "spec": {"groups": spec.groups, "fractions": list(spec.fractions),
                                                   "seed": spec.seed, "curve": list(spec.curve)},
              "result_in_use": name, "scores": scores, "curve": curve_rows, "curve_replayed": replayed_fractions,
              "tables": listed}
    run.write_json(f"{folder}/result.json", result)
    return {**result, "groups_table": groups, "curve_table": curve, "key": folder}


def same_sets(run: store.Run, spec: GroupSpec, metrics: list[str]) -> tuple[pd.DataFrame, dict] | None:
    """Random sets of the same spec that a validation of other metrics replayed and scored on every metric these
    need (`metrics.scored_with`; its groups table, and what its replays were: lanes, lane 0, conditions, time),
    or None."""
    base = run.path("validate/groups")
    for d in sorted(base.glob(f"*-{spec.key()}")) if base.is_dir() else []:
        rel, result = f"validate/groups/{d.name}/groups.parquet", f"validate/groups/{d.name}/result.json"
        meta = run.read_json(result) if run.exists(result) else {}
        table = _read(run, rel) if _committed(run, rel, meta) else None
        if table is not None and all(f"actual_{s}_{m}" in table for s in SPLITS for m in metrics):
            return table, {k: meta[k] for k in ("lanes", "baseline", "replay_seconds", "wall_seconds", "conditions")
                           if k in meta}
    return None


def _committed(run: store.Run, rel: str, meta: dict) -> bool:
    """Whether a stored table is one the folder's result was computed from (`meta`: its result.json, {} if none).
    A writer killed between its tables and its result leaves tables no result lists, and with them no record of
    their replays (lanes, lane 0, conditions): they are replayed again. Results from before the list: every table."""
    if not meta or not run.exists(rel):
        return False
    listed = meta.get("tables")
    return listed is None or listed.get(rel) == run.manifest()[rel]["sha256"]


def _read(run: store.Run, rel: str) -> pd.DataFrame | None:
    if not run.exists(rel):
        return None
    table = pd.read_parquet(run.verify(rel))
    table["ids"] = [np.asarray(i, dtype=np.int64) for i in table["ids"]]
    return table


def _replay(run, cfg, trace, table, metrics, lanes, workers, progress, cancel) -> tuple[pd.DataFrame, dict]:
    ctx = RunContext.create(cfg, run.root)
    lane_list = [Lane.of(ids) for ids in table["ids"]]
    plan = choose_plan(ctx, trace, len(lane_list), lanes)
    groups = chunks(trace, lane_list, ctx.dataset.n_train, plan, 0,
                    lanes_per_task(ctx, trace, plan, len(lane_list), worker_capacity(workers)))
    # also the metrics that cost nothing beside these: a later validation of those reads the sets back (`same_sets`)
    scored = scored_with(metrics, cfg.is_2d)
    tasks = lane_tasks(run, ctx, trace, lane_list, tuple((s, scored) for s in SPLITS), plan, groups)
    changes: list = [None] * len(lane_list)
    tally = BatchProgress("group replays", [len(g) for g in groups], progress, cancel)
    seconds, from_trace, ran, started = 0.0, True, [], time.perf_counter()
    with open_executor(len(groups), workers) as executor, \
            contextlib.closing(executor.run(tasks, tally.part(0), cancel)) as out:
        for group, result in out:
            for i, change in zip(group, result.changes):
                changes[i] = change
            seconds += result.seconds
            from_trace &= result.baseline_from_trace
            ran.append(result.conditions)
            tally.finished(groups.index(group))
    table = table.copy()
    for split in SPLITS:
        for m in changes[0][split]:
            table[f"actual_{split}_{m}"] = [c[split][m] for c in changes]
    meta = {"lanes": plan.as_dict(), "baseline": "recorded trajectory" if from_trace else "replayed",
            "replay_seconds": seconds, "wall_seconds": time.perf_counter() - started,
            "conditions": replay_conditions(ctx, trace, ran)}
    return table, meta


def _lds_rows(groups: pd.DataFrame, scores: np.ndarray, m: str) -> list[dict]:
    """Per fraction: the LDS numbers of these scores on both splits."""
    rows = []
    for f, g in groups.groupby("fraction"):
        predicted = np.array([scores[ids].sum() for ids in g["ids"]])
        row = {"fraction": float(f), "groups": len(g), "mean_predicted": float(predicted.mean()),
               "mean_actual_valid": float(g[f"actual_valid_{m}"].mean())}
        for split in SPLITS:
            row.update({f"{k}_{split}": v for k, v in lds(predicted, g[f"actual_{split}_{m}"].to_numpy()).items()})
        rows.append(row)
    return rows


def _curve_rows(curve: pd.DataFrame, groups: pd.DataFrame, scores: np.ndarray, m: str) -> list[dict]:
    """The curve of metric m: its own top-k sets and the shared random ones; each top-k ranked among the random
    groups of its size (`against_random`)."""
    rows = []
    for _, r in curve.iterrows():
        if r["metric"] not in ("", m):
            continue
        row = {"kind": r["kind"], "fraction": float(r["fraction"]), "size": int(r["size"]),
               "predicted": float(scores[r["ids"]].sum()), "actual_valid": float(r[f"actual_valid_{m}"]),
               "actual_test": float(r[f"actual_test_{m}"])}
        same = groups[groups["size"] == r["size"]]
        if r["kind"] == "top" and len(same):
            row["against_random"] = against_random.rank({s: row[f"actual_{s}"] for s in SPLITS}, same, m)
        rows.append(row)
    return rows


def against_random_phrase(row: dict) -> str:
    """A curve's top-k against the random groups of its size, in words (validation split, then test)."""
    return against_random.phrase(row["against_random"], row["size"], f"removing the {row['size']} most harmful")


def _parquet(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    table.assign(ids=[list(map(int, i)) for i in table["ids"]]).to_parquet(buf, index=False)
    return buf.getvalue()


def stored_group_validations(run: store.Run) -> list[dict]:
    """Every group validation of the run (its result.json and key), oldest first."""
    base = run.path("validate/groups")
    out = []
    for d in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime) if base.is_dir() else []:
        if (d / "result.json").exists():
            out.append({**run.read_json(f"validate/groups/{d.name}/result.json"), "key": d.name})
    return out


def size_spec(n_traced: int, size: int, groups: int = 32, seed: int = 0) -> GroupSpec:
    """Random groups of exactly `size` traced instances (no curve): what a removal set of that size is ranked
    against."""
    return GroupSpec(groups, (size / n_traced,), seed, ())


def random_groups_of_size(run: store.Run, size: int, metric: str, key: str | None = None
                          ) -> tuple[pd.DataFrame, str] | None:
    """The random groups of `size` instances that a stored group validation (`key`: that one; None: any) replayed
    and scored on `metric` (both splits), and its folder name: the validation with the most of them (the newest
    among equals), or None."""
    best = None
    for v in stored_group_validations(run):
        if key is not None and v["key"] != key:
            continue
        rel = f"validate/groups/{v['key']}/groups.parquet"
        table = _read(run, rel) if _committed(run, rel, v) else None
        if table is None or not all(f"actual_{s}_{metric}" in table for s in SPLITS):
            continue
        same = table[table["size"] == size].reset_index(drop=True)
        if len(same) and (best is None or len(same) >= len(best[0])):
            best = same, v["key"]
    return best


def group_points(run: store.Run, key: str, scores: np.ndarray, metric: str) -> pd.DataFrame:
    """One row per random group of a stored group validation (`key`: its folder name): fraction, size,
    predicted (the sum of `scores` over the group) and the actual changes on both splits."""
    table = _read(run, f"validate/groups/{key}/groups.parquet")
    if table is None:
        raise ConfigError(f"run {run.run_id} has no group validation '{key}'")
    return pd.DataFrame({"fraction": table["fraction"], "size": table["size"],
                         "predicted": [float(scores[ids].sum()) for ids in table["ids"]],
                         **{f"actual_{s}": table[f"actual_{s}_{metric}"] for s in SPLITS}})
