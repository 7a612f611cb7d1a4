"""Command line: gan-influence train | finetune | runs | estimate | explain | cleanse | export | validate | sweep.

Bad input prints one line starting with 'error:' and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import stat
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: threads that spin while waiting starve each other once anything else
# runs on the cores (as the app's job workers, jobs.start_background). Same thread count, same bits.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import allocator, jobs, store  # noqa: E402
from .errors import Cancelled, ConfigError, InfluenceError  # noqa: E402
from .metrics import HIGHER_IS_BETTER, METRIC_LABELS, sign_sentence  # noqa: E402
from .removal import MAX_REMOVAL_BYTES, read_removal_csv  # noqa: E402, F401  (also the CLI's public parser)

SIGN_HELP = (
    "Influence = predicted change of the metric if the instance is removed. "
    "Harmful = removal improves the metric: positive for IS and ALL, negative for FID and D-loss."
)


EXPLAIN_HELP = (
    "Influence = predicted change of the objective on each chosen sample if the training image is removed. "
    "Harmful = removal moves it the way you want: up for realism, clarity and reference (closer), down for a "
    "class share you want less of. position gives a displacement (x, y) per training point."
)
STORE_HELP = "run store folder (env GAN_INFLUENCE_STORE, default ./runs)"
CLUSTER_HELP = ("run leave-one-out replays, sweep seeds and cleanses on this Dask scheduler (env GAN_INFLUENCE_CLUSTER; "
                "default: this machine)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    from .config import DEFAULT_PRESET, PRESETS, describe_fields

    keys = "\n".join(f"  {k} (default {v!r}): {h}" for k, v, h in describe_fields())
    p = _Parser(prog="gan-influence", description="Influence estimation for GANs (ASGD-Influence). " + SIGN_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--cluster", metavar="tcp://HOST:8786", help=CLUSTER_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN and record its trace", epilog="config keys for --set:\n" + keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {', '.join(PRESETS)}")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--init-g", metavar="FILE", help="start G from this state dict (.pt, loaded weights_only, or "
                   ".safetensors) of the configured architecture; the run fine-tunes it (= --set model.init_g=FILE)")
    t.add_argument("--init-d", metavar="FILE", help="start D from this state dict (as --init-g)")
    t.add_argument("--trace-lr", choices=("schedule", "auto", "check"), default=None,
                   help="the traced epochs' learning rate (= --set train.trace_lr): schedule (the preset's, no probe), "
                        "auto (probe a ladder of rates before the traced epochs and take the largest whose growth "
                        "stays reliable) or check (the schedule's, with the probe beside it: a warning when it is far "
                        "above the probe's pick)")
    t.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    f = sub.add_parser("finetune", help="fine-tune a trained GAN and trace it: a run of this store (--from) or G and D "
                       "files (--init-g/--init-d of a preset's architecture); its epochs are all traced, by default "
                       "at the learning rate the probe finds reliable (train.trace_lr=auto)",
                       epilog="config keys for --set:\n" + keys, formatter_class=argparse.RawDescriptionHelpFormatter)
    start = f.add_mutually_exclusive_group(required=True)
    start.add_argument("--from", dest="from_run", metavar="RUN", help="a finished run of this store: its config, final "
                       "weights and (--keep-optimizer) final optimizer state")
    start.add_argument("--init-g", metavar="FILE", help="G state dict (.pt, loaded weights_only, or .safetensors) of the "
                       "preset's architecture (with --init-d)")
    f.add_argument("--init-d", metavar="FILE", help="D state dict (as --init-g)")
    f.add_argument("--preset", default=DEFAULT_PRESET, help=f"with --init-g/--init-d: the architecture and training "
                   f"recipe, one of {', '.join(PRESETS)}")
    f.add_argument("--seed", type=int, default=None, help="default: the run's (--from) or 0")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    f.add_argument("--trace-epochs", type=int, default=1, metavar="K", help="epochs to fine-tune, all traced")
    f.add_argument("--trace-lr", default="auto", metavar="auto|LR",
                   help="auto: probe a ladder of rates from the rate the recipe ends at down and take the largest "
                        "whose growth stays reliable; a number: both players at this rate (kept; the probe runs "
                        "beside it and warns when it is far above its pick); schedule: the recipe's rate, no probe")
    opt = f.add_mutually_exclusive_group()
    opt.add_argument("--keep-optimizer", action="store_true", help="with --from: start from the run's final optimizer "
                     "state (Adam's moments and update count) instead of a fresh one")
    opt.add_argument("--opt-d", metavar="FILE", help="D's optimizer state: a torch.optim state dict (optimizer."
                     "state_dict(), parameters in D.parameters() order); default: fresh")
    f.add_argument("--opt-g", metavar="FILE", help="G's optimizer state (as --opt-d)")
    f.add_argument("--json", action="store_true", help="print a JSON summary at the end (with the probe's table)")

    r = sub.add_parser("runs", help="list cached runs")
    r.add_argument("--json", action="store_true")

    e = sub.add_parser("estimate", help="estimate the influence of every training instance", description=SIGN_HELP)
    e.add_argument("--run", required=True)
    e.add_argument("--metric", action="append", required=True, help="is, fid, dloss (images) or all, dloss (2D); repeatable")
    _estimate_options(e)
    _check_option(e)
    e.add_argument("--top", type=int, default=5, help="show the N most harmful instances per metric")
    e.add_argument("--use", action="store_true", help="make this result (these options) the one the table, cleanse "
                   "and export use; without it the result in use stays as it is (the first computed, or chosen)")
    e.add_argument("--json", action="store_true")

    xp = sub.add_parser("explain", help="why did the GAN make these samples? influence of every training image on "
                        "chosen generated samples (or a class share), in one pass", description=EXPLAIN_HELP)
    xp.add_argument("--run", required=True)
    xp.add_argument("--samples", default=None, metavar="SEED:N|FILE|valid",
                    help="the chosen z: N latent vectors drawn with SEED (e.g. 0:16), a .npy file of latent vectors "
                         "(n, z_dim), or 'valid' (the validation z; the default for class share); at most 64 samples")
    xp.add_argument("--objective", required=True,
                    help="realism (the final D's logit), clarity (the classifier's log-probability of the sample's "
                         "class), reference:PATH or reference:#ID (minus the feature distance to that image), "
                         "position (2D toy: a displacement per training point), class:C[:more|less] (the mean "
                         "share of class C over the samples)")
    xp.add_argument("--top", type=int, default=5, help="show the N most responsible images per sample and side")
    xp.add_argument("--check", type=int, default=None, metavar="K",
                    help="then replay without each checked sample's K most responsible images and without K random "
                         "ones: predicted against actual change")
    xp.add_argument("--check-samples", type=int, nargs="+", default=None, metavar="I",
                    help="with --check: the samples to check (default: all)")
    _estimate_options(xp)
    xp.add_argument("--json", action="store_true")

    x = sub.add_parser("export", help="write the training set without a removal set to a new folder (original files "
                       "for own images, PNGs + labels.csv for built-in data) with a manifest; the source is not touched")
    x.add_argument("--run", required=True)
    x.add_argument("--removal", required=True, help="CSV with an 'id' or 'path' column (or one id per line)")
    x.add_argument("--to", required=True, help="new (or empty) folder to write")
    x.add_argument("--why", default=None, help="how the removal set was chosen (kept in the manifest)")
    x.add_argument("--json", action="store_true")

    c = sub.add_parser("cleanse", help="retrain without a removal set and compare test metrics")
    c.add_argument("--run", required=True)
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--remove", help="CSV file with an 'id' column (or one id per line)")
    g.add_argument("--top-harmful", type=int, metavar="K", help="remove the K most harmful instances by --by")
    c.add_argument("--by", default="fid", help="selection method for --top-harmful: a metric, iforest, iforest-pixels, random")
    c.add_argument("--mode", default="replay", choices=["replay", "scratch"])
    _estimate_options(c)
    c.add_argument("--json", action="store_true")

    v = sub.add_parser("validate", help="estimated vs actual influence: leave-one-out (--n), or groups (--groups, LDS)")
    v.add_argument("--run", required=True)
    v.add_argument("--metric", action="append", required=True)
    v.add_argument("--n", type=int, default=200)
    v.add_argument("--groups", type=int, default=None, metavar="M",
                   help="group validation instead of leave-one-out: M random removal sets per --fraction, replayed "
                        "without them; Spearman (LDS) and Pearson of the summed estimates against the actual changes")
    v.add_argument("--fraction", type=float, nargs="+", default=[0.01, 0.05, 0.2], metavar="F",
                   help="with --groups: each set holds this fraction of the traced instances (several allowed)")
    v.add_argument("--curve", type=float, nargs="*", default=[0.01, 0.05, 0.2], metavar="F",
                   help="with --groups: also remove the top F by the estimate and F random instances (a cleansing "
                        "curve, same replay); none to skip")
    v.add_argument("--lanes", type=int, default=None, metavar="K",
                   help="replay lanes per batched pass (default: chosen by memory and model; 1 = one after another)")
    v.add_argument("--selection", default="first", choices=["first", "random"])
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--trace-epochs", type=int, default=None, metavar="K",
                   help="validate over the last K traced epochs only (the run must trace at least K)")
    _estimate_options(v)
    v.add_argument("--json", action="store_true")

    s = sub.add_parser("sweep", help="the paper's data-cleansing experiment over seeds")
    s.add_argument("--preset", default=DEFAULT_PRESET)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--methods", nargs="+", default=["fid", "is", "dloss", "iforest", "random"])
    s.add_argument("--counts", type=int, nargs="+", default=[1000, 3000, 5000])
    s.add_argument("--metric", default="fid", help="test metric to compare")
    _estimate_options(s)
    s.add_argument("--json", action="store_true")
    for command in sub.choices.values():  # also after the subcommand, as users type them
        command.add_argument("--store", default=argparse.SUPPRESS, help=STORE_HELP)
        command.add_argument("--cluster", default=argparse.SUPPRESS, metavar="tcp://HOST:8786", help=CLUSTER_HELP)
    return p


def _estimate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float64"], help="backward-pass precision")
    p.add_argument("--damping", type=float, default=0.0, help="u <- (1-d) u - J^T u (biased; off by default)")
    p.add_argument("--last-steps", type=int, default=None, help="use only the last N traced steps")
    p.add_argument("--optimizer-state", default="exact", choices=["exact", "frozen"],
                   help="exact: adjoints through Adam's/momentum's buffers; frozen: the incoming buffers as constants, "
                        "the fresh gradient differentiated through the whole update (the 2025 follow-up's "
                        "approximation, kept for comparison)")
    p.add_argument("--method", default="exact", choices=["exact", "no-propagation", "tracin"],
                   help="exact: the adjoint carried back through every traced step (ASGD-Influence); baselines from "
                        "the same trace, carried only through the generator's next update: no-propagation (the "
                        "metric's gradient at the end), tracin (the metric's gradient at each step's state)")


def _check_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", default="auto", choices=["none", "auto", "quick", "full"],
                   help="spot check after the pass: replays of random groups, the most harmful and helpful sets and "
                        "single images that measure how far the estimate can be trusted (full: the whole trace, 16 "
                        "groups and 16 singles; quick: groups and singles over the last eighth of the traced steps, "
                        "the most harmful sets over all of them; auto: full where the lanes run batched, else "
                        "quick; docs/trust.md)")


def _options(args):
    from .estimator import EstimateOptions

    if not 0 <= args.damping < 1:
        raise ConfigError("--damping must lie in [0, 1)")
    return EstimateOptions(dtype=args.dtype, damping=args.damping, last_steps=args.last_steps,
                           optimizer_state=args.optimizer_state, method=args.method)


# ---------------------------------------------------------------- progress
class _Bar:
    """tqdm on stderr, one bar per stage."""

    def __init__(self, quiet: bool = False):
        self.bar, self.stage, self.quiet, self.waiting = None, None, quiet, None

    def __call__(self, p) -> None:
        if p.stage == "waiting" and p.info.get("for") != self.waiting:  # another process writes what this one needs
            self.waiting = p.info.get("for")
            print(f"waiting for another process to finish {self.waiting}", file=sys.stderr)
        if self.quiet or not p.total:  # start-up stages without a count (loading data): nothing to draw
            return
        from tqdm import tqdm

        if self.stage != p.stage:
            self.close()
            self.stage, self.bar = p.stage, tqdm(total=p.total, desc=p.stage, file=sys.stderr, leave=False)
        self.bar.n = p.done
        post = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in p.info.items() if k in ("epoch", "loss_d", "loss_g")}
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(root: Path, spec: dict, quiet: bool) -> dict:
    """Run a job here, or follow it if another process (e.g. the app) already computes it.

    A followed job whose process dies is taken over: run here, it resumes from its checkpoints.
    """
    from .progress import Progress

    bar = _Bar(quiet)

    def show(status: dict) -> None:
        if status.get("stage") and status.get("total"):
            bar(Progress(status["stage"], int(status.get("done") or 0), int(status["total"]),
                         float(status.get("seconds") or 0.0), {}))

    try:
        for _attempt in range(3):
            result = jobs.run_job(root, spec, bar)
            if result is not None:
                return result
            key = jobs.job_key(spec)
            print(f"job {key} is already running elsewhere; following it", file=sys.stderr)
            status = jobs.wait(root, key, on_status=show)
            if status["state"] == "done":
                return status["result"]
            if status["state"] != "interrupted":
                raise InfluenceError(f"job {key} ended {status['state']}: {status.get('message', '')}")
            print(f"job {key} was interrupted; resuming it here", file=sys.stderr)
        raise InfluenceError(f"job {jobs.job_key(spec)} keeps being interrupted; run the command again")
    finally:
        bar.close()


# ---------------------------------------------------------------- commands
def cmd_train(args, root: Path) -> int:
    from .config import apply_overrides, preset
    from .data import describe, prepare, survey

    init = [f"model.init_{p}={f}" for p, f in (("g", args.init_g), ("d", args.init_d)) if f]
    rate = [f"train.trace_lr={args.trace_lr}"] if args.trace_lr else []
    raw = apply_overrides(preset(args.preset, args.seed), args.set + init + rate)
    own = raw.data.source == "folder" and raw.data.root
    found = survey(os.path.abspath(os.path.expanduser(raw.data.root))) if own else None
    cfg = prepare(raw, found)  # own images: fingerprint, name, and every auto read from the images
    if found is not None:
        print(f"your images: {describe(cfg, found)}", file=sys.stderr)
    return _train_and_report(cfg, root, args.json)


def _train_and_report(cfg, root: Path, as_json: bool) -> int:
    """The train job of cfg (here, or followed), then what it made: the numbers, the start, the traced rate."""
    from .context import RunContext

    RunContext.create(cfg, root)  # checks that need the data (batch vs data set size) before the job writes anything
    started = time.perf_counter()
    result = _run(root, {"kind": "train", "params": {"config": cfg.to_dict()}}, as_json)
    out = {"run_id": result["run_id"], "device": result["device"], "steps": result["steps"],
           "seconds": result["seconds"], "wall_seconds": time.perf_counter() - started, "test": result["test"],
           "metric_report": result.get("metric_report"), "source": _source_record(root, result["run_id"]),
           "start": result.get("start"), "trace_storage": result.get("trace_storage"),
           "trace_lr": result.get("trace_lr")}
    if as_json:
        print(json.dumps(out))
    else:
        metrics = ", ".join(f"{METRIC_LABELS[k]} {v:.4f}" for k, v in result["test"].items())
        print(f"run {out['run_id']}: {out['steps']} steps on {out['device']} in {result['seconds']:.1f} s; test {metrics}")
        if out["start"]:
            print(f"  start: {out['start']['sentence']}")
        if out["trace_storage"]:
            print(f"  trace: {out['trace_storage']['trace_mode']} ({out['trace_storage']['trace_mode_reason']})")
        _print_probe(out["trace_lr"])
        _print_report(out["metric_report"])
        _print_source(out["source"], root / out["run_id"])
    return 0


def _print_probe(probe: dict | None) -> None:
    """The trace-lr probe's table and verdict, as the app shows it."""
    if not probe:
        return
    from .tracelr import refusal

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
    if probe.get("warning"):
        print(f"  warning: {probe['warning']}")


def cmd_finetune(args, root: Path) -> int:
    from .config import preset
    from .finetune import configure

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
    return _train_and_report(cfg, root, args.json)


def _print_report(report: dict | None) -> None:
    from .honesty import reference_line, verdict_line

    if not report:
        return
    if reference_line(report):
        print(f"  {reference_line(report)}")
    for m in report["verdicts"]:
        print(f"  {verdict_line(report, m)}")


def _source_record(root: Path, run_id: str) -> dict | None:
    from .data import SOURCE_RECORD

    run = store.open_run(root, run_id)
    return run.read_json(SOURCE_RECORD) if run.exists(SOURCE_RECORD) else None


def _print_source(source: dict | None, run_dir: Path) -> None:
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
    runs = store.list_runs(root)
    foreign = store.foreign_folders(root)
    if foreign:  # on stderr: --json output stays the list of runs
        print(f"skipped {len(foreign)} folder(s) in the store that are not runs (not a run id): "
              + ", ".join(repr(f) for f in foreign), file=sys.stderr)
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
    return 0


def cmd_estimate(args, root: Path) -> int:
    from .estimator import estimate, harmful_order
    from .specs import estimate_spec
    from .validation.spotcheck import stored_check
    from .validation.trust import verdict

    options = _options(args)
    run = store.open_run(root, args.run)
    _check_metrics(run, args.metric)
    spec = estimate_spec(args.run, args.metric, options, args.check)
    _run(root, spec, args.json)
    results = estimate(run, args.metric, options)  # a cache read: the job (here or elsewhere) computed them
    from .context import RunContext, load_run_config
    from .estimator import choose_results, chosen_name, result_name
    from .honesty import if_removed, metric_report

    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, root)
    name = result_name(options, _n_params(run))
    if args.use:
        choose_results(run, name, ctx.dataset)
    in_use = chosen_name(run)
    paths = ctx.dataset.train_paths
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
                  "notes": _result_notes(r.meta), "conditions": r.meta.get("conditions"),
                  "trace_lr_warning": probe.get("warning"),
                  "result": name, "result_in_use": in_use, "trust": verdict(r, check),
                  "most_harmful": [{"id": int(i), **({"path": paths[i]} if paths else {}),
                                    "influence": float(r.scores[i])} for i in top],
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
        print(f"  {o['traced_steps']} traced steps in {o['seconds']:.1f} s; most harmful: " +
              ", ".join(f"#{t['id']}{' ' + t['path'] if 'path' in t else ''} ({t['influence']:+.3g})"
                        for t in o["most_harmful"]))
    print(f"result '{name}'" + ("" if name == in_use else f"; the table, cleanse and export use '{in_use}' "
                                 "(--use switches)"))
    print(f"table: {out[args.metric[0]]['table']} (and .csv)")
    return 0


def _result_notes(meta: dict) -> list[str]:
    """What a user must know about an influence result beyond its verdict: a player without a traced update,
    a recompute under other conditions than training's."""
    notes = [meta["unmeasured_note"]] if meta.get("unmeasured_note") else []
    return notes + list((meta.get("conditions") or {}).get("warnings", []))


def _n_params(run: store.Run) -> int:
    from .train import Trace

    return Trace.load(run).final.shape[0]


def _check_metrics(run: store.Run, metrics: list[str]) -> None:
    from .context import load_run_config
    from .metrics import check_metric

    cfg = load_run_config(run)
    for m in metrics:
        check_metric(m, cfg.is_2d)


def cmd_explain(args, root: Path) -> int:
    from .context import load_run_config
    from .objectives.samples import check_request, parse
    from .samples import export_paths, load
    from .samples import latents as chosen
    from .specs import explain_spec

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
    check = None
    if args.check is not None:
        picked = list(range(len(z))) if args.check_samples is None else args.check_samples
        check = {"samples": picked, "k": args.check, "seed": 0}
    if args.top < 1:
        raise ConfigError("--top must be at least 1")
    result = _run(root, explain_spec(args.run, samples, objective, _options(args), check), args.json)
    explanation = load(run, result["name"])
    files = {k: str(v) for k, v in export_paths(run, explanation).items() if v.exists()}
    out = _explain_summary(run, explanation, args.top, files, result.get("check"))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{out['label']}: {out['sign']}")
    print(f"  stability: {out['verdict_message']}; pass {out['seconds']:.1f} s over {out['traced_steps']} traced steps")
    for s in out["samples"]:
        head = f"sample {s['sample']}: {s['value_label']} {s['value']:.4g}"
        if "nearest_id" in s:
            head += (f"; nearest training image #{s['nearest_id']} at {s['distance_ratio']:.2f}x the typical "
                     f"neighbour distance; top-1 / top-10 carry {s['top1_share']:.1%} / {s['top10_share']:.1%} of "
                     f"|influence|" + (" - LIKELY COPY" if s["likely_copy"] else ""))
        print(head)
        for side, items in s["top"].items():
            print(f"  {side}: " + ", ".join(f"#{t['id']}{' ' + t['path'] if 'path' in t else ''} ({t['influence']})"
                                              for t in items))
    if out.get("check"):
        c = out["check"]["summary"]
        print("check: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()
                                    if not isinstance(v, list)))
    for what, path in files.items():
        print(f"{what}: {path}")
    return 0


def _explain_summary(run, explanation, top: int, files: dict, check: dict | None) -> dict:
    import numpy as np

    from .context import RunContext, load_run_config

    meta = explanation.meta
    dataset = RunContext.create(load_run_config(run), run.root).dataset
    paths = dataset.train_paths
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
            entry["top"][side] = [{"id": int(j), **({"path": paths[j]} if paths else {}),
                                   "influence": " ".join(f"{v:+.3g}" for v in explanation.matrix[rows, j])}
                                  for j in ids]
        samples.append(entry)
    return {"name": explanation.name, "label": meta["label"], "sign": meta["sign"], "verdict": meta["verdict"],
            "verdict_message": meta["verdict_message"], "seconds": meta["seconds"],
            "traced_steps": meta["traced_steps"], "samples": samples, "files": files, "check": check}


MAX_REMOVAL_FILE_BYTES = MAX_REMOVAL_BYTES  # the app's uploads have the same limit


def _read_removal_file(path: str) -> str:
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


def cmd_cleanse(args, root: Path) -> int:
    from .baselines import ranking
    from .metrics import available_metrics
    from .specs import estimate_spec
    from .context import RunContext, load_run_config
    from .train import Trace

    run = store.open_run(root, args.run)
    Trace.load(run)  # a run without a trace fails here, before anything is written
    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, root)
    if args.remove:
        text = _read_removal_file(args.remove)
        ids = read_removal_csv(text, ctx.dataset.n_train, ctx.dataset.train_paths, ctx.dataset.ambiguous_paths)
    else:
        if not 1 <= args.top_harmful < ctx.dataset.n_train:
            raise ConfigError(f"--top-harmful must lie in 1..{ctx.dataset.n_train - 1}")
        if args.by in available_metrics(cfg.is_2d):  # the estimate under its job's lock, as the app computes it
            _run(root, estimate_spec(args.run, [args.by], _options(args)), args.json)
        ids = ranking(run, ctx, args.by, seed=cfg.seed, options=_options(args))[: args.top_harmful].tolist()
    from .cleanse import check_removal_ids

    ids = check_removal_ids(ids, ctx.dataset.n_train).tolist()
    result = _run(root, {"kind": "cleanse", "params": {"run_id": args.run, "removal_ids": ids, "mode": args.mode}}, args.json)
    from .honesty import metric_report, uninformative

    verdicts = metric_report(run, ctx)["verdicts"]
    if args.json:
        print(json.dumps({**result, "metric_verdicts": verdicts}))
        return 0
    print(f"removed {result['n_removed']} instances ({result['mode']}) in {result['seconds']:.1f} s; test split:")
    for m, before in result["before"].items():
        after = result["after"][m]
        better = (after > before) == HIGHER_IS_BETTER[m]
        pred = result["predicted_change"].get(m)
        pred_s = f"  (predicted on validation: {pred:+.4f})" if pred is not None else ""
        judged = "metric uninformative: neither better nor worse" if uninformative(verdicts, m) else (
            "better" if better else "worse")
        print(f"  {METRIC_LABELS[m]:<7} {before:.4f} -> {after:.4f}  change {after - before:+.4f} {judged}{pred_s}")
    if result.get("predicted_scope"):
        print(f"  note: {result['predicted_scope']} (influence result '{result.get('predicted_from')}')")
    return 0


def cmd_export(args, root: Path) -> int:
    from .context import RunContext, load_run_config
    from .export import export_cleaned

    run = store.open_run(root, args.run)
    ctx = RunContext.create(load_run_config(run), root)
    ids = read_removal_csv(_read_removal_file(args.removal), ctx.dataset.n_train, ctx.dataset.train_paths,
                           ctx.dataset.ambiguous_paths)
    with store.folder_lock(root, args.to):  # two exports to one folder: the second waits, then finds it taken
        manifest = export_cleaned(run, ids, args.to, args.why or f"removal file {Path(args.removal).name}", ctx=ctx)
    if args.json:
        print(json.dumps(manifest))
        return 0
    print(f"exported {manifest['n_exported']} of {manifest['n_train']} training images to {args.to} "
          f"({manifest['n_removed']} removed; see manifest.json and removed.csv there)")
    left = manifest.get("not_exported", {})
    if left:
        print(f"  not exported besides: {len(left['held_out'])} held-out images (validation/test), "
              f"{len(left['unreadable'])} unreadable files, {len(left['links_not_followed'])} links (listed in "
              "manifest.json)")
    if manifest["uninformative_metrics"]:
        print(f"  metric uninformative for this run: {', '.join(METRIC_LABELS[m] for m in manifest['uninformative_metrics'])}"
              " (influences on it carry no meaning; reasons in manifest.json)")
    return 0


def cmd_validate(args, root: Path) -> int:
    run = store.open_run(root, args.run)
    _check_metrics(run, args.metric)
    options = _options(args)
    if args.groups is not None:
        return _validate_groups(args, root, options)
    spec = {"kind": "validate", "params": {"run_id": args.run, "metrics": args.metric, "n": args.n,
                                           "selection": args.selection, "seed": args.seed,
                                           "options": dataclasses.asdict(options)}}
    if args.lanes is not None:  # only then: earlier specs keep their job keys
        spec["params"]["lanes"] = args.lanes
    if args.trace_epochs is not None:  # only then: earlier specs keep their job keys
        from .validation import first_step_of_last_epochs

        first_step_of_last_epochs(run, args.trace_epochs)  # a K the run did not trace: one error line, no job
        spec["params"]["trace_epochs"] = args.trace_epochs
    result = _run(root, spec, args.json)
    from .honesty import metric_report

    verdicts = metric_report(run)["verdicts"]
    if args.json:
        print(json.dumps({m: {**a, "metric_verdict": verdicts.get(m)} for m, a in result.items()}))
        return 0
    for m, a in result.items():
        loo = "time not recorded" if a["seconds_loo"] is None else f"{a['seconds_loo']:.0f} s"
        epochs = f", last {a['trace_epochs']} traced epoch(s)" if a.get("trace_epochs") else ""
        print(f"{METRIC_LABELS[m]}: n={a['n']}{epochs} Kendall tau {a['kendall_tau']:.3f}, Pearson r {a['pearson_r']:.3f}, "
              f"Jaccard top-10% {a['jaccard_top10']:.3f} (estimate verdict: {a['verdict']}, growth "
              f"{a['growth']:.3g}; LOO {loo})")
        if verdicts.get(m, {}).get("reasons"):
            print(f"  metric uninformative: {'; '.join(verdicts[m]['reasons'])}")
        for warning in (a.get("conditions") or {}).get("warnings", []):
            print(f"  note: {warning}")
    return 0


def _validate_groups(args, root: Path, options) -> int:
    from .validation.groups import GroupSpec

    spec_ = GroupSpec(args.groups, tuple(args.fraction), args.seed, tuple(args.curve))
    spec = {"kind": "validate", "params": {"run_id": args.run, "metrics": args.metric,
                                           "groups": dataclasses.asdict(spec_), "lanes": args.lanes,
                                           "options": dataclasses.asdict(options)}}
    result = _run(root, spec, args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.groups} random groups per fraction, replayed ({result['lanes']['mode']} lanes, "
          f"{result['lanes']['lanes']} per pass; lane 0: {result['baseline']}); estimate in use: {result['result_in_use']}")
    for warning in (result.get("conditions") or {}).get("warnings", []):
        print(f"note: {warning}")
    for m in args.metric:
        label = METRIC_LABELS[m]
        for rname, per_metric in result["scores"].items():
            for row in per_metric[m]:
                print(f"{label} [{rname}] F={row['fraction']:g}: LDS (Spearman) {row['spearman_valid']:.3f}, Pearson "
                      f"{row['pearson_valid']:.3f}, slope {row['slope_valid']:.3g} (actual on predicted; validation "
                      f"split, as estimated); test split: Spearman {row['spearman_test']:.3f}")
        for row in result["curve"][m]:
            print(f"{label} curve, {row['kind']} {row['size']}: predicted {row['predicted']:+.4g}, actual "
                  f"{row['actual_valid']:+.4g} (validation), {row['actual_test']:+.4g} (test)")
    return 0


def cmd_sweep(args, root: Path) -> int:
    import pandas as pd

    from .config import apply_overrides, preset
    from .context import RunContext
    from .data import prepare
    from .specs import sweep_spec

    base = prepare(apply_overrides(preset(args.preset, 0), args.set))
    n_train = RunContext.create(base, root).dataset.n_train
    spec = sweep_spec(base, args.seeds, args.methods, args.counts, args.metric, n_train, _options(args))
    table = pd.DataFrame(_run(root, spec, args.json)["table"])
    if args.json:
        print(table.to_json(orient="records"))
    else:
        print(f"change of test {METRIC_LABELS[args.metric]} after cleansing vs no removal "
              f"({'negative' if not HIGHER_IS_BETTER[args.metric] else 'positive'} = improvement):")
        print(table.to_string(index=False))
    return 0


COMMANDS = {"train": cmd_train, "finetune": cmd_finetune, "runs": cmd_runs, "estimate": cmd_estimate,
            "explain": cmd_explain, "cleanse": cmd_cleanse, "validate": cmd_validate, "sweep": cmd_sweep,
            "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    allocator.tune_this_process()  # every command runs the engine here or waits on a job that does
    try:
        args = build_parser().parse_args(argv)
        root = store.store_root(args.store)
        if args.cluster:  # read by the execution layer of the job, here or in the job's own process
            from .execution import ENV_CLUSTER

            os.environ[ENV_CLUSTER] = args.cluster
        return COMMANDS[args.command](args, root)
    except Cancelled as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except InfluenceError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2


def _one_line(message: str) -> str:
    """The message with newlines and other unprintable characters (often echoed user input) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message.strip())


if __name__ == "__main__":
    sys.exit(main())
