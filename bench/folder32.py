"""The folder32 preset's architecture, chosen by measurement on the synthetic shapes set (issue 24; docs/benchmarks.md).

    .venv/bin/python bench/folder32.py --work DIR search [--budget-cpu-s 240] [--candidates NAME ...]
    .venv/bin/python bench/folder32.py --work DIR full --epochs E [--candidate NAME] [--seed S]
    .venv/bin/python bench/folder32.py --work DIR workflow --run RUN_ID [--seed S] [--variants ...] [--check C]
    .venv/bin/python bench/folder32.py --work DIR sweep --runs FT_RUN_ID ... [--counts K ...]
    .venv/bin/python bench/folder32.py summarize SWEEP.jsonl ...
    .venv/bin/python bench/folder32.py --work DIR against-random --runs FT_RUN_ID ... [--groups M] [--fraction F]

The images: `bench/own_images.py`'s coloured shapes on gradients, 32x32 RGB, --n of them (default 5,000:
4,000 trained on, 500 + 500 held out). Every training is one CLI process (`gan-influence train --preset
folder32`), so its CPU seconds (user + system, both threads) and peak RSS are its own; the wall time is
printed beside them (the machine is shared: CPU seconds are the fair budget; 20 minutes on 2 idle cores are
about 2 x 1,200 CPU seconds less what the threads wait for each other).
- search: each candidate trains for the epochs that fit --budget-cpu-s at its measured CPU cost per batch
  (measured here on 3 batches), tracing only its last 2 steps; prints test FID (autoencoder features) per
  epoch, and copies its last sample grid to assets/folder32-search-<candidate>.png.
- full: the chosen candidate (default: the preset as it is) for --epochs, its grid to assets/folder32-samples.png.
- workflow: fine-tune a full run 1 epoch, traced (optimizer state kept), at the recipe's rate (schedule), at
  trace_lr=auto, and at auto without the probe's confirmation on the whole epoch (auto-unconfirmed: the probe as
  it was before), and estimate FID and D-loss with the check on each: growth, verdict, trust, time and peak RSS
  per phase.
- sweep: on fine-tuned runs (one per seed), remove the top-k by FID influence, k random images, and the k
  most anomalous by Isolation Forest (`cleanse --top-harmful K --by fid|random|iforest`, a replay of the traced
  epoch each); test FID change per run, and per k a paired t-test over the runs of FID's change against
  random's and Isolation Forest's (one-sided: FID's lower).
- summarize: the sweep's t-tests again from its printed lines, over several files (seeds swept apart).
- against-random: per fine-tuned run, a group validation of FID (`validate --groups M --fraction F --curve F`):
  the top F by FID influence ranked among M random sets of its size, replayed alike; per run the randomization
  p-value (1 + random sets as good) / (M + 1) on the test split (the sweep's) and the validation split, and
  over the runs Fisher's combination of the per-run p-values (conservative for such discrete p-values). One
  random draw per seed, as the sweep has, tests against the noise of that draw; M of them test against random
  removal itself.
Each line printed is JSON; a finished training is reused from the store (rerunning resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from own_images import shapes_folder  # noqa: E402

CANDIDATES = {  # on top of the preset: each says its layout, width and units
    "dcgan-w64": ["model.arch=dcgan", "model.width=64", "model.activation=default"],
    "dcgan-w64-gelu": ["model.arch=dcgan", "model.width=64", "model.activation=gelu"],
    "radford-w16": ["model.arch=dcgan-radford", "model.width=16", "model.activation=default"],
    "radford-w32": ["model.arch=dcgan-radford", "model.width=32", "model.activation=default"],
    "radford-w16-gelu": ["model.arch=dcgan-radford", "model.width=16", "model.activation=gelu"],
}


def cpu_per_batch(sets: list[str], threads: int) -> float:
    """CPU seconds of one alternating D+G step at batch 64 on 32x32 RGB for this candidate (3 steps, after one)."""
    code = """
import sys, time, torch
from influence.config import apply_overrides, preset
from influence.gan import GanFunctions
from influence.models import build_gan
from influence.stepmap import KIND_D, KIND_G, StepInputs, TrainingRule, initial_state, step
torch.set_num_threads(int(sys.argv[1]))
cfg = apply_overrides(preset("folder32"), sys.argv[2:])
torch.manual_seed(0)
G, D = build_gan(cfg.model, channels=3, size=32)
gan, rule = GanFunctions(G, D, 0.0), TrainingRule.from_config(cfg)
s = initial_state(gan.layout_d.flatten(D), gan.layout_g.flatten(G), rule)
b = cfg.train.batch_size
x, z, w = torch.rand(b, 3, 32, 32) * 2 - 1, torch.randn(b, cfg.model.z_dim), torch.ones(b)
def one(s, k):
    s = step(gan, rule, s, StepInputs(KIND_D, x, z, w, 2e-4, 2e-4, k, k))[0]
    return step(gan, rule, s, StepInputs(KIND_G, x[:0], z, w[:0], 2e-4, 2e-4, k, k))[0]
s = one(s, 0)
c = time.process_time()
for k in range(1, 4):
    s = one(s, k)
print((time.process_time() - c) / 3)
"""
    out = subprocess.run([sys.executable, "-c", code, str(threads), *sets], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def cli(store: Path, threads: int, *args: str) -> dict:
    """One `gan-influence` process with --json: its last JSON line, CPU seconds, wall seconds and peak RSS."""
    argv = [sys.executable, "-m", "influence", "--store", str(store), *args, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[0]} failed: {stderr.strip()[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"result": result, "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "wall_s": round(time.perf_counter() - started, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def train(store: Path, images: Path, sets: list[str], threads: int, seed: int) -> dict:
    """One CLI training: its summary, CPU seconds, wall seconds and peak RSS."""
    out = cli(store, threads, "train", "--preset", "folder32", "--seed", str(seed), "--set", f"data.root={images}",
              *[a for s in sets for a in ("--set", s)])
    return {**out["result"], **{k: out[k] for k in ("cpu_s", "wall_s", "peak_rss_mb")}}


VARIANTS = {"schedule": ["--trace-lr", "schedule"], "auto": ["--trace-lr", "auto"],
            "auto-unconfirmed": ["--trace-lr", "auto", "--set", "train.trace_lr_confirm=off"],
            "auto-passed": ["--trace-lr", "auto", "--set", "train.trace_lr_confirm=passed"],
            "auto-measured": ["--trace-lr", "auto", "--set", "train.trace_lr_confirm=measured"]}


def workflow(store: Path, run_id: str, threads: int, seed: int, variants: list[str], check: str) -> None:
    """Fine-tune the pretrained run 1 epoch, traced, per variant of the traced rate (its optimizer state kept), and
    estimate FID and D-loss on each with the spot check: growth, verdict and trust per variant, wall time and
    peak RSS per phase."""
    for lr in variants:
        tuned = cli(store, threads, "finetune", "--from", run_id, "--keep-optimizer", *VARIANTS[lr], "--seed", str(seed))
        probe = tuned["result"].get("trace_lr") or {}
        est = cli(store, threads, "estimate", "--run", tuned["result"]["run_id"], "--metric", "fid", "--metric", "dloss",
                  "--check", check)
        print(json.dumps({
            "trace_lr": lr, "run_id": tuned["result"]["run_id"], "test": tuned["result"]["test"],
            "chosen_lr": probe.get("chosen"), "probe_cost": probe.get("cost"), "probe": probe.get("rungs"),
            "probe_reason": probe.get("reason"),
            "finetune": {k: tuned[k] for k in ("cpu_s", "wall_s", "peak_rss_mb")},
            "estimate": {k: est[k] for k in ("cpu_s", "wall_s", "peak_rss_mb")},
            **{m: {"growth": o["growth"], "verdict": o["verdict"], "trust": o["trust"]["summary"],
                   "measured": o["trust"]["measured"], "pass_s": o["seconds"]} for m, o in est["result"].items()},
        }), flush=True)


def sweep(store: Path, runs: list[str], counts: list[int], threads: int) -> None:
    """Cleanse each run of the top-k by FID, k random and k by Isolation Forest; paired t-tests per k over runs."""
    lines = []
    for run_id in runs:
        for k in counts:
            for by in ("fid", "random", "iforest"):
                out = cli(store, threads, "cleanse", "--run", run_id, "--top-harmful", str(k), "--by", by)
                r = out["result"]
                line = {"run_id": run_id, "k": k, "by": by, "fid_before": r["before"]["fid"],
                        "fid_after": r["after"]["fid"], "change": r["after"]["fid"] - r["before"]["fid"],
                        "predicted_valid": r["predicted_change"].get("fid") if by == "fid" else None,
                        "wall_s": out["wall_s"], "peak_rss_mb": out["peak_rss_mb"]}
                lines.append(line)
                print(json.dumps(line), flush=True)
    summarize(lines)


def summarize(lines: list[dict]) -> None:
    """Per k: mean FID change per selection, and one-sided paired t-tests over the runs (FID influence lower than
    random, than Isolation Forest). Runs lacking a selection at some k are left out of that k."""
    from scipy import stats

    changes = {(line["run_id"], line["by"], line["k"]): line["change"] for line in lines}
    for k in sorted({line["k"] for line in lines}):
        runs = sorted({r for r, _, kk in changes if kk == k
                       and all((r, by, k) in changes for by in ("fid", "random", "iforest"))})
        per = {by: [changes[r, by, k] for r in runs] for by in ("fid", "random", "iforest")}
        row = {"k": k, "runs": len(runs), **{f"mean_change_{by}": float(sum(v) / len(v)) for by, v in per.items()}}
        for other in ("random", "iforest"):  # one-sided: removing by FID influence lowers FID more than `other`
            a, b = per["fid"], per[other]
            row[f"fid_lower_than_{other}_in"] = sum(x < y for x, y in zip(a, b))
            row[f"p_vs_{other}"] = (float(stats.ttest_rel(a, b, alternative="less").pvalue) if len(runs) > 1
                                    else None)
        print(json.dumps({"summary": row}), flush=True)


def against_random(store: Path, runs: list[str], groups: int, fraction: float, threads: int) -> None:
    """Per run, the top `fraction` by FID influence against `groups` random sets of its size (test and validation
    split), then the per-run p-values combined over the runs (Fisher)."""
    from scipy import stats

    ps: dict[str, list[float]] = {"test": [], "valid": []}
    for run_id in runs:
        out = cli(store, threads, "validate", "--run", run_id, "--metric", "fid", "--groups", str(groups),
                  "--fraction", str(fraction), "--curve", str(fraction))
        top = next(r for r in out["result"]["curve"]["fid"] if r["kind"] == "top")
        a = top["against_random"]
        for split in ps:
            ps[split].append(a[f"p_{split}"])
        lds = out["result"]["scores"][out["result"]["result_in_use"]]["fid"][0]
        print(json.dumps({"run_id": run_id, "k": top["size"], "random_sets": a["groups"],
                          "top_change_test": top["actual_test"], "top_change_valid": top["actual_valid"],
                          "top_predicted_valid": top["predicted"], **{k: v for k, v in a.items() if k != "groups"},
                          "lds_valid": lds["spearman_valid"], "lds_test": lds["spearman_test"],
                          "wall_s": out["wall_s"], "cpu_s": out["cpu_s"], "peak_rss_mb": out["peak_rss_mb"]}),
              flush=True)
    print(json.dumps({"summary": {"runs": len(runs), "random_sets": groups, "fraction": fraction, **{
        f"fisher_p_{split}": float(stats.combine_pvalues(p, method="fisher").pvalue) for split, p in ps.items()}}}),
        flush=True)


def report(store: Path, name: str, result: dict, grid_name: str) -> None:
    run = store / result["run_id"]
    history = json.loads((run / "history.json").read_text())
    grids = sorted((run / "grids").glob("epoch_*.png"))
    if grids:
        shutil.copyfile(grids[-1], REPO / "assets" / grid_name)
    print(json.dumps({"candidate": name, "run_id": result["run_id"], "epochs": len(history),
                      "cpu_s": result["cpu_s"], "wall_s": result["wall_s"], "peak_rss_mb": result["peak_rss_mb"],
                      "fid_per_epoch": [round(h["fid"], 2) for h in history if "fid" in h],
                      "test": result["test"], "grid": f"assets/{grid_name}"}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", help="work folder (images, store); every mode but summarize")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("search")
    s.add_argument("--budget-cpu-s", type=float, default=240.0)
    s.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    f = sub.add_parser("full")
    f.add_argument("--epochs", type=int, required=True)
    f.add_argument("--candidate", choices=list(CANDIDATES), default=None)
    f.add_argument("--seed", type=int, default=0)
    w = sub.add_parser("workflow")
    w.add_argument("--run", required=True, help="the pretrained run (full)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    w.add_argument("--check", choices=["none", "auto", "quick", "full"], default="auto")
    c = sub.add_parser("sweep")
    c.add_argument("--runs", nargs="+", required=True, help="fine-tuned runs (workflow's), one per seed")
    c.add_argument("--counts", nargs="+", type=int, default=[200, 600, 1200])
    a = sub.add_parser("against-random")
    a.add_argument("--runs", nargs="+", required=True, help="fine-tuned runs (workflow's), one per seed")
    a.add_argument("--groups", type=int, default=32, help="random sets of the top-k's size per run")
    a.add_argument("--fraction", type=float, default=0.05, help="k as a fraction of the traced instances")
    r = sub.add_parser("summarize")
    r.add_argument("files", nargs="+", type=Path, help="sweep output (JSON lines; summary lines are skipped)")
    args = ap.parse_args()
    if args.mode == "summarize":
        lines = [json.loads(t) for f in args.files for t in f.read_text().splitlines() if t.strip()]
        summarize([line for line in lines if "summary" not in line])
        return
    if not args.work:
        ap.error(f"{args.mode} needs --work")
    work = Path(args.work).resolve()
    images, store = work / "images", work / "store"
    if not images.exists():
        shapes_folder(images, args.n)
    if args.mode == "search":
        # the autoencoder features (trained once per image set, cached) are trained here, outside every budget
        warm = train(store, images, ["model.arch=dcgan", "model.width=4", "train.epochs=1", "train.trace_steps=2"],
                     args.threads, 0)
        print(json.dumps({"feature_net_and_warm_up": {"cpu_s": warm["cpu_s"], "wall_s": warm["wall_s"]}}), flush=True)
        for name in args.candidates:
            per_batch = cpu_per_batch(CANDIDATES[name], args.threads)
            batches = -(-int(args.n * 0.8) // 64)
            epochs = max(1, round(args.budget_cpu_s / (per_batch * batches)))
            print(json.dumps({"candidate": name, "cpu_s_per_batch": round(per_batch, 3), "epochs": epochs}), flush=True)
            sets = CANDIDATES[name] + [f"train.epochs={epochs}", "train.trace_steps=2"]
            report(store, name, train(store, images, sets, args.threads, 0), f"folder32-search-{name}.png")
    elif args.mode == "workflow":
        workflow(store, args.run, args.threads, args.seed, args.variants, args.check)
    elif args.mode == "sweep":
        sweep(store, args.runs, args.counts, args.threads)
    elif args.mode == "against-random":
        against_random(store, args.runs, args.groups, args.fraction, args.threads)
    else:
        sets = (CANDIDATES[args.candidate] if args.candidate else []) + [f"train.epochs={args.epochs}"]
        report(store, args.candidate or "folder32", train(store, images, sets, args.threads, args.seed),
               "folder32-samples.png")


if __name__ == "__main__":
    main()
