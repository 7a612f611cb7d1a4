"""The argument parser: every command, its options and their help (signs in words)."""

from __future__ import annotations

import argparse

from ..errors import ConfigError

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


RUN_HELP = "the run's id (gan-influence runs lists them)"
JSON_HELP = "print the result as JSON instead of text"
BY_HELP = "selection method for --top-harmful: a metric, iforest, iforest-pixels, random"
CLUSTER_HELP = ("run leave-one-out replays, sweep seeds and cleanses on this Dask scheduler (env GAN_INFLUENCE_CLUSTER; "
                "default: this machine)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    from ..config import DEFAULT_PRESET, PRESETS, describe_fields

    keys = "\n".join(f"  {k} (default {v!r}): {h}" for k, v, h in describe_fields())
    p = _Parser(prog="gan-influence", description="Influence estimation for GANs (ASGD-Influence). " + SIGN_HELP,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help=STORE_HELP)
    p.add_argument("--cluster", metavar="tcp://HOST:8786", help=CLUSTER_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN and record its trace", epilog="config keys for --set:\n" + keys,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    t.add_argument("--config", metavar="FILE", help="train a recorded config again: a run's config.json, from this or "
                   "another store or machine. The same config gives the same run id and, at the same torch thread "
                   "count and device, the same run bit for bit. --seed and --set still apply (e.g. --set "
                   "data.root=PATH where its images lie here); its images' fingerprint and pretrained files' "
                   "checksums must be the recorded ones")
    t.add_argument("--seed", type=int, default=None, help="default 0, or the config's (--config)")
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
    r.add_argument("--json", action="store_true", help=JSON_HELP)

    rl = sub.add_parser("relocate", help="own images moved: point the runs trained on them to their new place (the "
                        "files must be unchanged: their fingerprint is checked)")
    rl.add_argument("--images", required=True, metavar="PATH", help="the folder or .zip where the images are now")
    rl.add_argument("--json", action="store_true", help=JSON_HELP)

    e = sub.add_parser("estimate", help="estimate the influence of every training instance", description=SIGN_HELP)
    e.add_argument("--run", required=True, help=RUN_HELP)
    e.add_argument("--metric", action="append", required=True, help="is, fid, dloss (images) or all, dloss (2D); repeatable")
    _estimate_options(e)
    _check_option(e)
    e.add_argument("--top", type=int, default=5, help="show the N most harmful instances per metric")
    e.add_argument("--use", action="store_true", help="make this result (these options) the one the table, cleanse "
                   "and export use; without it the result in use stays as it is (the first computed, or chosen)")
    e.add_argument("--json", action="store_true", help=JSON_HELP)

    xp = sub.add_parser("explain", help="why did the GAN make these samples? influence of every training image on "
                        "chosen generated samples (or a class share), in one pass", description=EXPLAIN_HELP)
    xp.add_argument("--run", required=True, help=RUN_HELP)
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
    xp.add_argument("--json", action="store_true", help=JSON_HELP)

    x = sub.add_parser("export", help="write the training set without a removal set to a new folder (original files "
                       "for own images, PNGs + labels.csv for built-in data) with a manifest; the source is not touched")
    x.add_argument("--run", required=True, help=RUN_HELP)
    xg = x.add_mutually_exclusive_group(required=True)
    xg.add_argument("--removal", help="CSV with an 'id' or 'path' column (or one id per line)")
    xg.add_argument("--top-harmful", type=int, metavar="K", help="leave out the K most harmful instances by --by "
                    "(the set `cleanse --top-harmful K` replays without)")
    x.add_argument("--by", default="fid", help=BY_HELP)
    x.add_argument("--to", required=True, help="new (or empty) folder to write")
    x.add_argument("--why", default=None, help="how the removal set was chosen (kept in the manifest; default: the "
                   "file's name, or the ranking)")
    _estimate_options(x)
    x.add_argument("--json", action="store_true", help=JSON_HELP)

    c = sub.add_parser("cleanse", help="retrain without a removal set and compare test metrics")
    c.add_argument("--run", required=True, help=RUN_HELP)
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--remove", help="CSV file with an 'id' column (or one id per line)")
    g.add_argument("--top-harmful", type=int, metavar="K", help="remove the K most harmful instances by --by")
    c.add_argument("--by", default="fid", help=BY_HELP)
    c.add_argument("--mode", default="replay", choices=["replay", "scratch"],
                   help="replay: the traced steps again without the set (same start, batches and z: what the "
                        "estimate predicts); scratch: every epoch again with the same seed (slower)")
    c.add_argument("--against-random", type=int, default=None, metavar="M",
                   help="also replay M random sets of the same size (a group validation of the run's estimated "
                        "metrics; stored ones are read back) and rank the set's change among theirs: the chance that "
                        "a random set does as well (replay mode)")
    _estimate_options(c)
    c.add_argument("--json", action="store_true", help=JSON_HELP)

    v = sub.add_parser("validate", help="estimated vs actual influence: leave-one-out (--n), or groups (--groups, LDS)")
    v.add_argument("--run", required=True, help=RUN_HELP)
    v.add_argument("--metric", action="append", required=True, help="is, fid, dloss (images) or all, dloss (2D); "
                   "repeatable")
    v.add_argument("--n", type=int, default=200, help="leave-one-out: how many traced instances to replay without "
                   "(one replay each; at least 5; the paper uses 200)")
    v.add_argument("--groups", type=int, default=None, metavar="M",
                   help="group validation instead of leave-one-out: M random removal sets per --fraction (at least "
                        "5), replayed without them; Spearman (LDS) and Pearson of the summed estimates against the "
                        "actual changes")
    v.add_argument("--fraction", type=float, nargs="+", default=[0.01, 0.05, 0.2], metavar="F",
                   help="with --groups: each set holds this fraction of the traced instances (several allowed)")
    v.add_argument("--curve", type=float, nargs="*", default=[0.01, 0.05, 0.2], metavar="F",
                   help="with --groups: also remove the top F by the estimate and F random instances (a cleansing "
                        "curve, same replay); none to skip")
    v.add_argument("--lanes", type=int, default=None, metavar="K",
                   help="replay lanes per batched pass (default: chosen by memory and model; 1 = one after another)")
    v.add_argument("--selection", default="first", choices=["first", "random"],
                   help="leave-one-out: the lowest traced ids (the paper's protocol) or random ones (with --seed)")
    v.add_argument("--seed", type=int, default=0, help="draws the random instances (--selection random) or the "
                   "random sets (--groups)")
    v.add_argument("--trace-epochs", type=int, default=None, metavar="K",
                   help="validate over the last K traced epochs only (the run must trace at least K)")
    _estimate_options(v)
    v.add_argument("--json", action="store_true", help=JSON_HELP)

    s = sub.add_parser("sweep", help="the paper's data-cleansing experiment over seeds")
    s.add_argument("--preset", default=DEFAULT_PRESET, help="the recipe each seed trains")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="one run per seed; the t-tests compare methods over them (2 to 50)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every run (repeatable)")
    s.add_argument("--methods", nargs="+", default=["fid", "is", "dloss", "iforest", "random"],
                   help="how to choose the instances removed: a metric's most harmful (fid, is, dloss), iforest "
                        "or iforest-pixels (Isolation Forest on features or pixels), random")
    s.add_argument("--counts", type=int, nargs="+", default=[1000, 3000, 5000],
                   help="how many instances each method removes (one cleanse each)")
    s.add_argument("--metric", default="fid", help="test metric to compare")
    _estimate_options(s)
    s.add_argument("--json", action="store_true", help=JSON_HELP)
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
                        "groups, 16 random singles and the 8 largest |scores|; quick: groups and singles over the "
                        "last eighth of the traced steps, the most harmful sets over all of them; auto: full where "
                        "the lanes run batched, else quick; docs/trust.md)")


def estimate_options(args):
    from ..estimator import EstimateOptions

    if not 0 <= args.damping < 1:
        raise ConfigError("--damping must lie in [0, 1)")
    return EstimateOptions(dtype=args.dtype, damping=args.damping, last_steps=args.last_steps,
                           optimizer_state=args.optimizer_state, method=args.method)
