"""train, finetune, runs, relocate: a run trained and reported (its numbers, what it started from, the traced rate)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .. import store
from ..errors import ConfigError, StoreError
from ..metrics import METRIC_LABELS
from .follow import run_or_follow


def cmd_train(args, root: Path) -> int:
    from ..config import DEFAULT_PRESET, apply_overrides, preset
    from ..data import describe, prepare, survey

    init = [f"model.init_{p}={f}" for p, f in (("g", args.init_g), ("d", args.init_d)) if f]
    rate = [f"train.trace_lr={args.trace_lr}"] if args.trace_lr else []
    if args.config:
        if args.preset:
            raise ConfigError("--config names its own preset: give --config or --preset, not both")
        return _train_recorded(args, root, init + rate)
    raw = apply_overrides(preset(args.preset or DEFAULT_PRESET, args.seed or 0), args.set + init + rate)
    own = raw.data.source == "folder" and raw.data.root
    found = survey(os.path.abspath(os.path.expanduser(raw.data.root))) if own else None
    cfg = prepare(raw, found)  # own images: fingerprint, name, and every auto read from the images
    if found is not None:
        print(f"your images: {describe(cfg, found)}", file=sys.stderr)
    return train_and_report(cfg, root, args.json)


def _train_recorded(args, root: Path, assignments: list[str]) -> int:
    """train --config: the recorded config (with --seed and --set) trained again, bound to the same inputs."""
    from ..config import read_config_file
    from ..data.locations import ImagesMissing
    from ..specs import recorded_train_config

    seed = [f"seed={args.seed}"] if args.seed is not None else []
    cfg = recorded_train_config(read_config_file(args.config), args.config, args.set + assignments + seed)
    try:
        return train_and_report(cfg, root, args.json)
    except ImagesMissing as e:
        raise ImagesMissing(e.root, e.fingerprint, f" Give their place here with --set data.root=PATH (the files "
                                                   f"must be the ones {args.config} was made with).") from None


def train_and_report(cfg, root: Path, as_json: bool) -> int:
    """The train job of cfg (here, or followed), then what it made: the numbers, the start, the traced rate."""
    from ..context import RunContext
    from ..relocation import remember

    RunContext.create(cfg, root)  # checks that need the data (batch vs data set size) before the job writes anything
    placed = remember(root, cfg)  # a trained run whose images were just read at a new place keeps that place
    started = time.perf_counter()
    result = run_or_follow(root, {"kind": "train", "params": {"config": cfg.to_dict()}}, as_json)
    out = {"run_id": result["run_id"], "device": result["device"], "steps": result["steps"],
           "seconds": result["seconds"], "wall_seconds": time.perf_counter() - started, "test": result["test"],
           "metric_report": result.get("metric_report"), "source": source_record(root, result["run_id"]),
           "start": result.get("start"), "trace_storage": result.get("trace_storage"),
           "trace_lr": result.get("trace_lr"), "images_recorded_at": placed}
    if as_json:
        print(json.dumps(out))
    else:
        metrics = ", ".join(f"{METRIC_LABELS[k]} {v:.4f}" for k, v in result["test"].items())
        print(f"run {out['run_id']}: {out['steps']} steps on {out['device']} in {result['seconds']:.1f} s; test {metrics}")
        if placed:
            print(f"  its images were read at {placed}: recorded as their place (as relocate does)")
        if out["start"]:
            print(f"  start: {out['start']['sentence']}")
        if out["trace_storage"]:
            print(f"  trace: {out['trace_storage']['trace_mode']} ({out['trace_storage']['trace_mode_reason']})")
        print_probe(out["trace_lr"])
        print_report(out["metric_report"])
        print_source(out["source"], root / out["run_id"])
    return 0


def print_probe(probe: dict | None) -> None:
    """The trace-lr probe's table and verdict, as the app shows it."""
    if not probe:
        return
    from ..tracelr import adopted_sentence, refusal

    lr = probe["user_lr"] if probe["mode"] == "check" else probe["chosen"]
    what = "kept (trace_lr=check)" if probe["mode"] == "check" else "chosen by the probe (trace_lr=auto)"
    print(f"  traced learning rate: lr_D {lr[0]:.3g}, lr_G {lr[1]:.3g}, {what}: {probe['reason']}")
    print(f"    {probe['cost']['sentence']}")
    print(f"    {'lr_D':>9} {'lr_G':>9}  growth over {probe['probe_steps']} steps  per step  "
          f"extrapolated to {probe['traced_steps']}  over the epoch  harmful 5% actual/predicted  verdict")
    for r in probe["rungs"]:
        c = r.get("confirmed")
        note = f" ({r['diverged']})" if r["diverged"] else (" (stopped: grew past the threshold)" if r["stopped_early"]
                                                            else "")
        if c:
            note += (f" (the epoch: {c['diverged']})" if c["diverged"] else
                     f" (the epoch's walk stopped after {c['walked']} of {c['steps']} steps: grew past the threshold)"
                     if c["stopped_early"] else "")
        epoch = f"{c['extrapolated']:>14.3g}" if c else f"{'-':>14}"
        rep = r.get("replayed")
        replayed = f"{rep['ratio']:>26.3g}" if rep else f"{'-':>26}"
        if refused := refusal(r):
            note += f" ({refused})"
        print(f"    {r['lr_d']:>9.3g} {r['lr_g']:>9.3g}  {r['growth']:>22.3g}  {r['rate']:>8.4g}  "
              f"{r['extrapolated']:>{16 + len(str(probe['traced_steps']))}.3g}  {epoch}  {replayed}  "
              f"{r['verdict']}{note}")
    check = probe.get("spot_check")
    if check and "per_metric" in check:
        for m, c in check["per_metric"].items():
            print(f"    spot check at the chosen rate, {METRIC_LABELS[m]}: groups {c['groups']} (LDS, Spearman over "
                  f"random groups: {c['lds']:.2f}; {check['lanes']} replayed sets)")
    elif check:
        print(f"    spot check: skipped - {check['skipped']}")
    if probe.get("influence"):
        print(f"    {adopted_sentence(probe['influence'])}")
    if probe.get("warning"):
        print(f"  warning: {probe['warning']}")


def cmd_finetune(args, root: Path) -> int:
    from ..config import preset
    from ..finetune import configure

    if args.from_run and (args.opt_g or args.opt_d or args.init_d):
        raise ConfigError("--from takes the run's weights and (--keep-optimizer) optimizer state: --init-d, --opt-d "
                          "and --opt-g go with --init-g")
    if args.init_g and not args.init_d:
        raise ConfigError("--init-g needs --init-d: a fine-tune starts from both players")
    if args.init_g and args.keep_optimizer:
        raise ConfigError("--keep-optimizer takes a store run's optimizer state: use it with --from")
    sets = args.set + ([f"seed={args.seed}"] if args.from_run and args.seed is not None else [])
    base = None if args.from_run else preset(args.preset, args.seed or 0)
    cfg = configure(root, args.trace_epochs, args.trace_lr, from_run_id=args.from_run, base=base,
                    init_g=args.init_g, init_d=args.init_d, keep_optimizer=args.keep_optimizer, opt_d=args.opt_d,
                    opt_g=args.opt_g, overrides=sets)
    return train_and_report(cfg, root, args.json)


def print_report(report: dict | None) -> None:
    from ..honesty import reference_line, verdict_line

    if not report:
        return
    if reference_line(report):
        print(f"  {reference_line(report)}")
    for m in report["verdicts"]:
        print(f"  {verdict_line(report, m)}")


def source_record(root: Path, run_id: str) -> dict | None:
    from ..data import SOURCE_RECORD

    run = store.open_run(root, run_id)
    return run.read_json(SOURCE_RECORD) if run.exists(SOURCE_RECORD) else None


def print_source(source: dict | None, run_dir: Path) -> None:
    """Own images: the files that were not read, counted and named (all of them in the run's source.json)."""
    if not source:
        return
    for key, what in (("unreadable", "unreadable files skipped"), ("links_not_followed", "links not followed"),
                      ("renamed", "zip members renamed to unique paths")):
        items = source.get(key) or []
        if items:
            shown = ", ".join(i["path"] for i in items[:3]) + (", ..." if len(items) > 3 else "")
            print(f"  {len(items)} {what}: {shown} (all in {run_dir / 'source.json'})")


def cmd_runs(args, root: Path) -> int:
    from ..data.locations import stored_run_images_found
    from ..validation.trust import NOT_CHECKED

    runs = store.list_runs(root)
    foreign = store.foreign_folders(root)
    if foreign:  # on stderr: --json output stays the list of runs
        print(f"skipped {len(foreign)} folder(s) in the store that are not runs (not a run id): "
              + ", ".join(repr(f) for f in foreign), file=sys.stderr)
    for r in runs:
        if "config" in r:
            r["images_found"] = stored_run_images_found(r["config"], store.cache_dir())
        if r.get("summary"):
            try:
                r["influence"] = _influence_in_use(store.open_run(root, r["run_id"]))
            except StoreError as e:  # a damaged check or choice: the run is still listed
                r["influence_problem"] = str(e)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items()} for r in runs], default=str))
        return 0
    if not runs:
        print(f"no runs in {root}; start with: gan-influence train --preset quick")
    for r in runs:
        s = r.get("summary")
        state = "damaged: " + r["problem"] if "problem" in r else ("finished" if s else "unfinished")
        metrics = ", ".join(f"{METRIC_LABELS[k]} {v:.3f}" for k, v in (s or {}).get("test", {}).items())
        print(f"{r['run_id']:<36} {state:<10} {metrics}")
        if r.get("influence"):
            print(f"  influence '{r['influence']['result']}': " + "; ".join(
                f"{METRIC_LABELS[m]} " + (t["groups"] if t["groups"] == NOT_CHECKED else
                                          f"groups {t['groups']}, single images {t['singles']}")
                for m, t in r["influence"]["trust"].items()))
        if r.get("influence_problem"):
            print(f"  influence: unreadable ({r['influence_problem']})")
        if not r.get("images_found", True):
            print(f"  its images are not at {r['config']['data']['root']}; if they moved: gan-influence relocate "
                  "--images NEW_PATH")
    return 0


def _influence_in_use(run: store.Run) -> dict | None:
    """The result the table, cleanse and export use, with its trust levels (None before a first estimate)."""
    from ..estimator import chosen_name, result_sets
    from ..validation.spotcheck import stored_check
    from ..validation.trust import kept

    sets = result_sets(run)
    name = chosen_name(run, sets)
    if name is None:
        return None
    check = stored_check(run, name)
    return {"result": name, "trust": {m: kept(r, check) for m, r in sets[name].items()}}


def cmd_relocate(args, root: Path) -> int:
    from ..relocation import relocate

    moved = relocate(root, args.images)
    if args.json:
        print(json.dumps({"images": moved.root, "fingerprint": moved.fingerprint, "runs": moved.runs}))
        return 0
    print(f"the images in {moved.root} (fingerprint {moved.fingerprint[:12]}) are the ones {len(moved.runs)} run(s) "
          "were trained on; they are read from there from now on:")
    for run_id, was in moved.runs.items():
        print(f"  {run_id} (recorded at {was})")
    return 0
