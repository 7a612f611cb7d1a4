"""Job specs built from user input, with the engine's checks: one place for the CLI and the app.

The same request gives the same spec (and so the same job key and lock) whichever front end
sends it, so the CLI and the app never compute one thing twice at once.
"""

from __future__ import annotations

import dataclasses
import os
import re

from .baselines import methods_for
from .config import RunConfig
from .errors import ConfigError
from .estimator import EstimateOptions
from .metrics import check_metric

MAX_SEEDS = 50


def recorded_train_config(recorded: RunConfig, source: str, assignments: list[str]) -> RunConfig:
    """A recorded config (`source`: where it came from, for messages) with `assignments` (`--set` style: seed,
    data.root, ...), ready to train again: its pretrained files must be the recorded ones, own images keep the
    recorded fingerprint (the load checks the files against it); a config made before fingerprints is prepared."""
    from .config import apply_overrides, check_same_inputs
    from .data import prepare

    cfg = apply_overrides(recorded, assignments)
    check_same_inputs(recorded, cfg, source)
    d = cfg.data
    if d.source == "folder" and d.fingerprint and d.root:
        return dataclasses.replace(cfg, data=dataclasses.replace(d, root=os.path.abspath(os.path.expanduser(d.root))))
    return prepare(cfg)


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


def check_sweep(cfg: RunConfig, seeds: list[int], methods: list[str], counts: list[int], metric: str,
                n_train: int) -> None:
    """ConfigError naming the first problem of a sweep over `seeds` of `cfg`; before anything runs."""
    if len(seeds) < 2 or len(seeds) > MAX_SEEDS:
        raise ConfigError(f"a t-test over seeds needs 2..{MAX_SEEDS} seeds, got {len(seeds)}")
    if any(not 0 <= s < 2**32 for s in seeds):
        raise ConfigError("seeds must lie in 0..4294967295")
    if len(set(seeds)) < len(seeds):
        raise ConfigError("each seed may be given once")
    allowed = methods_for(cfg.is_2d)
    if not methods or any(m not in allowed for m in methods):
        raise ConfigError(f"choose selection methods among {', '.join(allowed)}")
    check_metric(metric, cfg.is_2d)
    if not counts:
        raise ConfigError("give at least one removal count")
    for c in counts:
        if not 1 <= c < n_train:
            raise ConfigError(f"removal count {c} must lie in 1..{n_train - 1} (the training set has {n_train})")


def sweep_spec(cfg: RunConfig, seeds: list[int], methods: list[str], counts: list[int], metric: str, n_train: int,
               options: EstimateOptions = EstimateOptions()) -> dict:
    """The job spec of a sweep over `seeds` of `cfg` (its own seed is replaced), checked."""
    check_sweep(cfg, seeds, methods, counts, metric, n_train)
    return {"kind": "sweep", "params": {
        "configs": [dataclasses.replace(cfg, seed=s).to_dict() for s in seeds], "methods": list(methods),
        "counts": list(counts), "metric": metric, "options": dataclasses.asdict(options)}}


def estimate_spec(run_id: str, metrics: list[str], options: EstimateOptions = EstimateOptions(),
                  check: str | None = None) -> dict:
    """The estimate job; check = the spot check after the pass (validation.spotcheck: none, auto, quick, full)."""
    params = {"run_id": run_id, "metrics": list(metrics), "options": dataclasses.asdict(options)}
    if check is not None and check != "none":  # only then: earlier specs keep their job keys
        params["check"] = check
    return {"kind": "estimate", "params": params}


def explain_spec(run_id: str, samples: dict, objective: str, options: EstimateOptions = EstimateOptions(),
                 check: dict | None = None) -> dict:
    """The explain job (influence on chosen samples, samples.explain); check = {"samples": [...], "k": K,
    "seed": S} replays without each checked sample's top-k responsible images and k random ones."""
    from .objectives.samples import parse

    parse(objective)  # one error line before any job starts
    params = {"run_id": run_id, "samples": samples, "objective": objective,
              "options": dataclasses.asdict(options)}
    if check is not None:
        params["check"] = check
    return {"kind": "explain", "params": params}
