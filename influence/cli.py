"""Command line: gan-influence train | runs | estimate | cleanse | validate | sweep.

Bad input prints one line starting with 'error:' and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

from . import jobs, store
from .errors import Cancelled, ConfigError, InfluenceError
from .metrics import HIGHER_IS_BETTER, METRIC_LABELS, sign_sentence

SIGN_HELP = (
    "Influence = predicted change of the metric if the instance is removed. "
    "Harmful = removal improves the metric: positive for IS and ALL, negative for FID and D-loss."
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    from .config import PRESETS, describe_fields

    keys = "\n".join(f"  {k} (default {v!r}): {h}" for k, v, h in describe_fields())
    p = _Parser(prog="gan-influence", description="Influence estimation for GANs (ASGD-Influence). " + SIGN_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="run store folder (env GAN_INFLUENCE_STORE, default ./runs)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN and record its trace", epilog="config keys for --set:\n" + keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESETS)}")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--json", action="store_true", help="print a JSON summary at the end")

    r = sub.add_parser("runs", help="list cached runs")
    r.add_argument("--json", action="store_true")

    e = sub.add_parser("estimate", help="estimate the influence of every training instance", description=SIGN_HELP)
    e.add_argument("--run", required=True)
    e.add_argument("--metric", action="append", required=True, help="is, fid, dloss (images) or all, dloss (2D); repeatable")
    _estimate_options(e)
    e.add_argument("--top", type=int, default=5, help="show the N most harmful instances per metric")
    e.add_argument("--json", action="store_true")

    c = sub.add_parser("cleanse", help="retrain without a removal set and compare test metrics")
    c.add_argument("--run", required=True)
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--remove", help="CSV file with an 'id' column (or one id per line)")
    g.add_argument("--top-harmful", type=int, metavar="K", help="remove the K most harmful instances by --by")
    c.add_argument("--by", default="fid", help="selection method for --top-harmful: a metric, iforest, iforest-pixels, random")
    c.add_argument("--mode", default="replay", choices=["replay", "scratch"])
    _estimate_options(c)
    c.add_argument("--json", action="store_true")

    v = sub.add_parser("validate", help="estimated vs actual (leave-one-out) influence")
    v.add_argument("--run", required=True)
    v.add_argument("--metric", action="append", required=True)
    v.add_argument("--n", type=int, default=200)
    v.add_argument("--selection", default="first", choices=["first", "random"])
    v.add_argument("--seed", type=int, default=0)
    _estimate_options(v)
    v.add_argument("--json", action="store_true")

    s = sub.add_parser("sweep", help="the paper's data-cleansing experiment over seeds")
    s.add_argument("--preset", default="quick")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--methods", nargs="+", default=["fid", "is", "dloss", "iforest", "random"])
    s.add_argument("--counts", type=int, nargs="+", default=[1000, 3000, 5000])
    s.add_argument("--metric", default="fid", help="test metric to compare")
    _estimate_options(s)
    s.add_argument("--json", action="store_true")
    return p


def _estimate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float64"], help="backward-pass precision")
    p.add_argument("--damping", type=float, default=0.0, help="u <- (1-d) u - J^T u (biased; off by default)")
    p.add_argument("--last-steps", type=int, default=None, help="use only the last N traced steps")


def _options(args):
    from .estimate import EstimateOptions

    if not 0 <= args.damping < 1:
        raise ConfigError("--damping must lie in [0, 1)")
    return EstimateOptions(dtype=args.dtype, damping=args.damping, last_steps=args.last_steps)


# ---------------------------------------------------------------- progress
class _Bar:
    """tqdm on stderr, one bar per stage."""

    def __init__(self, quiet: bool = False):
        self.bar, self.stage, self.quiet = None, None, quiet

    def __call__(self, p) -> None:
        if self.quiet:
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

    cfg = apply_overrides(preset(args.preset, args.seed), args.set)
    from .context import RunContext

    RunContext.create(cfg, root)  # checks that need the data (batch vs data set size) before the job writes anything
    started = time.perf_counter()
    result = _run(root, {"kind": "train", "params": {"config": cfg.to_dict()}}, args.json)
    out = {"run_id": result["run_id"], "device": result["device"], "steps": result["steps"],
           "seconds": result["seconds"], "wall_seconds": time.perf_counter() - started, "test": result["test"]}
    if args.json:
        print(json.dumps(out))
    else:
        metrics = ", ".join(f"{METRIC_LABELS[k]} {v:.4f}" for k, v in result["test"].items())
        print(f"run {out['run_id']}: {out['steps']} steps on {out['device']} in {result['seconds']:.1f} s; test {metrics}")
    return 0


def cmd_runs(args, root: Path) -> int:
    runs = store.list_runs(root)
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
    from .estimate import estimate, harmful_order

    options = _options(args)
    run = store.open_run(root, args.run)
    _check_metrics(run, args.metric)
    spec = {"kind": "estimate", "params": {"run_id": args.run, "metrics": args.metric, "options": dataclasses.asdict(options)}}
    _run(root, spec, args.json)
    results = estimate(run, args.metric, options)  # a cache read: the job (here or elsewhere) computed them
    out = {}
    for m, r in results.items():
        top = harmful_order(r)[: args.top]
        out[m] = {"sign": sign_sentence(m), "verdict": r.meta["verdict"], "verdict_message": r.meta["verdict_message"],
                  "growth": r.meta["growth"], "seconds": r.meta["seconds"], "traced_steps": r.meta["traced_steps"],
                  "most_harmful": [{"id": int(i), "influence": float(r.scores[i])} for i in top],
                  "table": str(run.path("influence/table.parquet"))}
    if args.json:
        print(json.dumps(out))
        return 0
    for m, o in out.items():
        print(f"{METRIC_LABELS[m]}: {o['sign']}")
        print(f"  verdict: {o['verdict_message']}")
        print(f"  {o['traced_steps']} traced steps in {o['seconds']:.1f} s; most harmful: " +
              ", ".join(f"#{t['id']} ({t['influence']:+.3g})" for t in o["most_harmful"]))
    print(f"table: {out[args.metric[0]]['table']} (and .csv)")
    return 0


def _check_metrics(run: store.Run, metrics: list[str]) -> None:
    from .context import load_run_config
    from .metrics import check_metric

    cfg = load_run_config(run)
    for m in metrics:
        check_metric(m, cfg.is_2d)


def read_removal_csv(text: str, n_train: int | None = None) -> list[int]:
    """Ids from a CSV with an 'id' column, or one id per line. ConfigError on anything else."""
    try:  # newline="": csv itself splits lines, so old Mac '\r' endings are lines, not an error
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row and any(c.strip() for c in row)]
    except csv.Error as e:
        raise ConfigError(f"the removal CSV cannot be parsed: {e}") from None
    rows = [row for row in rows if not row[0].lstrip().startswith("#")]
    if not rows:
        raise ConfigError("the removal CSV is empty")
    header = [c.strip().lower() for c in rows[0]]
    column = header.index("id") if "id" in header else None
    if column is None and len(header) > 1:
        raise ConfigError("the removal CSV needs an 'id' column (or one id per line)")
    body = rows[1:] if column is not None else rows
    ids = []
    for i, row in enumerate(body, start=2 if column is not None else 1):
        cell = row[column or 0].strip() if len(row) > (column or 0) else ""
        try:
            value = int(cell)
        except ValueError:
            raise ConfigError(f"removal CSV line {i}: '{cell[:40]}' is not an integer id") from None
        ids.append(value)
    if not ids:
        raise ConfigError("the removal CSV has a header but no ids")
    if n_train is not None:
        for value in ids:  # before numpy sees them: a huge id would overflow int64
            if not 0 <= value < n_train:
                shown = str(value) if abs(value) < 10**12 else str(value)[:15] + "..."
                raise ConfigError(f"removal id {shown} is outside the training set (ids 0..{n_train - 1})")
        from .cleanse import check_removal_ids

        check_removal_ids(ids, n_train)
    return ids


MAX_REMOVAL_FILE_BYTES = 64 * 2**20


def _read_removal_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_REMOVAL_FILE_BYTES + 1)
        if len(data) > MAX_REMOVAL_FILE_BYTES:
            raise ConfigError(f"removal file '{path}' is larger than {MAX_REMOVAL_FILE_BYTES // 2**20} MB")
        return data.decode()
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read removal file '{path}': {e}") from None


def cmd_cleanse(args, root: Path) -> int:
    from .baselines import ranking
    from .context import RunContext, load_run_config
    from .train import Trace

    run = store.open_run(root, args.run)
    Trace.load(run)  # a run without a trace fails here, before anything is written
    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, root)
    if args.remove:
        text = _read_removal_file(args.remove)
        ids = read_removal_csv(text, ctx.dataset.n_train)
    else:
        if not 1 <= args.top_harmful < ctx.dataset.n_train:
            raise ConfigError(f"--top-harmful must lie in 1..{ctx.dataset.n_train - 1}")
        ids = ranking(run, ctx, args.by, seed=cfg.seed, options=_options(args))[: args.top_harmful].tolist()
    from .cleanse import check_removal_ids

    ids = check_removal_ids(ids, ctx.dataset.n_train).tolist()
    result = _run(root, {"kind": "cleanse", "params": {"run_id": args.run, "removal_ids": ids, "mode": args.mode}}, args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"removed {result['n_removed']} instances ({result['mode']}) in {result['seconds']:.1f} s; test split:")
    for m, before in result["before"].items():
        after = result["after"][m]
        better = (after > before) == HIGHER_IS_BETTER[m]
        pred = result["predicted_change"].get(m)
        pred_s = f"  (predicted on validation: {pred:+.4f})" if pred is not None else ""
        print(f"  {METRIC_LABELS[m]:<7} {before:.4f} -> {after:.4f}  change {after - before:+.4f} "
              f"{'better' if better else 'worse'}{pred_s}")
    return 0


def cmd_validate(args, root: Path) -> int:
    run = store.open_run(root, args.run)
    _check_metrics(run, args.metric)
    options = _options(args)
    spec = {"kind": "validate", "params": {"run_id": args.run, "metrics": args.metric, "n": args.n,
                                           "selection": args.selection, "seed": args.seed,
                                           "options": dataclasses.asdict(options)}}
    result = _run(root, spec, args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    for m, a in result.items():
        loo = "time not recorded" if a["seconds_loo"] is None else f"{a['seconds_loo']:.0f} s"
        print(f"{METRIC_LABELS[m]}: n={a['n']} Kendall tau {a['kendall_tau']:.3f}, Pearson r {a['pearson_r']:.3f}, "
              f"Jaccard top-10% {a['jaccard_top10']:.3f} (estimate verdict: {a['verdict']}; LOO {loo})")
    return 0


def cmd_sweep(args, root: Path) -> int:
    import dataclasses as dc

    from .config import apply_overrides, preset
    from .validate import sweep

    base = apply_overrides(preset(args.preset, 0), args.set)
    configs = [dc.replace(base, seed=s) for s in args.seeds]
    table = sweep(configs, root, args.methods, args.counts, args.metric, _options(args), progress=_Bar(args.json))
    if args.json:
        print(table.to_json(orient="records"))
    else:
        print(f"change of test {METRIC_LABELS[args.metric]} after cleansing vs no removal "
              f"({'negative' if not HIGHER_IS_BETTER[args.metric] else 'positive'} = improvement):")
        print(table.to_string(index=False))
    return 0


COMMANDS = {"train": cmd_train, "runs": cmd_runs, "estimate": cmd_estimate, "cleanse": cmd_cleanse,
            "validate": cmd_validate, "sweep": cmd_sweep}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        root = store.store_root(args.store)
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
