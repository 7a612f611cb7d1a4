"""estimate and explain: influence tables on metrics and on chosen samples, with their checks and notes."""

from __future__ import annotations

import json
from pathlib import Path

from .. import store
from ..errors import ConfigError
from ..metrics import METRIC_LABELS, sign_sentence
from .follow import run_or_follow
from .parser import estimate_options


def cmd_estimate(args, root: Path) -> int:
    from ..estimator import estimate, harmful_order
    from ..specs import estimate_spec
    from ..validation.spotcheck import check_path, stored_check
    from ..validation.trust import stored_replays, verdict

    if args.top < 0:  # a negative slice would list all but the last N
        raise ConfigError("--top must be at least 0")
    options = estimate_options(args)
    run = store.open_run(root, args.run)
    check_metrics(run, args.metric)
    spec = estimate_spec(args.run, args.metric, options, args.check)
    run_or_follow(root, spec, args.json)
    results = estimate(run, args.metric, options)  # a cache read: the job (here or elsewhere) computed them
    from ..context import RunContext, load_run_config
    from ..estimator import choose_results, chosen_name, result_name
    from ..honesty import if_removed, metric_report

    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, root)
    name = result_name(options, n_params(run))
    if args.use:
        choose_results(run, name, ctx.dataset)
    in_use = chosen_name(run)
    report = metric_report(run, ctx)
    steps = run.read_json("summary.json")["steps"]
    check = stored_check(run, name)
    probe = run.read_json("summary.json").get("trace_lr") or {}  # the trace-lr probe, where training ran one
    out = {}
    for m, r in results.items():
        top = harmful_order(r)[: args.top]
        out[m] = {"sign": sign_sentence(m), "if_removed": if_removed(m, r.meta["traced_steps"], steps, cfg.train.epochs),
                  "verdict": r.meta["verdict"], "verdict_message": r.meta["verdict_message"],
                  "metric_verdict": report["verdicts"][m],
                  "growth": r.meta["growth"], "seconds": r.meta["seconds"], "traced_steps": r.meta["traced_steps"],
                  "notes": result_notes(r.meta), "conditions": r.meta.get("conditions"),
                  "trace_lr_warning": probe.get("warning"),
                  "result": name, "result_in_use": in_use, "trust": verdict(r, check),
                  # what the verdict rests on: each replay's predicted and actual change, and the stored check
                  "check_replays": stored_replays(check, m),
                  "check_file": str(run.path(check_path(name, check["level"]))) if check else None,
                  "most_harmful": [{"id": int(i), **ctx.dataset.origin(int(i)), "influence": float(r.scores[i])}
                                   for i in top],
                  "table": str(run.path("influence/table.parquet"))}
    if args.json:
        print(json.dumps(out))
        return 0
    for m, o in out.items():
        print(f"{METRIC_LABELS[m]}: {o['if_removed']}; {o['sign'].split('; ', 1)[-1]}")
        print(f"  trust: {o['trust']['summary']}")
        if o["trust"]["measured"]:
            print(f"  measured: {o['trust']['measured']}")
        print(f"  stability: {o['verdict_message']}")
        mv = o["metric_verdict"]
        print(f"  metric: {mv['verdict']}" + (f" - {'; '.join(mv['reasons'])}" if mv["reasons"] else ""))
        for note in o["notes"]:
            print(f"  note: {note}")
        if o["trace_lr_warning"]:
            print(f"  warning: {o['trace_lr_warning']}")
        print(f"  {o['traced_steps']} traced steps, {o['seconds']:.1f} s of computation for this metric (metrics "
              "computed together split one pass's time); most harmful: " +
              ", ".join(f"{_named(t)} ({t['influence']:+.3g})" for t in o["most_harmful"]))
    print(f"result '{name}'" + ("" if name == in_use else f"; the table, cleanse and export use '{in_use}' "
                                 "(--use switches)"))
    print(f"table: {out[args.metric[0]]['table']} (and .csv)")
    return 0


def result_notes(meta: dict) -> list[str]:
    """What a user must know about an influence result beyond its verdict: a player without a traced update,
    a recompute under other conditions than training's."""
    notes = [meta["unmeasured_note"]] if meta.get("unmeasured_note") else []
    notes += [f"the pass is {meta['source']}"] if meta.get("source") else []
    return notes + list((meta.get("conditions") or {}).get("warnings", []))


def n_params(run: store.Run) -> int:
    from ..train import Trace

    return Trace.load(run).final.shape[0]


def _named(top: dict) -> str:
    """A listed training image: "#12", and where it comes from ("#12 MNIST train[5470]", "#12 cats/a.png")."""
    from ..data import origin_text

    where = origin_text(top)
    return f"#{top['id']}" + (f" {where}" if where else "")


def check_metrics(run: store.Run, metrics: list[str]) -> None:
    from ..context import load_run_config
    from ..metrics import check_metric

    cfg = load_run_config(run)
    for m in metrics:
        check_metric(m, cfg.is_2d)


def cmd_explain(args, root: Path) -> int:
    from ..context import load_run_config
    from ..estimator import check_options
    from ..objectives.samples import KIND_LABELS, check_request, parse
    from ..samples import export_paths, load
    from ..samples import latents as chosen
    from ..samples.check import check_arguments
    from ..specs import explain_spec
    from ..train import Trace

    run = store.open_run(root, args.run)
    cfg = load_run_config(run)
    kind, rest = parse(args.objective)
    objective = f"reference:{Path(rest[0]).resolve()}" if kind == "reference" and not rest[0].startswith("#") \
        else args.objective  # the job may run in another folder
    if args.samples is None and kind != "class":
        raise ConfigError("--samples is required (SEED:N, a .npy file of latent vectors, or valid)")
    samples = chosen.parse(args.samples or "valid")
    z = chosen.latents(cfg, samples)  # one error line before any job starts
    check_request(cfg, objective, len(z))
    options = estimate_options(args)
    check = None
    if args.check is not None:
        picked = list(range(len(z))) if args.check_samples is None else args.check_samples
        trace = Trace.load(run)  # the check's arguments before the pass, not after it
        check_options(options, trace)
        one = kind == "class"  # a class share is one target, whatever the number of z
        check_arguments([0] if one else picked, args.check, 1 if one else len(z),
                        trace.traced_count(trace.steps - (options.last_steps or trace.steps)))
        check = {"samples": picked, "k": args.check, "seed": 0}
    if args.top < 1:
        raise ConfigError("--top must be at least 1")
    result = run_or_follow(root, explain_spec(args.run, samples, objective, options, check), args.json)
    explanation = load(run, result["name"])
    files = {k: str(v) for k, v in export_paths(run, explanation).items() if v.exists()}
    out = _explain_summary(run, explanation, args.top, files, result.get("check"))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['label']}: {out['sign']}")
    print(f"  stability: {out['verdict_message']}; pass {out['seconds']:.1f} s over {out['traced_steps']} traced steps")
    for s in out["samples"]:
        value = ", ".join(f"{v:.4g}" for v in s["values"])  # position: x, y
        head = (f"sample {s['sample']}: {KIND_LABELS[out['kind']]} {value}" if out["per_sample"]
                else f"{s['value_label']} {value}")
        if "nearest_id" in s:
            head += (f"; nearest training image #{s['nearest_id']} at {s['distance_ratio']:.2f}x the typical "
                     f"neighbour distance; top-1 / top-10 carry {s['top1_share']:.1%} / {s['top10_share']:.1%} of "
                     f"|influence|" + (" - LIKELY COPY" if s["likely_copy"] else ""))
        print(head)
        for side, items in s["top"].items():
            print(f"  {side}: " + ", ".join(f"{_named(t)} ({t['influence']})" for t in items))
    if out.get("check"):
        c = out["check"]["summary"]
        print("check: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()
                                    if not isinstance(v, list)))
    for what, path in files.items():
        print(f"{what}: {path}")
    return 0


def _explain_summary(run, explanation, top: int, files: dict, check: dict | None) -> dict:
    import numpy as np

    from ..context import RunContext, load_run_config

    meta = explanation.meta
    dataset = RunContext.create(load_run_config(run), run.root).dataset
    near = explanation.nearcopy
    samples = []
    for i in range(explanation.n_samples if meta["per_sample"] else 1):
        rows = np.flatnonzero(explanation.row_sample == i)
        values = explanation.values[rows]
        sides = ("largest",) if explanation.is_vector else ("harmful", "helpful")
        entry = {"sample": i, "value_label": " / ".join(meta["row_labels"][r] for r in rows),
                 "value": float(values[0]) if len(values) == 1 else float(np.linalg.norm(values)),
                 "values": values.tolist(), "top": {}}
        if near is not None:
            row = near.iloc[i]
            entry.update({k: (bool(row[k]) if k == "likely_copy" else int(row[k]) if k == "nearest_id" else float(row[k]))
                          for k in ("nearest_id", "nearest_distance", "distance_ratio", "top1_share", "top10_share",
                                    "likely_copy")})
        for side in sides:
            ids = explanation.responsible(i, top, "harmful" if side == "largest" else side)
            entry["top"][side] = [{"id": int(j), **dataset.origin(int(j)),
                                   "influence": " ".join(f"{v:+.3g}" for v in explanation.matrix[rows, j])}
                                  for j in ids]
        samples.append(entry)
    return {"name": explanation.name, "kind": meta["kind"], "per_sample": meta["per_sample"], "label": meta["label"],
            "sign": meta["sign"], "verdict": meta["verdict"],
            "verdict_message": meta["verdict_message"], "seconds": meta["seconds"],
            "traced_steps": meta["traced_steps"], "samples": samples, "files": files, "check": check}
