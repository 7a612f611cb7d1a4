"""Trust calibration: for each case, the spot check's verdict beside full validation (LDS and leave-one-out).

    .venv/bin/python bench/trust.py --store DIR --case quick --seeds 0 1 2 [--threads 1]
    .venv/bin/python bench/trust.py --store DIR --case mnist-adam-relu-f32 --seeds 7 --loo 200
    .venv/bin/python bench/trust.py --store DIR --case dcgan32-folder --groups 16 --fractions 0.05 --loo 16
    .venv/bin/python bench/trust.py --store DIR --case dcgan32-folder --groups 0 --loo 50   # leave-one-out only
    .venv/bin/python bench/trust.py --store DIR --runs RUN_ID ... --label NAME [--metrics fid dloss] --loo 50
    .venv/bin/python bench/trust.py --store DIR --report          # the tables of everything measured so far
    .venv/bin/python bench/trust.py --report docs/results/trust   # the same over the committed result files

Per case and seed (each step cached in the store, so an interrupted campaign resumes):
1. train the run (the case's preset and overrides);
2. the influence pass (exact adjoints) with its quick spot check: its cost against the pass, and its verdict;
3. group validation (`validate --groups 32 --fraction 0.01 0.05 0.2`, curve at the same fractions);
4. leave-one-out of --loo random traced instances (the paper's protocol; Kendall tau, Pearson r).
dcgan32-folder is bench/dcgan32_e2e.py's run (DCGAN-32 on bench/own_images.py's 5,000 coloured shapes, written
once to <store>/_images-shapes5000; 1 epoch, then 1 traced at the preset's 2e-5; FID on autoencoder features).
Each finished case-seed writes <store>/_trust/<case>-s<seed>.json; --report prints the calibration table
(docs/trust.md) and the LDS table (docs/benchmarks.md) from those files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from own_images import shapes_folder  # noqa: E402

from influence import allocator, store  # noqa: E402
from influence.config import apply_overrides, preset  # noqa: E402
from influence.data import prepare  # noqa: E402
from influence.estimator import EstimateOptions, estimate, result_name  # noqa: E402
from influence.models import has_kinks  # noqa: E402
from influence.train import Trace, train  # noqa: E402
from influence.validation import validate  # noqa: E402
from influence.validation.groups import GroupSpec, validate_groups  # noqa: E402
from influence.validation.spotcheck import spot_check  # noqa: E402
from influence.validation import trust  # noqa: E402
from influence.validation.trust import verdict  # noqa: E402

# case -> (preset, overrides, metrics); the first metric is the one the tables lead with
CASES: dict[str, tuple[str, list[str], list[str]]] = {
    "quick": ("quick", [], ["fid", "is"]),
    "mnist-adam": ("mnist-adam", [], ["fid", "is"]),
    "mnist-adam-relu-f32": ("mnist-adam", ["model.activation=default", "train.dtype=float32"], ["fid", "is"]),
    # the two halves of the ReLU/float32 cap's condition apart (docs/trust.md): kinks in float64, smooth in float32
    # (the mnist-adam preset trained in float64 until 2026-12-05: the result files mnist-adam-s*.json are of that)
    "mnist-adam-relu": ("mnist-adam", ["model.activation=default", "train.dtype=float64"], ["fid", "is"]),
    "mnist-adam-f32": ("mnist-adam", ["train.dtype=float32"], ["fid", "is"]),
    "mnist-adam-f64": ("mnist-adam", ["train.dtype=float64"], ["fid", "is"]),
    # out of sample for the rules (2026-12-06): quick traced at 3.2e-3, the rate trace_lr's replay refused (its most
    # harmful 5% moved FID by 0.21x the prediction at growth 2.2) and whose check read groups indicative
    "quick-lr3e-3": ("quick", ["train.lr_schedule=20:0.0032:0.0032"], ["fid", "is"]),
    # ... and mnist-adam traced at training's 4e-4 (the rung its probe refuses: the walk passed 10x after 68 steps)
    "mnist-adam-lr4e-4": ("mnist-adam", ["train.lr_schedule=10:0.0004:0.0004"], ["fid", "is"]),
    # ... and traced at the probe's own pick (1.26e-4 on seed 0)
    "mnist-adam-auto": ("mnist-adam", ["train.trace_lr=auto"], ["fid", "is"]),
    "toy2d": ("toy2d", [], ["all"]),
    "toy2d-adam": ("toy2d-adam", [], ["all"]),
    "paper-cleansing": ("paper-cleansing", [], ["fid"]),
    # ... traced at the probe's pick (3.2e-4 on seeds 0-2 at 1 thread, growth 1.00-1.20; the schedule's 1e-3: 520-6.9e5)
    "paper-cleansing-auto": ("paper-cleansing", ["train.trace_lr=auto"], ["fid"]),
    # ... traced at that pick set by hand (the probe's 24-44 minutes left out): single images by leave-one-out
    "paper-cleansing-lr3.2e-4": ("paper-cleansing", ["train.lr_schedule=20:0.00032:0.00032"], ["fid"]),
    "dcgan32-folder": ("dcgan32", ["data.source=folder", "data.labels=none", "data.color=rgb", "data.n_train=none",
                                   "data.image_size=32", "train.epochs=2", "train.lr_schedule=2:0.00002:0.00002",
                                   "eval.feature=autoencoder", "eval.n_valid_z=500", "eval.n_test_z=500"],
                       ["fid", "dloss"]),
}
SHAPES = 5000  # the folder cases' images (bench/own_images.py), data.root set by run_case


ALTERNATIVES = {"no-propagation": EstimateOptions(method="no-propagation"), "tracin": EstimateOptions(method="tracin"),
                "frozen": EstimateOptions(optimizer_state="frozen")}


def run_case(root: Path, case: str, seed: int, loo: int, groups: int, fractions: list[float], extra: list[str],
             level: str = "auto", recheck: bool = False, alternatives: bool = False, reuse: Path | None = None,
             workers: int | None = None) -> dict:
    name, overrides, metrics = CASES[case]
    if "data.source=folder" in overrides:
        images = root / f"_images-shapes{SHAPES}"
        if not images.exists():  # written whole, then renamed: a killed bench leaves no half folder behind
            shapes_folder(images.with_suffix(".partial"), SHAPES)
            images.with_suffix(".partial").rename(images)
        overrides = [*overrides, f"data.root={images}"]
    cfg = prepare(apply_overrides(preset(name, seed), overrides + extra))  # own images: their fingerprint
    t = time.perf_counter()
    run = train(cfg, root)
    return assess(root, run, case, seed, metrics, loo, groups, fractions, level, recheck, alternatives,
                  train_seconds=time.perf_counter() - t, reuse=reuse, workers=workers)


def run_given(root: Path, run_id: str, label: str, metrics: list[str], loo: int, groups: int, fractions: list[float],
              level: str = "auto", recheck: bool = False, alternatives: bool = False, reuse: Path | None = None,
              workers: int | None = None) -> dict:
    """A run already in the store (a fine-tune, a user's own GAN) as a case named `label`."""
    run = store.open_run(root, run_id)
    seed = run.read_json("config.json")["seed"]
    return assess(root, run, label, seed, metrics, loo, groups, fractions, level, recheck, alternatives,
                  train_seconds=None, reuse=reuse, workers=workers)


def assess(root: Path, run: store.Run, case: str, seed: int, metrics: list[str], loo: int, groups: int,
           fractions: list[float], level: str, recheck: bool, alternatives: bool, train_seconds: float | None,
           reuse: Path | None = None, workers: int | None = None) -> dict:
    """The pass, its spot check, group validation and leave-one-out on one run; <root>/_trust/<case>-s<seed>.json.
    reuse: a folder of earlier result files whose full validation (groups, leave-one-out) is taken instead of
    replayed again when its file for this case and seed was of the same run (its id, and its test metrics to 1e-9):
    those replays do not depend on the check."""
    out = {"case": case, "seed": seed, "run_id": run.run_id, "metrics": metrics, "threads": torch.get_num_threads(),
           "train_seconds": train_seconds, "test": run.read_json("summary.json")["test"]}
    earlier = _reusable(reuse, case, seed, out)
    if earlier:
        out.update({k: earlier[k] for k in ("groups", "loo", "loo_named", "named") if k in earlier},
                   validation_from=str(reuse / f"{case}-s{seed}.json"))
        groups = loo = 0
        alternatives = False
    results = estimate(run, metrics, EstimateOptions())
    if recheck:  # a check stored by an earlier design of the check goes; the replays of validation stay
        run.forget("influence/_checks/")
        for p in run.path("influence/_checks").iterdir() if run.exists("influence/_checks") else []:
            p.unlink()
    check = spot_check(run, metrics, EstimateOptions(), level)
    # metrics estimated together share one pass, and each records its share of it (the pass's seconds / metrics)
    out["pass_seconds"] = sum(r.meta["seconds"] for r in results.values())
    out["check"] = {"seconds": check["seconds"], "replay_seconds": check["replay_seconds"],
                    "lanes": check["lanes"], "baseline": check["baseline"], "window_steps": check["window_steps"],
                    "level": check["level"], "level_reason": check.get("level_reason"),
                    "kinked": check["kinked"]}
    out["per_metric"] = {m: {"growth": r.meta["growth"], "stability": r.verdict, "trust": verdict(r, check),
                             "agreement": check["per_metric"][m]} for m, r in results.items()}
    named = {"exact": EstimateOptions()}
    if alternatives:  # the baselines (and the follow-up's frozen Adam state) scored on the same replays
        optimizer = run.read_json("config.json")["train"]["optimizer"]
        for label, options in ALTERNATIVES.items():
            if label != "frozen" or optimizer in ("adam", "adamw"):
                estimate(run, metrics, options)
                named[label] = options
    if groups:
        g = validate_groups(run, metrics, GroupSpec(groups, tuple(fractions), 0, tuple(fractions)),
                            workers=workers)
        out["groups"] = {k: g[k] for k in ("lanes", "baseline", "replay_seconds", "scores", "curve", "result_in_use")}
    if loo:
        acc = validate(run, metrics, n=loo, selection="random", seed=0)
        out["loo"] = {m: a.as_dict() for m, a in acc.items()}
        out["loo_named"] = {label: {m: a.kendall_tau for m, a in validate(run, metrics, n=loo, selection="random",
                                                                          seed=0, options=options).items()}
                            for label, options in named.items()}  # the same replays, each estimate ranked
    if not earlier:
        out["named"] = {label: result_name(options, Trace.load(run).final.shape[0]) for label, options in named.items()}
    store.write_json(root / "_trust" / f"{case}-s{seed}.json", out)
    return out


def _reusable(reuse: Path | None, case: str, seed: int, out: dict) -> dict | None:
    path = reuse / f"{case}-s{seed}.json" if reuse else None
    if path is None or not path.exists():
        return None
    earlier = json.loads(path.read_text())
    # the same weights: the same id and test metrics (FID's last digits follow the evaluating thread count)
    same = earlier["run_id"] == out["run_id"] and earlier["test"].keys() == out["test"].keys() and all(
        math.isclose(earlier["test"][m], out["test"][m], rel_tol=1e-9) for m in out["test"])
    if not same:
        print(f"{path}: another run ({earlier['run_id']}, test {earlier['test']}); its validation is not reused",
              file=sys.stderr)
        return None
    return earlier


def full_levels(r: dict, m: str) -> tuple[tuple[str, list[str]], tuple[str, list[str]]]:
    """The levels full validation gives, by the rules the check uses (docs/trust.md), each with the levels its own
    95% interval allows: groups from the LDS of the random groups at the check's fraction (5%) and from removing
    the 5% most harmful (the cleansing curve: the metric must move the predicted way, for trustworthy within
    1/3..3 of the prediction); single images from leave-one-out tau. ("not measured", []) where it did not run."""
    absent = ("not measured", [])
    singles = groups = absent
    if "loo" in r:
        loo = {"singles": {"kendall_tau": r["loo"][m]["kendall_tau"], "n": r["loo"][m]["n"]}}
        singles = (trust.single_level(loo), trust.single_levels(loo))
    row = next((row for row in r["groups"]["scores"][r["groups"]["result_in_use"]][m]
                if abs(row["fraction"] - 0.05) < 1e-9), None) if "groups" in r else None
    top = next((row for row in r["groups"]["curve"][m] if row["kind"] == "top" and abs(row["fraction"] - 0.05) < 1e-9),
               None) if "groups" in r else None
    if row is not None and top is not None:  # the check's own rule, fed the whole trace's LDS and harmful set
        lds = {"random_groups": {"spearman": row["spearman_valid"], "n": row["groups"]},
               "harmful_set": {"predicted": top["predicted"], "actual": top["actual_valid"]}}
        groups = (trust.group_level(lds), trust.group_levels(lds))
    return groups, singles


def _kinked(r: dict) -> bool:
    """Whether a result file's run has ReLU or LeakyReLU units (what caps a quick check). Files written before the
    bench recorded it: from the case's preset, or for runs given by id from the stored verdict's cap."""
    if "kinked" in r["check"]:
        return r["check"]["kinked"]
    if r["case"] in CASES:
        name, overrides, _ = CASES[r["case"]]
        return has_kinks(apply_overrides(preset(name, r["seed"]), overrides).model)
    return any("ReLU" in pm["trust"]["summary"] for pm in r["per_metric"].values())


def _lds_cells(lds: dict[float, float]) -> str:
    """LDS at the tables' three fractions, "-" where a fraction was not measured (a file may hold only some)."""
    if not lds:
        return "-"
    cell = {round(f, 6): f"{v:.3f}" for f, v in lds.items()}
    return " / ".join(cell.get(f, "-") for f in (0.01, 0.05, 0.2))


def report(folder: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    others = [r for r in rows if "case" not in r]  # e.g. a full check's timing kept beside the case files
    rows = [r for r in rows if "case" in r]
    if others:
        print(f"({len(others)} file(s) in {folder} are not case results and were left out)\n")
    print("| case | seed | metric | growth | check (level, cost / pass) | check: groups / singles | the check's 95% "
          "intervals allow | full validation: groups / singles | its 95% intervals allow | agree | within the check's "
          "intervals | the intervals meet | LDS F=1% / 5% / 20% (valid) | LOO tau (n) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    agree = within = overlap = total = 0
    for r in rows:
        for m in r["metrics"]:
            pm = r["per_metric"][m]
            lds = ({row["fraction"]: row["spearman_valid"] for row in r["groups"]["scores"][r["groups"]["result_in_use"]][m]}
                   if "groups" in r else {})
            loo = r.get("loo", {}).get(m)
            # the check's levels by today's rules (trust.judged) from its stored measurements; the stored ones beside
            (group, group_allowed), (single, single_allowed), _ = trust.judged(
                pm["agreement"], r["check"].get("level", "quick"), pm["growth"], _kinked(r))
            check, allowed = (group, single), [group_allowed, single_allowed]
            stored = (pm["trust"]["groups"], pm["trust"]["singles"])
            full_ranges = full_levels(r, m)
            full = [level for level, _ in full_ranges]
            measured = [(c, f) for c, f in zip(check, full) if f != "not measured"]
            if not measured:
                continue
            same = all(c == f for c, f in measured)  # judged on the levels full validation measured
            inside = all(f == "not measured" or f in a for f, a in zip(full, allowed))
            # both measurements are samples: do the levels their intervals allow meet at all?
            meet = all(f == "not measured" or set(a) & set(fr) for f, a, (_, fr) in zip(full, allowed, full_ranges))
            agree, within, overlap, total = agree + same, within + inside, overlap + meet, total + 1
            print(f"| {r['case']} | {r['seed']} | {m} | {pm['growth']:.3g} | {r['check'].get('level', 'quick')}, "
                  f"{r['check']['seconds'] / r['pass_seconds']:.2f} | {check[0]} / {check[1]}"
                  + ("" if stored == check else f" (stored then: {stored[0]} / {stored[1]})") + " | "
                  f"{' or '.join(allowed[0])} / {' or '.join(allowed[1])} | {full[0]} / {full[1]} | "
                  f"{' or '.join(full_ranges[0][1]) or '-'} / {' or '.join(full_ranges[1][1]) or '-'} | "
                  f"{'yes' if same else 'NO'} | {'yes' if inside else 'NO'} | {'yes' if meet else 'NO'} | "
                  + _lds_cells(lds) + " | "
                  + (f"{loo['kendall_tau']:.3f} ({loo['n']})" if loo else "-") + " |")
    print(f"\nthe check's levels agree with full validation on {agree} of {total} case-metrics; full validation's "
          f"level lies within what the check's 95% intervals allow on {within} of {total}; the levels both "
          f"intervals allow meet on {overlap} of {total}\n")
    print("| case | seed | metric | estimate | LDS F=1% / 5% / 20% | LOO tau |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in (r for r in rows if "groups" in r):
        for m in r["metrics"]:
            for label, name in (r.get("named") or {"exact": r["groups"]["result_in_use"]}).items():
                scores = r["groups"]["scores"].get(name, {}).get(m)
                if not scores:
                    continue
                tau = (r.get("loo_named") or {}).get(label, {}).get(m)
                print(f"| {r['case']} | {r['seed']} | {m} | {label} | "
                      + _lds_cells({row["fraction"]: row["spearman_valid"] for row in scores})
                      + f" | {'-' if tau is None else f'{tau:.3f}'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="the runs' store (not needed for --report DIR)")
    ap.add_argument("--case", choices=list(CASES))
    ap.add_argument("--runs", nargs="+", default=[], metavar="RUN_ID",
                    help="instead of --case: runs already in the store, as the case --label")
    ap.add_argument("--label", help="the case name of --runs (for example folder32-ft)")
    ap.add_argument("--metrics", nargs="+", default=["fid", "dloss"], help="with --runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--loo", type=int, default=200, help="leave-one-out instances (0 = none)")
    ap.add_argument("--groups", type=int, default=32, help="random groups per fraction (0 = no group validation)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, help="local worker processes for group validation (default: the cores "
                    "over --threads; 1 keeps the replays in this process, e.g. beside another bench's memory)")
    ap.add_argument("--check", default="auto", choices=["auto", "quick", "full"], help="the spot check's level")
    ap.add_argument("--recheck", action="store_true", help="drop stored checks first (after a change of the check)")
    ap.add_argument("--alternatives", action="store_true",
                    help="also no-propagation, TracIn-style and (Adam) frozen, scored on the same replays")
    ap.add_argument("--reuse-validation", type=Path, metavar="DIR",
                    help="take full validation from earlier result files (e.g. docs/results/trust) of the same runs")
    ap.add_argument("--report", nargs="?", const="", metavar="DIR",
                    help="print the tables of the result files in DIR (default: the store's _trust/; the committed "
                         "ones: docs/results/trust)")
    args = ap.parse_args()
    if args.report is not None:
        report(Path(args.report) if args.report else store.store_root(args.store) / "_trust")
        return
    if not args.store:
        ap.error("--store is needed (all but --report DIR)")
    root = store.store_root(args.store)
    allocator.tune_this_process()
    torch.set_num_threads(args.threads)
    if bool(args.runs) == bool(args.case) or (args.runs and not args.label):
        ap.error("give --case, or --runs with --label")
    todo = ([lambda r=r: run_given(root, r, args.label, args.metrics, args.loo, args.groups, args.fractions,
                                   args.check, args.recheck, args.alternatives, args.reuse_validation, args.workers)
             for r in args.runs]
            or [lambda s=s: run_case(root, args.case, s, args.loo, args.groups, args.fractions, args.set, args.check,
                                     args.recheck, args.alternatives, args.reuse_validation, args.workers)
                     for s in args.seeds])
    for job in todo:
        out = job()
        print(json.dumps({k: v for k, v in out.items() if k in ("case", "seed", "run_id", "pass_seconds", "check")}),
              flush=True)


if __name__ == "__main__":
    main()
