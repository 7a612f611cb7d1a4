"""Coverage of the 95% intervals the verdict and the validation tables give rank correlations.

    .venv/bin/python bench/intervals.py [--draws 400] [--seed 11]

For the sizes the engine measures (the quick check's 8 single images and 12 random groups, the full check's 16
and 16, group validation's 32, leave-one-out of 50 and 200) and population values from 0.5 to 0.99: draws
`--draws` samples of n pairs from a Gaussian copula with that population Kendall tau or Spearman rho, measures
the statistic with scipy, and counts how often `intervals.rank_interval` holds the population value (simulated up
to SIMULATED_MAX_N pairs; above it Kendall's tau as normal with its exact variance), beside the textbook interval,
Fisher's z with Fieller, Hartley & Pearson's variances.
Prints one JSON line per case and a markdown table. Also the interval of each level's typical measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence.validation.intervals import SIMULATED_MAX_N, rank_interval  # noqa: E402

CASES = [("kendall", 8), ("spearman", 12), ("kendall", 16), ("spearman", 16), ("spearman", 32), ("kendall", 50),
         ("kendall", 100), ("kendall", 200)]
POPULATIONS = (0.5, 0.9, 0.95, 0.99)
TYPICAL = [("kendall", 8, 1.0), ("kendall", 8, 0.86), ("kendall", 8, 0.71), ("spearman", 12, 1.0),
           ("spearman", 12, 0.95), ("spearman", 12, 0.45), ("spearman", 32, 0.51), ("kendall", 50, 0.35),
           ("kendall", 200, 0.95)]


def coverage(kind: str, n: int, population: float, draws: int, rng: np.random.Generator) -> dict:
    rho = math.sin(math.pi * population / 2) if kind == "kendall" else 2 * math.sin(math.pi * population / 6)
    statistic = stats.kendalltau if kind == "kendall" else stats.spearmanr
    ours = fisher = 0
    for _ in range(draws):
        x = rng.standard_normal(n)
        value = round(float(statistic(x, rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal(n)).statistic), 6)
        lo, hi = rank_interval(kind, value, n)
        ours += lo <= population <= hi
        lo, hi = fisher_z(kind, value, n)
        fisher += lo <= population <= hi
    method = "simulated" if n <= SIMULATED_MAX_N[kind] else ("normal" if kind == "kendall" else "fisher")
    return {"kind": kind, "n": n, "population": population, "draws": draws, "coverage": ours / draws,
            "fisher_coverage": fisher / draws, "method": method}


def fisher_z(kind: str, value: float, n: int) -> tuple[float, float]:
    """The textbook 95% interval: Fisher's z with Fieller, Hartley & Pearson's variances."""
    half = 1.959964 * math.sqrt(0.437 / (n - 4) if kind == "kendall" else 1.06 / (n - 3))
    z = math.atanh(min(max(value, -1 + 1e-12), 1 - 1e-12))
    return math.tanh(z - half), math.tanh(z + half)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for kind, n in CASES:
        for population in POPULATIONS:
            rows.append(coverage(kind, n, population, args.draws, rng))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| statistic | n | interval by | " + " | ".join(f"covers at {p}" for p in POPULATIONS) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in POPULATIONS) + " |")
    for kind, n in CASES:
        mine = [r for r in rows if (r["kind"], r["n"]) == (kind, n)]
        print(f"| {kind} | {n} | {mine[0]['method']} | "
              + " | ".join(f"{r['coverage']:.3f} (Fisher's z {r['fisher_coverage']:.3f})" for r in mine) + " |")
    print("\n| measured | n | 95% interval |\n| --- | --- | --- |")
    for kind, n, value in TYPICAL:
        lo, hi = rank_interval(kind, value, n)
        print(f"| {kind} {value} | {n} | {lo:.2f} to {hi:.2f} |")


if __name__ == "__main__":
    main()
