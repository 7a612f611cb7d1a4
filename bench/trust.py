"""Trust calibration: for each case, the spot check's verdict beside full validation (LDS and leave-one-out).

    .venv/bin/python bench/trust.py --store DIR --case quick --seeds 0 1 2 [--threads 1]
    .venv/bin/python bench/trust.py --store DIR --case mnist-adam-relu-f32 --seeds 7 --loo 200
    .venv/bin/python bench/trust.py --store DIR --report          # the tables of everything measured so far

Per case and seed (each step cached in the store, so an interrupted campaign resumes):
1. train the run (the case's preset and overrides);
2. the influence pass (exact adjoints) with its quick spot check: its cost against the pass, and its verdict;
3. group validation (`validate --groups 32 --fraction 0.01 0.05 0.2`, curve at the same fractions);
4. leave-one-out of --loo random traced instances (the paper's protocol; Kendall tau, Pearson r).
Each finished case-seed writes <store>/_trust/<case>-s<seed>.json; --report prints the calibration table
(docs/trust.md) and the LDS table (docs/benchmarks.md) from those files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence import allocator, store  # noqa: E402
from influence.config import apply_overrides, preset  # noqa: E402
from influence.estimator import EstimateOptions, estimate  # noqa: E402
from influence.train import train  # noqa: E402
from influence.validation import validate  # noqa: E402
from influence.validation.groups import GroupSpec, validate_groups  # noqa: E402
from influence.validation.spotcheck import spot_check  # noqa: E402
from influence.validation.trust import verdict  # noqa: E402

# case -> (preset, overrides, metrics); the first metric is the one the tables lead with
CASES: dict[str, tuple[str, list[str], list[str]]] = {
    "quick": ("quick", [], ["fid", "is"]),
    "mnist-adam": ("mnist-adam", [], ["fid", "is"]),
    "mnist-adam-relu-f32": ("mnist-adam", ["model.activation=default", "train.dtype=float32"], ["fid", "is"]),
    "toy2d": ("toy2d", [], ["all"]),
    "toy2d-adam": ("toy2d-adam", [], ["all"]),
    "paper-cleansing": ("paper-cleansing", [], ["fid"]),
}


def run_case(root: Path, case: str, seed: int, loo: int, groups: int, fractions: list[float], extra: list[str]) -> dict:
    name, overrides, metrics = CASES[case]
    cfg = apply_overrides(preset(name, seed), overrides + extra)
    out = {"case": case, "seed": seed, "run_id": cfg.run_id, "metrics": metrics, "threads": torch.get_num_threads()}
    t = time.perf_counter()
    run = train(cfg, root)
    out["train_seconds"] = time.perf_counter() - t
    out["test"] = run.read_json("summary.json")["test"]
    results = estimate(run, metrics, EstimateOptions())
    check = spot_check(run, metrics, EstimateOptions(), "quick")
    out["pass_seconds"] = sum(r.meta["seconds"] for r in results.values())
    out["check"] = {"seconds": check["seconds"], "replay_seconds": check["replay_seconds"],
                    "lanes": check["lanes"], "baseline": check["baseline"], "window_steps": check["window_steps"]}
    out["per_metric"] = {m: {"growth": r.meta["growth"], "stability": r.verdict, "trust": verdict(r, check),
                             "agreement": check["per_metric"][m]} for m, r in results.items()}
    g = validate_groups(run, metrics, GroupSpec(groups, tuple(fractions), 0, tuple(fractions)))
    out["groups"] = {k: g[k] for k in ("lanes", "baseline", "replay_seconds", "scores", "curve", "result_in_use")}
    if loo:
        acc = validate(run, metrics, n=loo, selection="random", seed=0)
        out["loo"] = {m: a.as_dict() for m, a in acc.items()}
    store.write_json(root / "_trust" / f"{case}-s{seed}.json", out)
    return out


def report(root: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted((root / "_trust").glob("*.json"))]
    print("| case | seed | metric | growth | spot check: groups / singles | check cost / pass | LDS F=1% / 5% / 20% "
          "(valid) | LOO tau (n) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        for m in r["metrics"]:
            pm = r["per_metric"][m]
            lds = {row["fraction"]: row["spearman_valid"] for row in r["groups"]["scores"][r["groups"]["result_in_use"]][m]}
            loo = r.get("loo", {}).get(m)
            print(f"| {r['case']} | {r['seed']} | {m} | {pm['growth']:.3g} | {pm['trust']['groups']} / "
                  f"{pm['trust']['singles']} | {r['check']['seconds'] / r['pass_seconds']:.2f} | "
                  + " / ".join(f"{lds[f]:.3f}" for f in sorted(lds)) + " | "
                  + (f"{loo['kendall_tau']:.3f} ({loo['n']})" if loo else "-") + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--case", choices=list(CASES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--loo", type=int, default=200, help="leave-one-out instances (0 = none)")
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    root = store.store_root(args.store)
    if args.report:
        report(root)
        return
    allocator.tune_this_process()
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        out = run_case(root, args.case, seed, args.loo, args.groups, args.fractions, args.set)
        print(json.dumps({k: v for k, v in out.items() if k in ("case", "seed", "run_id", "pass_seconds", "check")}),
              flush=True)


if __name__ == "__main__":
    main()
