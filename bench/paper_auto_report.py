"""The table of paper-cleansing with train.trace_lr=auto over seeds (issue 24; docs/benchmarks.md).

    .venv/bin/python bench/paper_auto_report.py docs/results/finetune/paper-auto-s*.jsonl

Reads the files `bench/paper_auto.sh` writes (the training line, the spot check, one line per cleanse) and prints
per seed the rate picked, the growth, the check's levels and the test-FID change per k and selection method, then
per k the mean over seeds and one-sided paired t-tests (scipy.stats.ttest_rel): does removing the top k by
influence on FID lower test FID more than removing k at random, and more than Isolation Forest's k?
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

METHODS = ("fid", "random", "iforest")  # bench/paper_auto.sh's selections, influence on FID first


def load(path: Path) -> dict:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    trained = next(line for line in lines if "run_id" in line)
    check = next((line["check"] for line in lines if "check" in line), None)
    cleanses = {(line["k"], line["by"]): line["out"] for line in lines if "k" in line}
    return {"trained": trained, "check": check, "cleanses": cleanses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    runs = [load(p) for p in ap.parse_args().files]
    ks = sorted({k for r in runs for k, _ in r["cleanses"]})
    print("| seed | run | rate picked | growth (FID) | test FID | check: groups / singles |"
          + "".join(f" k={k:,}: fid / random / iforest |" for k in ks))
    print("| --- " * (6 + len(ks)) + "|")
    for r in runs:
        t, check = r["trained"], r["check"] or {}
        levels = check.get("fid", {}).get("trust") or {}
        row = [str(t["seed"]), t["run_id"], f"{t['chosen_lr'][0]:.3g}", f"{t['fid']['growth']:.3g}",
               f"{t['test']['fid']:.3f}", f"{levels.get('groups', '-')} / {levels.get('singles', '-')}"]
        for k in ks:
            row.append(" / ".join(f"{r['cleanses'][(k, by)]['change']['fid']:+.3f}" if (k, by) in r["cleanses"]
                                  else "-" for by in METHODS))
        print("| " + " | ".join(row) + " |")
    print()
    for k in ks:
        done = [r for r in runs if all((k, by) in r["cleanses"] for by in METHODS)]
        change = {by: np.array([r["cleanses"][(k, by)]["change"]["fid"] for r in done]) for by in METHODS}
        predicted = np.array([r["cleanses"][(k, "fid")]["predicted_change"]["fid"] for r in done])
        line = (f"k={k:,}, {len(done)} seeds: influence {change['fid'].mean():+.3f} (predicted {predicted.mean():+.3f}),"
                f" random {change['random'].mean():+.3f}, iforest {change['iforest'].mean():+.3f}")
        if len(done) >= 2:
            for other in ("random", "iforest"):
                p = stats.ttest_rel(change["fid"], change[other], alternative="less").pvalue
                line += f"; influence < {other}: p = {p:.3g}"
        print(line)


if __name__ == "__main__":
    main()
