"""Which training instances the curate gallery shows, in which order, and removal sets read from uploads."""

from __future__ import annotations

import numpy as np

from influence.removal import MAX_REMOVAL_BYTES, read_removal_csv
from influence.errors import ConfigError
from influence.estimator import FLAG_NEVER_TRACED, InfluenceResult, harmful_order


def ordered_ids(results: dict[str, InfluenceResult], sort_metric: str, helpful_first: bool,
                labels: np.ndarray | None = None, classes: list[int] | None = None,
                score_filter: dict | None = None) -> np.ndarray:
    """Training ids by harmfulness on `sort_metric` (or helpfulness), restricted to the chosen classes
    and to a score range of one metric. Instances without an estimate come last either way."""
    result = results[sort_metric]
    order = harmful_order(result)
    if helpful_first:
        traced = result.flags[order] != FLAG_NEVER_TRACED
        order = np.concatenate([order[traced][::-1], order[~traced]])
    keep = np.ones(len(order), dtype=bool)
    if classes and labels is not None:
        keep &= np.isin(labels, classes)
    if score_filter is not None and score_filter["metric"] in results:
        r = results[score_filter["metric"]]
        lo, hi = score_filter["range"]
        keep &= (r.scores >= lo) & (r.scores <= hi) & (r.flags != FLAG_NEVER_TRACED)
    return order[keep[order]]


def read_removal_upload(data: bytes, n_train: int, paths: list[str] | None = None,
                        ambiguous: dict[str, list[str]] | None = None) -> list[int]:
    """Ids from an uploaded CSV (the CLI's format, checks and size limit); ConfigError with the reason otherwise."""
    if len(data) > MAX_REMOVAL_BYTES:
        raise ConfigError(f"the file has {len(data) / 2**20:.0f} MB; a removal CSV may have at most "
                          f"{MAX_REMOVAL_BYTES >> 20} MB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text") from None
    return read_removal_csv(text, n_train, paths, ambiguous)
