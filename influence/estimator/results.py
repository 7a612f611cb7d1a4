"""Influence results on disk: one folder per objective and options, named results, the table in use.

influence/<objective>-<options key>/ holds scores.npy, flags.npy, u_norms.npy, state_norms.npy and
meta.json. Estimates with other options are separate results, named by those options (the key without
the objective, e.g. "float64-last10-v1"). One of them is in use for the table, cleansing's predicted
change, the app and exports: the one chosen (influence/chosen.json), else the first computed. A later
estimate with other options never takes its place unless chosen.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import store
from ..context import load_run_config
from ..errors import ConfigError, StoreError
from ..honesty import UNINFORMATIVE, if_removed, stored_verdicts, uninformative
from ..metrics import METRIC_LABELS, harmful_sign, sign_sentence
from ..train import Trace
from .alternatives import baseline_verdict
from .backward import unmeasured_players
from .options import EstimateOptions
from .verdict import FLAG_NAMES, FLAG_NEVER_TRACED, FLAG_NOT_ASSESSED, growth_of, instance_flags, verdict_for

log = logging.getLogger(__name__)


@dataclass
class InfluenceResult:
    metric: str
    scores: np.ndarray  # (n_train,) float64
    flags: np.ndarray  # (n_train,) int8, FLAG_*
    u_norms: np.ndarray  # (T, 2): |u_D|, |u_G| before each traced step's propagation (index = step)
    meta: dict
    state_norms: np.ndarray | None = None  # (T,): |lambda| over the whole state (the growth factor's); None: older result

    @property
    def verdict(self) -> str:
        return self.meta["verdict"]


def save_result(run: store.Run, metric: str, options: EstimateOptions, n_params: int, scores: np.ndarray, norms: np.ndarray,
                step_of: np.ndarray, value: float, seconds: float, first: int, trace: Trace,
                window_scores: np.ndarray, window_first: int, conditions: dict | None = None,
                provenance: dict | None = None) -> InfluenceResult:
    """Store one metric's result of a finished pass; norms = (steps + 1, 3) |lambda_D|, |lambda_G|, whole state;
    window_scores: the scores from the traced steps window_first.. alone (what the quick spot check replays);
    conditions: the pass's recompute against training's (`runner.pass_conditions`); provenance: where the pass was
    computed when not by `estimate` ({"source": the trace-lr probe's walk, in words; "probe_replay": the probe's
    replay of this estimate's most harmful set, where it made one}), kept in the meta."""
    total = norms[:, 2]  # |lambda| over the whole state, index = traced step
    ratio, growth = growth_of(total, first)
    # An instance at step t is scored with u after the steps t+1.. : its amplification is ratio[t+1].
    verdict, message = verdict_for(growth)
    flags = instance_flags(ratio[1:], step_of)
    if options.method != "exact":  # the size of a baseline's adjoint says nothing about stability
        verdict, message = baseline_verdict(options.method)
        flags = np.where(step_of >= 0, FLAG_NOT_ASSESSED, FLAG_NEVER_TRACED).astype(np.int8)
    key = options.key(metric, n_params)
    meta = {
        "metric": metric, "label": METRIC_LABELS[metric], "sign": sign_sentence(metric),
        "harmful_sign": harmful_sign(metric), "options": options.identity(n_params),
        "method": options.method, "optimizer": trace.rule.optimizer.kind, "ema_generator": trace.ema_eval,
        "estimator_version": options.version, "traced_steps": trace.steps - first,
        "trace_first_step": trace.first_step, "metric_value_valid": value, "seconds": seconds,
        "growth": growth, "verdict": verdict, "verdict_message": message,
        "n_flagged": {FLAG_NAMES[f]: int((flags == f).sum()) for f in FLAG_NAMES},
        "check_window_first_step": window_first,
        "conditions": conditions,
        **(provenance or {}),
    }
    unmeasured = unmeasured_players(trace)
    if unmeasured:
        names = " and ".join({"d": "D", "g": "G"}[p] for p in unmeasured)
        meta["unmeasured_players"] = unmeasured
        meta["unmeasured_note"] = (f"{names} has no update in the traced steps: no instance term comes from it, and "
                                   "its optimizer buffers weigh 1 in the growth factor (their scale is measured on "
                                   "a player's last traced update)")
    run.write_npy(f"influence/{key}/scores.npy", scores)
    run.write_npy(f"influence/{key}/window_scores.npy", window_scores)
    run.write_npy(f"influence/{key}/flags.npy", flags)
    run.write_npy(f"influence/{key}/u_norms.npy", norms[:, :2])
    run.write_npy(f"influence/{key}/state_norms.npy", total)
    run.write_json(f"influence/{key}/meta.json", meta)
    return InfluenceResult(metric, scores, flags, norms[:, :2], meta, total)


def load_result(run: store.Run, metric: str, options: EstimateOptions, n_params: int) -> InfluenceResult | None:
    """The cached result if present, intact and computed with the same options; else None."""
    key = options.key(metric, n_params)
    if not run.exists(f"influence/{key}/meta.json"):
        return None
    try:
        meta = run.read_json(f"influence/{key}/meta.json")
        if meta["options"] != options.identity(n_params) or meta["estimator_version"] != options.version:
            return None
        return _read_result(run, key)
    except StoreError as e:
        log.warning("recomputing a damaged influence result: %s", e)
        return None  # a damaged cache entry is recomputed


def _read_result(run: store.Run, folder: str) -> InfluenceResult:
    meta = run.read_json(f"influence/{folder}/meta.json")
    state = run.read_npy(f"influence/{folder}/state_norms.npy") if run.exists(f"influence/{folder}/state_norms.npy") else None
    return InfluenceResult(meta["metric"], run.read_npy(f"influence/{folder}/scores.npy"),
                           run.read_npy(f"influence/{folder}/flags.npy"),
                           run.read_npy(f"influence/{folder}/u_norms.npy"), meta, state)


# ---------------------------------------------------------------- named results
CHOSEN = "influence/chosen.json"
TABLE_META = "influence/table.json"  # written last of the table's files: what it shows
TABLE_FILES = ("table.parquet", "table.csv", "table.json")
TABLE_VERSION = 2  # 2: MNIST's source_index, the 2D points; an older table is written again by the next estimate
RESULTS_LOCK = "influence-in-use"  # the run's artefact lock of CHOSEN and the table (`store.Run.exclusive`)


def result_sets(run: store.Run) -> dict[str, dict[str, InfluenceResult]]:
    """Every result on disk: name -> metric -> result, the oldest name first."""
    out: dict[str, dict[str, InfluenceResult]] = {}
    base = run.path("influence")
    if not base.exists():
        return out
    for d in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime):
        if d.name.startswith("_") or not (d / "meta.json").exists():
            continue
        try:
            r = _read_result(run, d.name)
        except StoreError:
            continue
        out.setdefault(d.name[len(r.metric) + 1:], {})[r.metric] = r
    return out


def chosen_name(run: store.Run, sets: dict | None = None) -> str | None:
    sets = result_sets(run) if sets is None else sets
    if run.exists(CHOSEN):
        try:
            name = run.read_json(CHOSEN)["name"]
        except (StoreError, KeyError, TypeError):
            name = None
        if name in sets:
            return name
    # by default an estimate, not a baseline (`alternatives`), unless there is nothing else
    estimates = (n for n, rs in sets.items() if all(r.meta.get("method", "exact") == "exact" for r in rs.values()))
    return next(estimates, next(iter(sets), None))


def choose_results(run: store.Run, name: str, dataset=None) -> None:
    """Use the named result from now on (table, cleansing, app, exports); rewrites the table."""
    sets = result_sets(run)
    if name not in sets:
        raise ConfigError(f"run {run.run_id} has no influence result '{name}'; it has: {', '.join(sets) or 'none'}")
    with run.exclusive(RESULTS_LOCK):
        run.write_json(CHOSEN, {"name": name})
        if dataset is not None:
            write_table(run, dataset)


def cached_results(run: store.Run, name: str | None = None) -> dict[str, InfluenceResult]:
    """metric -> result of the named result set (default: the one in use, see chosen_name)."""
    sets = result_sets(run)
    return sets.get(name or chosen_name(run, sets) or "", {})


def harmful_order(result: InfluenceResult) -> np.ndarray:
    """Training ids from most harmful to most helpful (instances never traced last)."""
    key = result.scores * result.meta["harmful_sign"]
    key = np.where(result.flags == FLAG_NEVER_TRACED, -np.inf, key)
    return np.argsort(-key, kind="stable")


def influence_table(run: store.Run, dataset, name: str | None = None) -> pd.DataFrame:
    """id, what leads it back (`Dataset.origin_columns`: path, source_index or the 2D point), label, then influence,
    harmful rank (1 = most harmful) and flag per metric."""
    results = cached_results(run, name)
    verdicts = stored_verdicts(run)
    ids = np.arange(dataset.n_train)
    table = pd.DataFrame({"id": ids, **dataset.origin_columns(ids)})
    y = dataset.train.y
    table["label"] = y.numpy() if y is not None else -1
    for metric, r in results.items():
        rank = np.empty(dataset.n_train, dtype=np.int64)
        rank[harmful_order(r)] = np.arange(1, dataset.n_train + 1)
        table[f"influence_{metric}"] = r.scores
        table[f"harmful_rank_{metric}"] = rank
        # a reliable estimate of a metric that means nothing must not read as plain "reliable"
        suffix = f"; {UNINFORMATIVE}" if uninformative(verdicts, metric) else ""
        table[f"flag_{metric}"] = [FLAG_NAMES[int(f)] + suffix for f in r.flags]
    table.attrs["sign"] = {m: r.meta["sign"] for m, r in results.items()}
    return table


def table_metadata(run: store.Run, results: dict[str, InfluenceResult], name: str | None) -> dict:
    """What the table's numbers are: which named result, its options, and each metric's 'if removed' in full."""
    cfg = load_run_config(run)
    total = run.read_json("summary.json")["steps"] if run.exists("summary.json") else None
    verdicts = stored_verdicts(run)
    return {
        "version": TABLE_VERSION, "run_id": run.run_id, "result": name,
        "options": next(iter(results.values())).meta["options"] if results else None,
        "metrics": {m: {"sign": r.meta["sign"], "verdict": r.meta["verdict"], "metric_verdict": verdicts.get(m),
                        "if_removed": if_removed(m, r.meta["traced_steps"], total, cfg.train.epochs) if total else None}
                    for m, r in results.items()},
        "columns": {"id": "training instance id (position in the run's training set)",
                    "path": "file path relative to data.root (own images only)",
                    "source_index": "index in the original training set of MNIST or Fashion-MNIST (built-in data "
                                    "only: torchvision's MNIST(train=True)[source_index] is the image)",
                    "x1, x2": "the training point (the 2D toy only)",
                    "label": "class (-1 = unlabelled)", "influence_<m>": "estimated change of metric m if removed",
                    "harmful_rank_<m>": "1 = most harmful",
                    "flag_<m>": "stability of the backward pass (its growth verdict) where the instance was traced, "
                                "'not in a traced batch' where not; not a per-image accuracy, which the spot check "
                                "measures (influence/_checks/); '; metric uninformative' where the metric itself "
                                "means nothing for this run (metric_verdict)"},
    }


def write_table(run: store.Run, dataset) -> pd.DataFrame:
    """influence/table.parquet and table.csv (plain CSV) of the result in use; table.json says what they hold."""
    name = chosen_name(run)
    table = influence_table(run, dataset, name)
    run.write("influence/table.parquet", _parquet_bytes(table))
    run.write("influence/table.csv", table.to_csv(index=False).encode())
    run.write_json(TABLE_META, table_metadata(run, cached_results(run, name), name))
    return table


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def result_dir(run: store.Run, metric: str, options: EstimateOptions, n_params: int) -> Path:
    return run.path(f"influence/{options.key(metric, n_params)}")

