"""How far a rank correlation measured on a few replays may lie from the one many replays would give.

The spot check judges an estimate on 8-16 single images and 12-16 random groups; a Kendall tau or Spearman
rho over so few pairs is a rough number (tau 1.00 on 8 images is consistent with a population tau of about
0.7). `rank_interval` gives its confidence interval, so that the verdict can say which levels a measurement
cannot tell apart (`trust.verdict`) and tables show the interval beside the number.

Neyman's construction under a Gaussian copula (rank statistics depend on the pairs' dependence alone, which a
Gaussian copula sets with one number): for a population value, the statistic's sampling distribution at n
pairs is simulated from fixed draws (deterministic; common to every population value, so its quantiles move
monotonically and bisection finds the bounds); the interval holds every population value whose central
`level` contains the measured one. It covers at the ends, a perfect ranking included, where Fisher's z does
not (8 pairs at population tau 0.95: Fisher's z covered 46% of 4,000 draws). Above SIMULATED_MAX_N pairs, where
simulating would cost seconds: Kendall's tau (leave-one-out of 200 images) by the same construction with the
statistic taken as normal, with its exact variance under the Gaussian copula (the U-statistic's, whose
covariance term for the bivariate normal is 1/9 - (4/pi^2) arcsin^2(rho/2)), which vanishes as the population
tau nears 1, so the interval narrows there as the statistic does (Fisher's z covered 0.875 at tau 0.99 and 200
pairs); Spearman's rho (256 pairs and more, beyond anything the engine measures) by Fisher's z with Fieller,
Hartley & Pearson's variance 1.06 / (n - 3).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats

KINDS = ("kendall", "spearman")
LEVEL = 0.95
SIMULATED_MAX_N = {"kendall": 64, "spearman": 256}
DRAWS = 2000
_SEED = 20231  # any fixed seed: the intervals must not change between calls or processes
_BISECTIONS = 14  # population values to 1e-4
_TIE = 1e-6
# Below this many pairs even a perfect ranking is consistent with no correlation (95% intervals of a perfect
# measurement at 4 pairs: Spearman -0.24 to 1, Kendall -0.16 to 1; at 5: 0.32 and 0.21 to 1): the fewest
# instances or groups a validation accepts.
MIN_PAIRS = 5


@functools.lru_cache(maxsize=1024)
def rank_interval(kind: str, value: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The `level` confidence interval of the population `kind` correlation ("kendall" tau or "spearman" rho)
    given `value` measured on n pairs. (nan, nan) for a value that is not finite; (-1, 1) below 3 pairs."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not math.isfinite(value):
        return math.nan, math.nan
    if n < 3:
        return -1.0, 1.0
    value = min(max(value, -1.0), 1.0)
    if n > SIMULATED_MAX_N[kind]:
        return _kendall_normal(value, n, level) if kind == "kendall" else _fisher_spearman(value, n, level)
    tail = (1 - level) / 2
    # lo: the smallest population value whose upper quantile reaches the measured value; hi: the largest
    # whose lower quantile stays at or under it (both quantiles rise with the population value)
    # (a statistic of n pairs takes few values: a measured one equals a simulated one up to rounding, _TIE)
    lo = _bisect(lambda g: np.quantile(_sample(kind, n, g), 1 - tail, method="higher") >= value - _TIE)
    hi = _bisect(lambda g: np.quantile(_sample(kind, n, g), tail, method="lower") > value + _TIE)
    return lo, hi


def interval_text(interval: tuple[float, float]) -> str:
    lo, hi = interval
    return "" if not (math.isfinite(lo) and math.isfinite(hi)) else f"{lo:.2f} to {hi:.2f}"


def interval_phrase(kind: str, value: float, n: int) -> str:
    """' (95% interval a to b)' for a measured correlation, '' where there is none."""
    text = interval_text(rank_interval(kind, value, n))
    return f" (95% interval {text})" if text else ""


def _bisect(reached) -> float:
    """The smallest population value in [-1, 1] at which `reached` (monotone: False, then True) holds."""
    if reached(-1.0):
        return -1.0
    if not reached(1.0):
        return 1.0
    a, b = -1.0, 1.0
    for _ in range(_BISECTIONS):
        mid = (a + b) / 2
        a, b = (a, mid) if reached(mid) else (mid, b)
    return round(b, 4)


def _sample(kind: str, n: int, population: float) -> np.ndarray:
    """DRAWS values of the statistic at n pairs whose Gaussian-copula dependence gives `population`."""
    x_part, noise = _draws(kind, n)
    # the copula's correlation giving that population tau / rho (Kendall; Spearman for the normal)
    rho = math.sin(math.pi * population / 2) if kind == "kendall" else 2 * math.sin(math.pi * population / 6)
    rho = min(max(rho, -1.0), 1.0)
    y = rho * _x(n) + math.sqrt(max(1 - rho * rho, 0.0)) * noise
    if kind == "kendall":
        i, j = np.triu_indices(n, 1)
        return (x_part * np.sign(y[:, i] - y[:, j]).astype(np.int8)).mean(axis=1, dtype=np.float64)
    ry = y.argsort(axis=1).argsort(axis=1)
    return 1 - 6 * ((x_part - ry) ** 2).sum(axis=1) / (n * (n * n - 1))


@functools.lru_cache(maxsize=8)
def _x(n: int) -> np.ndarray:
    return np.random.default_rng([_SEED, n, 0]).standard_normal((DRAWS, n))


@functools.lru_cache(maxsize=8)
def _draws(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """What the statistic needs of x (the pairs' signs for Kendall, the ranks for Spearman) and the noise."""
    x = _x(n)
    noise = np.random.default_rng([_SEED, n, 1]).standard_normal((DRAWS, n))
    if kind == "kendall":
        i, j = np.triu_indices(n, 1)
        return np.sign(x[:, i] - x[:, j]).astype(np.int8), noise  # 4 MB at 64 pairs
    return x.argsort(axis=1).argsort(axis=1), noise


def kendall_sd(population: np.ndarray, n: int) -> np.ndarray:
    """The standard deviation of Kendall's tau on n pairs of a Gaussian copula with that population tau: the root
    of (4 (n - 2) zeta1 + 2 (1 - tau^2)) / (n (n - 1)), zeta1 = 1/9 - (4/pi^2) arcsin^2(rho/2), rho = sin(pi tau/2)."""
    rho = np.sin(np.pi * population / 2)
    zeta1 = 1 / 9 - (4 / np.pi**2) * np.arcsin(rho / 2) ** 2
    return np.sqrt(np.maximum((4 * (n - 2) * zeta1 + 2 * (1 - population**2)) / (n * (n - 1)), 0.0))


_GRID = np.linspace(-1.0, 1.0, 20001)  # population values 1e-4 apart, as the bisection's


def _kendall_normal(value: float, n: int, level: float) -> tuple[float, float]:
    """Every population tau whose central `level` range (normal, exact variance) holds the measured value."""
    half = stats.norm.ppf(0.5 + level / 2) * kendall_sd(_GRID, n)
    held = _GRID[np.abs(value - _GRID) <= half + _TIE]
    return float(held.min().round(4)), float(held.max().round(4))


def _fisher_spearman(value: float, n: int, level: float) -> tuple[float, float]:
    se = math.sqrt(1.06 / (n - 3))
    z = math.atanh(min(max(value, -1 + 1e-12), 1 - 1e-12))
    half = stats.norm.ppf(0.5 + level / 2) * se
    return math.tanh(z - half), math.tanh(z + half)
