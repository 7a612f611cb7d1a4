"""validate and sweep: estimates against replays (leave-one-out, groups) and data cleansing over seeds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .. import store
from ..metrics import HIGHER_IS_BETTER, METRIC_LABELS
from .estimating import check_metrics
from .follow import run_or_follow
from .parser import estimate_options


def cmd_validate(args, root: Path) -> int:
    run = store.open_run(root, args.run)
    check_metrics(run, args.metric)
    options = estimate_options(args)
    if args.groups is not None:
        return _validate_groups(args, root, options)
    spec = {"kind": "validate", "params": {"run_id": args.run, "metrics": args.metric, "n": args.n,
                                           "selection": args.selection, "seed": args.seed,
                                           "options": dataclasses.asdict(options)}}
    if args.lanes is not None:  # only then: earlier specs keep their job keys
        spec["params"]["lanes"] = args.lanes
    if args.trace_epochs is not None:  # only then: earlier specs keep their job keys
        from ..validation import first_step_of_last_epochs

        first_step_of_last_epochs(run, args.trace_epochs)  # a K the run did not trace: one error line, no job
        spec["params"]["trace_epochs"] = args.trace_epochs
    result = run_or_follow(root, spec, args.json)
    from ..honesty import metric_report
    from ..validation.intervals import interval_phrase, rank_interval
    from ..validation.loo import JACCARD_ROUGH_K, jaccard_k

    verdicts = metric_report(run)["verdicts"]
    if args.json:
        print(json.dumps({m: {**a, "metric_verdict": verdicts.get(m),
                              "kendall_tau_interval": rank_interval("kendall", a["kendall_tau"], a["n"])}
                          for m, a in result.items()}))
        return 0
    for m, a in result.items():
        loo = "time not recorded" if a["seconds_loo"] is None else f"{a['seconds_loo']:.0f} s"
        epochs = f", last {a['trace_epochs']} traced epoch(s)" if a.get("trace_epochs") else ""
        k = jaccard_k(a["n"])
        few = f" (the {k} most negative and {k} most positive: rough below n = 100)" if k < JACCARD_ROUGH_K else ""
        print(f"{METRIC_LABELS[m]}: n={a['n']}{epochs} Kendall tau {a['kendall_tau']:.3f}"
              f"{interval_phrase('kendall', a['kendall_tau'], a['n'])}, Pearson r {a['pearson_r']:.3f}, "
              f"Jaccard top-10% {a['jaccard_top10']:.3f}{few} (estimate verdict: {a['verdict']}, growth "
              f"{a['growth']:.3g}; LOO {loo})")
        if verdicts.get(m, {}).get("reasons"):
            print(f"  metric uninformative: {'; '.join(verdicts[m]['reasons'])}")
        for warning in (a.get("conditions") or {}).get("warnings", []):
            print(f"  note: {warning}")
    return 0


def _validate_groups(args, root: Path, options) -> int:
    from ..validation.groups import GroupSpec, against_random_phrase

    spec_ = GroupSpec(args.groups, tuple(args.fraction), args.seed, tuple(args.curve))
    spec = {"kind": "validate", "params": {"run_id": args.run, "metrics": args.metric,
                                           "groups": dataclasses.asdict(spec_), "lanes": args.lanes,
                                           "options": dataclasses.asdict(options)}}
    result = run_or_follow(root, spec, args.json)
    from ..validation.intervals import interval_phrase

    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.groups} random groups per fraction, replayed ({result['lanes']['mode']} lanes, "
          f"{result['lanes']['lanes']} per pass; lane 0: {result['baseline']}); estimate in use: {result['result_in_use']}")
    if "wall_seconds" in result:  # the tasks' sum exceeds the clock where workers run at once
        print(f"replay time: {result['replay_seconds']:.1f} s summed over its tasks, {result['wall_seconds']:.1f} s "
              f"on the clock")
    for warning in (result.get("conditions") or {}).get("warnings", []):
        print(f"note: {warning}")
    for m in args.metric:
        label = METRIC_LABELS[m]
        for rname, per_metric in result["scores"].items():
            for row in per_metric[m]:
                interval = interval_phrase("spearman", row["spearman_valid"], row["groups"])
                print(f"{label} [{rname}] F={row['fraction']:g}: LDS (Spearman) {row['spearman_valid']:.3f}{interval}, "
                      f"Pearson {row['pearson_valid']:.3f}, slope {row['slope_valid']:.3g} (actual on predicted; validation "
                      f"split, as estimated); test split: Spearman {row['spearman_test']:.3f}")
        for row in result["curve"][m]:
            print(f"{label} curve, {row['kind']} {row['size']}: predicted {row['predicted']:+.4g}, actual "
                  f"{row['actual_valid']:+.4g} (validation), {row['actual_test']:+.4g} (test)")
            if "against_random" in row:
                print(f"  {against_random_phrase(row)}")
    return 0


def cmd_sweep(args, root: Path) -> int:
    import pandas as pd

    from ..config import apply_overrides, preset
    from ..context import RunContext
    from ..data import prepare
    from ..specs import sweep_spec

    base = prepare(apply_overrides(preset(args.preset, 0), args.set))
    n_train = RunContext.create(base, root).dataset.n_train
    spec = sweep_spec(base, args.seeds, args.methods, args.counts, args.metric, n_train, estimate_options(args))
    table = pd.DataFrame(run_or_follow(root, spec, args.json)["table"])
    if args.json:
        print(table.to_json(orient="records"))
    else:
        print(f"change of test {METRIC_LABELS[args.metric]} after cleansing vs no removal "
              f"({'negative' if not HIGHER_IS_BETTER[args.metric] else 'positive'} = improvement):")
        print(table.to_string(index=False))
    return 0
