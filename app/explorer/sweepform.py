"""From the Validate page's sweep form to a job spec: the text is parsed here, the checks are the engine's."""

from __future__ import annotations

from influence import specs
from influence.config import RunConfig


def sweep_spec(cfg: RunConfig, seeds_text: str, methods: list[str], counts_text: str, metric: str,
               n_train: int) -> dict:
    """The job spec of a sweep over seeds of `cfg` (the current run's config with other seeds)."""
    seeds = specs.parse_ints(seeds_text, "seeds")
    counts = specs.parse_ints(counts_text, "removal counts")
    return specs.sweep_spec(cfg, seeds, methods, counts, metric, n_train)
