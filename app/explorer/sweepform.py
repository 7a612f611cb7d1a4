"""From the Validate page's sweep form to a job spec, rejecting what the engine would reject."""

from __future__ import annotations

import dataclasses
import re

from influence.baselines import methods_for
from influence.config import RunConfig
from influence.errors import ConfigError
from influence.estimate import EstimateOptions

MAX_SEEDS = 50


def parse_ints(text: str, what: str) -> list[int]:
    """'1000, 3000 5000' -> [1000, 3000, 5000]; duplicates dropped, order kept."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts:
        raise ConfigError(f"enter at least one number for the {what}")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{what}: '{text.strip()}' is not a list of whole numbers") from None
    return list(dict.fromkeys(values))


def sweep_spec(cfg: RunConfig, seeds_text: str, methods: list[str], counts_text: str, metric: str,
               n_train: int) -> dict:
    """The job spec of a sweep over seeds of `cfg` (the current run's config with other seeds)."""
    seeds = parse_ints(seeds_text, "seeds")
    if len(seeds) < 2 or len(seeds) > MAX_SEEDS:
        raise ConfigError(f"a t-test over seeds needs 2..{MAX_SEEDS} seeds, got {len(seeds)}")
    if any(not 0 <= s < 2**32 for s in seeds):
        raise ConfigError("seeds must lie in 0..4294967295")
    allowed = methods_for(cfg.is_2d)
    if not methods or any(m not in allowed for m in methods):
        raise ConfigError(f"choose selection methods among {', '.join(allowed)}")
    counts = parse_ints(counts_text, "removal counts")
    for c in counts:
        if not 1 <= c < n_train:
            raise ConfigError(f"removal count {c} must lie in 1..{n_train - 1} (the training set has {n_train})")
    return {"kind": "sweep", "params": {
        "configs": [dataclasses.replace(cfg, seed=s).to_dict() for s in seeds], "methods": list(methods),
        "counts": counts, "metric": metric, "options": dataclasses.asdict(EstimateOptions())}}
