"""The paper's data-cleansing experiment over seeds: train, rank by each method, cleanse the top-k, t-test."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import tempfile

import numpy as np
import pandas as pd
from scipy import stats

from .. import store
from ..baselines import ranking
from ..cleanse import cleanse_runs
from ..config import RunConfig
from ..context import RunContext, supplied_data
from ..errors import StoreError
from ..estimator import EstimateOptions
from ..execution import Tasks, TaskEnv, open_executor
from ..execution.payload import SeedPayload, seed_payload
from ..metrics import harmful_sign
from ..progress import CancelToken, Progress, ProgressFn, Reporter
from ..specs import check_sweep
from ..train import train


def sweep(
    configs: list[RunConfig],
    root,
    methods: list[str],
    counts: list[int],
    metric: str = "fid",
    options: EstimateOptions = EstimateOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """For each seed's run, method and removal count: test-metric change of cleansing vs no removal.

    Returns the per-(method, count) table with mean, std, one-sample t-test p-value over seeds.
    Seeds not yet trained are trained and ranked as tasks of the execution layer, then every
    cleanse is one (`workers` local workers, default as the cores hold; or the cluster of
    GAN_INFLUENCE_CLUSTER). Finished runs, estimates and cleanses are kept: a rerun resumes.
    """
    root = store.store_root(root)
    check_sweep(configs[0], [c.seed for c in configs], methods, counts, metric,
                RunContext.create(configs[0], root).dataset.n_train)  # before anything is written
    run_ids = [c.run_id for c in configs]
    ident = [run_ids, methods, counts, metric]
    if options != EstimateOptions():  # the estimator's options name the sweep too (default: earlier keys hold)
        ident.append({k: v for k, v in dataclasses.asdict(options).items() if k != "checkpoint_every"})
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:12]
    base = root / "_sweeps" / key
    # One sweep of these runs and settings at a time (its files); a second one waits, then finds its work done.
    with store.exclusive(root / store.LOCKS / "_sweeps" / f"{key}.lock", f"the sweep {key}", progress, cancel):
        store.remove_stale_temp_files(base)  # of a sweep killed while writing its tables
        store.write_json(base / "spec.json", {"run_ids": run_ids, "seeds": [c.seed for c in configs],
                                              "presets": sorted({c.preset for c in configs}), "methods": methods,
                                              "counts": counts, "metric": metric,
                                              "options": dataclasses.asdict(options)})
        rows: list[dict] = []
        report = Reporter("sweep", len(configs) * len(methods) * len(counts), progress, cancel)

        def inner(seed: int) -> ProgressFn:  # a seed's own stages report too, labelled with the sweep's place
            def forward(p: Progress) -> None:
                if progress is not None:
                    progress(dataclasses.replace(p, info={**p.info, "sweep": f"seed {seed}, {len(rows)} of {report.total} "
                                                                             "cleanses done"}))
            return forward

        with open_executor(report.total, workers) as executor:
            # 1. per seed: train, rank by every method (a trained seed is ranked here, from its cached estimates)
            orders = {}
            trained = [i for i, c in enumerate(configs) if store.Run(root, c.run_id).exists("summary.json")]
            for i in trained:
                orders[i] = _prepare_seed(configs[i], root, methods, options, inner(configs[i].seed), cancel)
            todo = [i for i in range(len(configs)) if i not in orders]
            tasks = Tasks(todo, here=lambda i, env: _prepare_seed(configs[i], root, methods, options,
                                                                  inner(configs[i].seed), env.cancel),
                          remote=functools.partial(_prepare_seed_remote, methods, dataclasses.asdict(options)),
                          ship=lambda i: _seed_payload(configs[i], root),
                          receive=lambda i, files: _keep_checkpoint(store.Run(root, configs[i].run_id), files))
            # a worker's reports carry their seed (`_prepare_seed_remote`)
            for i, result in executor.run(tasks, lambda p: inner(p.info.get("seed"))(p), cancel):
                orders[i] = result if executor.client is None else _receive_seed(configs[i], root, *result)
            # 2. the cleanses of every seed, method and count: one batch, so a worker done with one seed's takes the next's
            plan = [(m, c) for m in methods for c in counts]
            runs = [store.open_run(root, cfg.run_id) for cfg in configs]
            for i, k, res in cleanse_runs([(run, [orders[i][m][:c] for m, c in plan]) for i, run in enumerate(runs)],
                                          executor=executor, progress=lambda p: inner(configs[p.info["run"]].seed)(p),
                                          cancel=cancel):  # the cleanses' reports carry their run's index
                (m, c), cfg, run = plan[k], configs[i], runs[i]
                rows.append({"seed": cfg.seed, "run_id": run.run_id, "method": m, "count": c, "before": res.before[metric],
                             "after": res.after[metric], "change": res.after[metric] - res.before[metric]})
                # Written after every cleanse: an interrupted sweep still shows what it measured.
                store.write_bytes(base / "per_run.csv", _sweep_rows(rows, configs, methods, counts).to_csv(index=False).encode())
                report(len(rows))
        table = summarize_sweep(_sweep_rows(rows, configs, methods, counts), metric)
        store.write_bytes(base / "table.csv", table.to_csv(index=False).encode())
        return table


def _sweep_rows(rows: list[dict], configs: list[RunConfig], methods: list[str], counts: list[int]) -> pd.DataFrame:
    """The rows in the sweep's order (seed, method, count), however the tasks finished."""
    seeds = [c.seed for c in configs]
    return pd.DataFrame(sorted(rows, key=lambda r: (seeds.index(r["seed"]), methods.index(r["method"]),
                                                    counts.index(r["count"]))))


def _prepare_seed(cfg: RunConfig, root, methods: list[str], options: EstimateOptions, progress: ProgressFn | None,
                  cancel: CancelToken | None) -> dict[str, np.ndarray]:
    """Train the seed's run (or resume, or reuse it) and rank its training ids by every method, most harmful first."""
    run = train(cfg, root, progress, cancel)
    ctx = RunContext.create(cfg, root)
    return {m: ranking(run, ctx, m, seed=cfg.seed, options=options, progress=progress, cancel=cancel) for m in methods}


def _seed_payload(cfg: RunConfig, root) -> SeedPayload:
    return seed_payload(RunContext.create(cfg, root), store.Run(root, cfg.run_id))


def _prepare_seed_remote(methods: list[str], options: dict, _shared, seed: SeedPayload, env: TaskEnv):
    """On a worker: `_prepare_seed` in a scratch store; returns the orders and every file of the run."""
    cfg = RunConfig.from_dict(seed.config)
    with tempfile.TemporaryDirectory() as scratch, supplied_data(cfg, seed.dataset, seed.features):
        root = store.store_root(scratch)
        run = store.Run(root, cfg.run_id)
        for rel, data in seed.files.items():
            run.write(rel, data)

        def progress(p: Progress) -> None:
            env.progress(dataclasses.replace(p, info={**p.info, "seed": cfg.seed}))
            if p.stage == "train" and "epoch_done" in p.info and p.info["epoch"] < cfg.train.epochs:
                # each epoch's checkpoint to the client: a seed lost later resumes there, not from scratch
                env.send({rel: run.read_bytes(rel) for rel in ("config.json", "checkpoint/state.pt")})

        orders = _prepare_seed(cfg, root, methods, EstimateOptions(**options), progress, env.cancel)
        return orders, {rel: run.read_bytes(rel) for rel in run.manifest()}


def _write_files(run: store.Run, files: dict[str, bytes]) -> None:
    """Files of a run computed elsewhere, through the store (summary.json last: it marks a run finished)."""
    for rel in sorted(files, key=lambda r: r == "summary.json"):
        run.write(rel, files[rel])


def _keep_checkpoint(run: store.Run, files: dict[str, bytes]) -> None:
    with run.exclusive("train"):  # the run's one trainer writes its files
        if not run.exists("summary.json"):  # a checkpoint arriving after its finished run is stale
            _write_files(run, files)


def _receive_seed(cfg: RunConfig, root, orders: dict[str, np.ndarray], files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """A seed prepared on a worker: its files into the store; its training checkpoint is no longer needed.
    Files the store has already (another process trained the run meanwhile) are kept as they are."""
    run = store.Run(root, cfg.run_id)
    with run.exclusive("train"):
        have = run.manifest()
        _write_files(run, {rel: data for rel, data in files.items() if rel not in have})
        run.forget("checkpoint/")  # the worker finished training: a checkpoint left here is stale
        for p in run.path("checkpoint").glob("*") if run.exists("checkpoint") else []:
            p.unlink(missing_ok=True)
    return orders


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
