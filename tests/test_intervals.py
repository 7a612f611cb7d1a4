"""Confidence intervals of rank correlations measured on a few replays, against independent simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from influence.validation.intervals import SIMULATED_MAX_N, interval_phrase, kendall_sd, rank_interval


def _draws(kind: str, population: float, n: int, count: int, seed: int) -> np.ndarray:
    """`count` values of the statistic on n pairs from a Gaussian copula with that population value, by scipy."""
    rho = math.sin(math.pi * population / 2) if kind == "kendall" else 2 * math.sin(math.pi * population / 6)
    rng = np.random.default_rng(seed)
    statistic = stats.kendalltau if kind == "kendall" else stats.spearmanr
    out = []
    for _ in range(count):
        x = rng.standard_normal(n)
        out.append(statistic(x, rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal(n)).statistic)
    return np.array(out)


@pytest.mark.parametrize("kind, n, population", [("kendall", 8, 0.9), ("spearman", 12, 0.95), ("kendall", 16, 0.5),
                                                 ("kendall", 200, 0.99)])
def test_the_intervals_cover_the_population_value(kind, n, population):
    """About 95% of intervals from independent samples (scipy's statistics, another seed) hold the population
    value, also near 1 where Fisher's z covers far less (8 pairs at 0.9: 0.85; 200 pairs at 0.99: 0.875)."""
    values = _draws(kind, population, n, 200, seed=7)
    covered = np.mean([rank_interval(kind, round(float(v), 6), n)[0] <= population
                       <= rank_interval(kind, round(float(v), 6), n)[1] for v in values])
    assert 0.9 <= covered <= 0.995, covered


def test_a_perfect_ranking_of_eight_is_not_certainty():
    """tau = 1 on 8 pairs: the interval's lower end is the population tau at which a perfect ranking of 8 turns
    up 2.5% of the time (checked by scipy on independent draws); Fisher's z would put it above 0.99."""
    lo, hi = rank_interval("kendall", 1.0, 8)
    assert hi == 1.0 and 0.5 < lo < 0.9
    perfect = np.mean(_draws("kendall", lo, 8, 4000, seed=3) > 1 - 1e-9)
    assert 0.015 <= perfect <= 0.04, perfect


def test_intervals_are_deterministic_monotone_and_honest_at_the_edges():
    assert rank_interval("spearman", 0.7, 12) == rank_interval.__wrapped__("spearman", 0.7, 12)
    los = [rank_interval("kendall", v, 10)[0] for v in (-0.5, 0.0, 0.5, 0.9)]
    assert los == sorted(los)
    assert all(np.isnan(rank_interval("kendall", math.nan, 8)))
    assert rank_interval("spearman", 1.0, 2) == (-1.0, 1.0)  # two pairs say nothing
    narrow, wide = rank_interval("spearman", 0.8, 60), rank_interval("spearman", 0.8, 12)
    assert wide[0] < narrow[0] < 0.8 < narrow[1] < wide[1]
    # above the simulated range (Kendall): the normal construction meets the simulated one where they part
    edge = SIMULATED_MAX_N["kendall"]
    for value in (0.3, 0.95, 1.0):
        assert rank_interval("kendall", value, edge + 1) == pytest.approx(rank_interval("kendall", value, edge),
                                                                           abs=0.015)
    assert interval_phrase("kendall", 1.0, 8) == " (95% interval 0.70 to 1.00)"
    assert interval_phrase("kendall", math.nan, 8) == ""


def test_kendalls_variance_under_the_gaussian_copula_matches_scipys_draws():
    """The exact variance the normal construction uses, against the spread of 1,500 independent scipy values."""
    for population, n in ((0.0, 100), (0.6, 100), (0.95, 200)):
        measured = _draws("kendall", population, n, 1500, seed=11).std()
        assert float(kendall_sd(np.array(population), n)) == pytest.approx(measured, rel=0.08), (population, n)
