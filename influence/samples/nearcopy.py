"""Near-copy signals of chosen samples: is a sample a copy of a few training images?

Per sample:
- its nearest training image in feature space (the run's feature net, as the data map and FID see images;
  the points themselves on the 2D toy) and the distance to it, beside the typical distance between a training
  image and its own nearest neighbour (the median over a seeded subset), so "near" has a scale;
- the share of the sample's total |influence| carried by its top-1 and top-10 training images (a sample with
  several rows, the 2D position, uses each image's vector length).
A sample is flagged as a likely copy when both say so: it lies nearer to a training image than training
images typically lie to each other, and a few images carry a large share of its influence (COPY_TOP10_SHARE).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COPY_TOP10_SHARE = 0.2  # calibrated on the planted copies (bench/explain.py copies; docs/benchmarks.md)
TYPICAL_SUBSET = 1000


def nearest(train_features: np.ndarray, features: np.ndarray, exclude: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, Euclidean distances) of the nearest training instance to each row of `features`; exclude[i] = a
    training id row i may not match (itself), -1 for none."""
    train = train_features.astype(np.float64)
    sq_train = (train**2).sum(1)
    ids, dist = np.empty(len(features), dtype=np.int64), np.empty(len(features))
    for start in range(0, len(features), 256):
        f = features[start:start + 256].astype(np.float64)
        d2 = (f**2).sum(1)[:, None] + sq_train[None] - 2 * f @ train.T
        if exclude is not None:
            rows = np.flatnonzero(exclude[start:start + 256] >= 0)
            d2[rows, exclude[start:start + 256][rows]] = np.inf
        best = d2.argmin(1)
        ids[start:start + 256] = best
        dist[start:start + 256] = np.sqrt(np.maximum(d2[np.arange(len(f)), best], 0.0))
    return ids, dist


def typical_distance(train_features: np.ndarray, seed: int = 0) -> float:
    """Median distance from a training image to its nearest other training image (a seeded subset)."""
    n = len(train_features)
    subset = np.random.default_rng(seed).choice(n, min(n, TYPICAL_SUBSET), replace=False)
    _, dist = nearest(train_features, train_features[subset], exclude=subset)
    return float(np.median(dist))


def sample_strength(matrix: np.ndarray, row_sample: np.ndarray, sample: int) -> np.ndarray:
    """|influence| of every training image on one sample: |score|, or the vector length over its rows."""
    rows = matrix[row_sample == sample]
    return np.abs(rows[0]) if len(rows) == 1 else np.sqrt((rows**2).sum(0))


def signals(matrix: np.ndarray, row_sample: np.ndarray, train_features: np.ndarray, sample_features: np.ndarray,
            typical: float) -> pd.DataFrame:
    """One row per sample: nearest_id, nearest_distance, distance_ratio (to the typical nearest-neighbour
    distance), top1_share, top10_share, top_ids (the 10 largest |influence|), likely_copy."""
    ids, dist = nearest(train_features, sample_features)
    rows = []
    for i in range(len(sample_features)):
        a = sample_strength(matrix, row_sample, i)
        total = a.sum()
        order = np.argsort(-a, kind="stable")[:10]
        top1 = float(a[order[0]] / total) if total > 0 else 0.0
        top10 = float(a[order].sum() / total) if total > 0 else 0.0
        ratio = float(dist[i] / typical) if typical > 0 else float("inf")
        rows.append({"sample": i, "nearest_id": int(ids[i]), "nearest_distance": float(dist[i]),
                     "distance_ratio": ratio, "top1_share": top1, "top10_share": top10,
                     "top_ids": " ".join(str(int(j)) for j in order),
                     "likely_copy": bool(ratio < 1.0 and top10 >= COPY_TOP10_SHARE)})
    return pd.DataFrame(rows)
