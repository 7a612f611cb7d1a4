"""cleanse and export: a removal set (by rank or from a CSV) replayed without, or the data set written without it."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .. import store
from ..errors import ConfigError
from ..metrics import HIGHER_IS_BETTER, METRIC_LABELS
from ..removal import MAX_REMOVAL_BYTES, read_removal_csv
from .follow import run_or_follow
from .parser import estimate_options

if TYPE_CHECKING:
    from ..context import RunContext
    from ..train import Trace

MAX_REMOVAL_FILE_BYTES = MAX_REMOVAL_BYTES  # the app's uploads have the same limit


def read_removal_file(path: str) -> str:
    try:
        # opened without blocking and checked first: a FIFO would hang the command
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"removal file '{path}' is not a regular file")
            data = f.read(MAX_REMOVAL_FILE_BYTES + 1)
        if len(data) > MAX_REMOVAL_FILE_BYTES:
            raise ConfigError(f"removal file '{path}' is larger than {MAX_REMOVAL_FILE_BYTES // 2**20} MB")
        return data.decode()
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read removal file '{path}': {e}") from None


def removal_set(args, root: Path, run: store.Run, ctx: RunContext, csv: str | None) -> tuple[list[int], str]:
    """The ids of a removal set given as a CSV file (`csv`) or as --top-harmful K --by M, and how it was chosen."""
    from ..baselines import ranking
    from ..metrics import available_metrics
    from ..specs import estimate_spec

    if csv:
        ids = read_removal_csv(read_removal_file(csv), ctx.dataset.n_train, ctx.dataset.train_paths,
                               ctx.dataset.ambiguous_paths)
        return ids, f"removal file {Path(csv).name}"
    if not 1 <= args.top_harmful < ctx.dataset.n_train:
        raise ConfigError(f"--top-harmful must lie in 1..{ctx.dataset.n_train - 1}")
    if args.by in available_metrics(ctx.cfg.is_2d):  # the estimate under its job's lock, as the app computes it
        run_or_follow(root, estimate_spec(args.run, [args.by], estimate_options(args)), args.json)
    ids = ranking(run, ctx, args.by, seed=ctx.cfg.seed, options=estimate_options(args))[: args.top_harmful].tolist()
    by = f"most harmful by influence on {METRIC_LABELS[args.by]}" if args.by in METRIC_LABELS else f"chosen by {args.by}"
    return ids, f"the {args.top_harmful} {by}"


def cmd_cleanse(args, root: Path) -> int:
    from ..context import RunContext, load_run_config
    from ..train import Trace
    from ..validation.groups import size_spec

    run = store.open_run(root, args.run)
    trace = Trace.load(run)  # a run without a trace fails here, before anything is written
    ctx = RunContext.create(load_run_config(run), root)
    if args.against_random is not None:  # before any estimate or replay runs
        if args.mode != "replay":
            raise ConfigError("--against-random compares replays: use it with --mode replay")
        size_spec(2, 1, args.against_random).check(2)  # M within bounds
    ids, _ = removal_set(args, root, run, ctx, args.remove)
    from ..cleanse import check_removal_ids

    ids = check_removal_ids(ids, ctx.dataset.n_train).tolist()
    ranked_against = against_random_spec(args, run, ctx, trace, ids) if args.against_random is not None else None
    result = run_or_follow(root, {"kind": "cleanse", "params": {"run_id": args.run, "removal_ids": ids, "mode": args.mode}}, args.json)
    if ranked_against is not None:
        result["against_random"] = against_random(root, run, result, *ranked_against, args.json)
    from ..honesty import metric_report, uninformative

    verdicts = metric_report(run, ctx)["verdicts"]
    if args.json:
        print(json.dumps({**result, "metric_verdicts": verdicts}))
        return 0
    print(f"removed {result['n_removed']} instances ({result['mode']}) in {result['seconds']:.1f} s; test split:")
    for m, before in result["before"].items():
        after = result["after"][m]
        better = (after > before) == HIGHER_IS_BETTER[m]
        pred = result["predicted_change"].get(m)
        checked = (result.get("validation") or {}).get("change", {}).get(m)
        pred_s = (f"  (on validation: predicted {pred:+.4f}" + (f", actual {checked:+.4f})" if checked is not None
                                                                else ")")) if pred is not None else ""
        judged = "metric uninformative: neither better nor worse" if uninformative(verdicts, m) else (
            "better" if better else "worse")
        print(f"  {METRIC_LABELS[m]:<7} {before:.4f} -> {after:.4f}  change {after - before:+.4f} {judged}{pred_s}")
    if result.get("predicted_scope"):
        print(f"  note: {result['predicted_scope']} (influence result '{result.get('predicted_from')}')")
    if ranked_against is not None:
        from ..validation.against_random import phrase

        a = result["against_random"]
        print(f"against {a['groups']} random sets of {a['size']} traced instances (group validation {a['key']}):")
        for m, ranked in a["per_metric"].items():
            print(f"  {METRIC_LABELS[m]}: {phrase(ranked, a['size'], 'removing this set')}")
    return 0


def against_random_spec(args, run: store.Run, ctx: RunContext, trace: Trace, ids: list[int]) -> tuple[dict, int]:
    """Before the cleanse, so a set it cannot rank loses no replay: the group validation job that draws random
    sets of the set's traced size, and that size."""
    from ..estimator import cached_results
    from ..validation.groups import size_spec

    metrics = list(cached_results(run))
    if not metrics:
        raise ConfigError(f"--against-random replays random sets as a group validation of the run's estimate: "
                          f"estimate influence first (gan-influence estimate --run {run.run_id})")
    traced = trace.step_of_instance(ctx.dataset.n_train) >= 0
    size = int(traced[ids].sum())
    if size == 0:
        raise ConfigError("the removal set holds no traced instance: a replay without it changes nothing")
    spec_ = size_spec(int(traced.sum()), size, args.against_random)
    spec_.check(int(traced.sum()))
    return {"kind": "validate", "params": {"run_id": run.run_id, "metrics": metrics,
                                           "groups": dataclasses.asdict(spec_), "lanes": None,
                                           "options": dataclasses.asdict(estimate_options(args))}}, size


def against_random(root: Path, run: store.Run, result: dict, job: dict, size: int, quiet: bool) -> dict:
    """The cleansed set's change ranked among the random sets' (every metric they were scored on)."""
    from ..validation.against_random import cleansed_changes, rank
    from ..validation.groups import random_groups_of_size

    key = run_or_follow(root, job, quiet)["key"].rsplit("/", 1)[-1]  # validate/groups/<folder>
    per_metric = {}
    for m in result["change"]:  # the metrics the random sets were scored on
        found = random_groups_of_size(run, size, m, key)
        if found is not None:
            per_metric[m] = rank(cleansed_changes(result, m), found[0], m)
    return {"groups": job["params"]["groups"]["groups"], "size": size, "key": key, "per_metric": per_metric}


def cmd_export(args, root: Path) -> int:
    from ..context import RunContext, load_run_config
    from ..export import export_cleaned

    run = store.open_run(root, args.run)
    ctx = RunContext.create(load_run_config(run), root)
    ids, chosen = removal_set(args, root, run, ctx, args.removal)
    with store.folder_lock(root, args.to):  # two exports to one folder: the second waits, then finds it taken
        manifest = export_cleaned(run, ids, args.to, args.why or chosen, ctx=ctx)
    if args.json:
        print(json.dumps(manifest))
        return 0
    print(f"exported {manifest['n_exported']} of {manifest['n_train']} training images to {args.to} "
          f"({manifest['n_removed']} removed; see manifest.json and removed.csv there)")
    for m, trust in manifest["trust"].items():  # recorded in the manifest: what the set's ranking rests on
        print(f"  trust of the estimate ({METRIC_LABELS[m]}): {trust['summary']}")
    left = manifest.get("not_exported", {})
    if left:
        print(f"  not exported besides: {len(left['held_out'])} held-out images (validation/test), "
              f"{len(left['unreadable'])} unreadable files, {len(left['links_not_followed'])} links (listed in "
              "manifest.json)")
    if manifest["uninformative_metrics"]:
        print(f"  metric uninformative for this run: {', '.join(METRIC_LABELS[m] for m in manifest['uninformative_metrics'])}"
              " (influences on it carry no meaning; reasons in manifest.json)")
    return 0
