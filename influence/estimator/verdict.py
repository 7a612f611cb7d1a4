"""How far an estimate can be trusted from the backward pass itself: the growth of |u| and per-instance flags."""

from __future__ import annotations

import numpy as np

# |u| may grow by this factor over the pass before estimates become doubtful / unreliable.
# Calibrated on the quick preset (stable: growth ~1) and its lr=1e-2 variant (explodes): see docs.
GROWTH_DOUBTFUL = 10.0
GROWTH_UNRELIABLE = 100.0
FLAG_NEVER_TRACED, FLAG_RELIABLE, FLAG_DOUBTFUL, FLAG_UNRELIABLE, FLAG_NOT_ASSESSED = 0, 1, 2, 3, 4
FLAG_NAMES = {0: "not in a traced batch", 1: "reliable", 2: "doubtful", 3: "unreliable",
              4: "not assessed (a baseline)"}


def verdict_for(growth: float) -> tuple[str, str]:
    """The verdict and its sentence. `growth` = the largest |u| over the backward pass divided by |u| where
    the pass starts (u = the metric's gradient carried back through the traced steps)."""
    size = f"growth factor {growth:.3g}: carried back through the traced steps, the metric's gradient |u|"
    if not np.isfinite(growth) or growth >= GROWTH_UNRELIABLE:
        return "unreliable", (
            f"unreliable - {size} grows to {growth:.3g}x its starting size, so the steps amplify perturbations; "
            "lower the learning rate of the traced epochs or trace fewer steps"
        )
    if growth >= GROWTH_DOUBTFUL:
        return "doubtful", (
            f"doubtful - {size} grows to {growth:.3g}x its starting size; estimates for instances early in the "
            "trace may be off"
        )
    return "reliable", (f"reliable - {size} stays within {growth:.3g}x its starting size (doubtful from "
                        f"{GROWTH_DOUBTFUL:g}x, unreliable from {GROWTH_UNRELIABLE:g}x)")


def growth_of(total: np.ndarray, first: int = 0) -> tuple[np.ndarray, float]:
    """(|lambda| relative to where the pass starts, per traced step; the growth factor over steps first..)."""
    start_norm = total[-1]
    ratio = total / start_norm if start_norm > 0 else np.ones_like(total)
    return ratio, float(np.nanmax(ratio[first:]))


def instance_flags(ratio_at_step: np.ndarray, step_of: np.ndarray) -> np.ndarray:
    """FLAG_* per instance from the growth at the step where it was (first) seen."""
    flags = np.full(step_of.shape, FLAG_NEVER_TRACED, dtype=np.int8)
    traced = step_of >= 0
    r = ratio_at_step[step_of[traced]]
    flags[traced] = np.where(r >= GROWTH_UNRELIABLE, FLAG_UNRELIABLE, np.where(r >= GROWTH_DOUBTFUL, FLAG_DOUBTFUL, FLAG_RELIABLE))
    return flags
