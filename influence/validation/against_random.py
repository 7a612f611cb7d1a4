"""A removal set against random sets of its size: does removing it help more than removing at random?

The random sets are a group validation's (`validation.groups`), replayed over the same traced steps and z.
Had the set been chosen with no more skill than a random draw, its change would be one more draw among the
M random ones, and its rank among the M + 1 uniform, whatever the metric's distribution: the one-sided
randomization p-value is (1 + random sets that did at least as well) / (M + 1). Ties count against the set;
M bounds p from below (M = 32: 0.030). A single random set of the same size, as a cleansing curve's random-k, is
one draw of the noise and says little beside it.

Used for a cleansing curve's top-k (`groups`) and for any cleansed set (`cleanse --against-random`, the Cleanse
page).
"""

from __future__ import annotations

import pandas as pd

from ..metrics import harmful_sign

SPLITS = ("valid", "test")
SPLIT_NAMES = {"valid": "validation", "test": "test"}


def rank(changes: dict[str, float], random_sets: pd.DataFrame, m: str) -> dict:
    """`changes`: the set's change of metric m per split ("valid", "test"; a split it lacks is left out);
    `random_sets`: the random sets of its size, with columns actual_<split>_<m>. Per split, how many random sets
    changed m at least as much for the better, and the p-value."""
    out: dict = {"groups": len(random_sets)}
    for split in SPLITS:
        if changes.get(split) is None:
            continue
        gain = harmful_sign(m) * random_sets[f"actual_{split}_{m}"].to_numpy()  # improvement: higher = better
        as_good = int((gain >= harmful_sign(m) * changes[split]).sum())
        out[f"as_good_{split}"] = as_good
        out[f"p_{split}"] = (1 + as_good) / (len(random_sets) + 1)
    return out


def cleansed_changes(attempt: dict, m: str) -> dict[str, float | None]:
    """A cleanse attempt's change of m per split (`CleanseResult.as_dict`; validation None where not measured)."""
    return {"test": attempt["change"].get(m), "valid": ((attempt.get("validation") or {}).get("change") or {}).get(m)}


def phrase(ranked: dict, size: int, what: str) -> str:
    """In words: "<what> did better than random sets of <size>: 32 of 32 on the validation split (p = 0.03), ..."."""
    m = ranked["groups"]
    beaten = [f"{m - ranked[f'as_good_{s}']} of {m} on the {SPLIT_NAMES[s]} split (p = {ranked[f'p_{s}']:.2g})"
              for s in SPLITS if f"p_{s}" in ranked]
    return f"{what} did better than random sets of {size}: {', '.join(beaten)}; p: the chance a random set does as well"
