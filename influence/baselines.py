"""Selection methods for data cleansing: each gives training ids ordered most harmful first.

- influence on a metric (fid, is, all, dloss): estimated influence, harmful side first
- iforest / iforest-pixels: Isolation Forest anomaly score on the classifier's 128-d
  features / on raw pixels (2D: on the points), most anomalous first
- random: a seeded permutation
"""

from __future__ import annotations

import numpy as np
import torch

from . import store
from .context import RunContext
from .errors import ConfigError
from .estimator import EstimateOptions, estimate, harmful_order
from .metrics import available_metrics, batched
from .progress import CancelToken, ProgressFn

BASELINES = ("iforest", "iforest-pixels", "random")
METHOD_LABELS = {"fid": "influence on FID", "is": "influence on IS", "all": "influence on ALL",
                 "dloss": "influence on D-loss", "iforest": "Isolation Forest (features)",
                 "iforest-pixels": "Isolation Forest (pixels)", "random": "random"}


def methods_for(is_2d: bool) -> tuple[str, ...]:
    return available_metrics(is_2d) + (("iforest", "random") if is_2d else BASELINES)


def isolation_forest_scores(features: np.ndarray, seed: int) -> np.ndarray:
    """Anomaly score per row: higher = more anomalous."""
    from sklearn.ensemble import IsolationForest  # 2 s of imports: here, not in every CLI command and job worker

    forest = IsolationForest(n_estimators=200, random_state=seed).fit(features)
    return -forest.score_samples(features)


def baseline_features(ctx: RunContext, method: str) -> np.ndarray:
    x = ctx.dataset.train.x
    if ctx.cfg.is_2d or method == "iforest-pixels":
        return x.reshape(x.shape[0], -1).numpy()
    if ctx.features is None:
        raise ConfigError("iforest needs the classifier features; use iforest-pixels for this data set")
    with torch.no_grad():
        feats = batched(lambda b: ctx.features(b.to(ctx.device, torch.float64))[0], x)
    return feats.cpu().numpy()


def ranking(run: store.Run, ctx: RunContext, method: str, seed: int = 0,
            options: EstimateOptions = EstimateOptions(), progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> np.ndarray:
    """Training ids from most to least harmful according to `method`."""
    if method not in methods_for(ctx.cfg.is_2d):
        raise ConfigError(f"unknown selection method '{method}'; choose from {', '.join(methods_for(ctx.cfg.is_2d))}")
    if method == "random":
        return np.random.default_rng(seed).permutation(ctx.dataset.n_train)
    if method.startswith("iforest"):
        scores = isolation_forest_scores(baseline_features(ctx, method), seed)
        return np.argsort(-scores, kind="stable")
    return harmful_order(estimate(run, [method], options, progress, cancel)[method])
