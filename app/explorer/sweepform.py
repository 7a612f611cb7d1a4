"""From the Validate page's sweep form to a job spec: the text is parsed here, the checks are the engine's."""

from __future__ import annotations

from pathlib import Path

from influence import specs, store
from influence.config import RunConfig
from influence.estimator import InfluenceResult

from . import tables


def sweep_spec(cfg: RunConfig, seeds_text: str, methods: list[str], counts_text: str, metric: str,
               n_train: int) -> dict:
    """The job spec of a sweep over seeds of `cfg` (the current run's config with other seeds)."""
    seeds = specs.parse_ints(seeds_text, "seeds")
    counts = specs.parse_ints(counts_text, "removal counts")
    return specs.sweep_spec(cfg, seeds, methods, counts, metric, n_train)


def duration_text(root: Path, spec: dict, summary: dict, results: dict[str, InfluenceResult],
                  attempts: list[dict]) -> str:
    """What the sweep of `spec` will do and roughly how long that takes here, from the current run's measured
    training, pass and cleanses (runs of its seeds already in the store are not trained again)."""
    configs = [RunConfig.from_dict(c) for c in spec["params"]["configs"]]
    new = sum(not store.Run(root, c.run_id).exists("summary.json") for c in configs)
    cleanses = len(configs) * len(spec["params"]["methods"]) * len(spec["params"]["counts"])
    seconds = tables.sweep_seconds(summary, results, attempts, new, cleanses)
    return (f"Here: {tables.plural(new, 'run')} to train ({len(configs) - new} in the store already) and "
            f"{tables.plural(cleanses, 'cleanse')}, roughly {tables.duration(seconds, rough=True)} in all (from this "
            "run's measured speed).")
