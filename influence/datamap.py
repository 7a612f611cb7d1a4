"""A map of the training set: the run's feature-net features, a 2D embedding of them (PCA or t-SNE)
and nearest neighbours in feature space.

Features are those of the run's IS/FID feature net (classifier, autoencoder or Inception), so
the map shows the images as the metric sees them; without a feature net (2D toy) the points
themselves. Cached per run under map/ (features.npy, pca.npy, tsne.npy); PCA of 50k x 128
features takes well under a second, t-SNE minutes (computed once).
"""

from __future__ import annotations

import numpy as np
import torch

from . import store
from .errors import ConfigError
from .metrics import batched

METHODS = ("pca", "tsne")
METHOD_LABELS = {"pca": "PCA", "tsne": "t-SNE"}


def training_features(run: store.Run, ctx) -> np.ndarray:
    """(n_train, d) float32 features of the training images (cached in the run)."""
    rel = "map/features.npy"
    with run.exclusive("map-features"):  # computed once, whoever asks first (two tabs)
        if run.exists(rel):
            try:
                return run.read_npy(rel)
            except store.StoreError:
                pass  # damaged: computed again
        return _training_features(run, ctx, rel)


def _training_features(run: store.Run, ctx, rel: str) -> np.ndarray:
    x = ctx.dataset.train.x
    if ctx.features is None:
        feats = x.reshape(len(x), -1).numpy().astype(np.float32)
    else:
        net = ctx.features
        dtype = next(net.parameters()).dtype
        with torch.no_grad():
            feats = batched(lambda b: net(b.to(ctx.device, dtype))[0], x, 500).float().cpu().numpy()
    run.remove_stale_temp_files(["map"], ["features.npy"])  # a killed writer's
    run.write_npy(rel, feats)
    return feats


def embedding(run: store.Run, method: str = "pca", ctx=None) -> np.ndarray:
    """(n_train, 2) float32 coordinates of the map (cached in the run)."""
    if method not in METHODS:
        raise ConfigError(f"map method must be one of {METHODS}")
    rel = f"map/{method}.npy"
    with run.exclusive(f"map-{method}"):  # t-SNE takes minutes: computed once, whoever asks first
        if run.exists(rel):
            try:
                return run.read_npy(rel)
            except store.StoreError:
                pass
        if ctx is None:
            from .context import RunContext, load_run_config

            ctx = RunContext.create(load_run_config(run), run.root)
        coords = embed(training_features(run, ctx), method)
        run.remove_stale_temp_files(["map"], [f"{method}.npy"])  # a killed writer's
        run.write_npy(rel, coords)
    return coords


def embed(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    f = features.astype(np.float64)
    f = (f - f.mean(0)) / (f.std(0) + 1e-8)  # every feature counts, whatever its scale
    if method == "pca" or len(f) < 5:
        out = PCA(n_components=2, random_state=seed).fit_transform(f)
    else:
        from sklearn.manifold import TSNE

        reduced = PCA(n_components=min(50, f.shape[1], len(f)), random_state=seed).fit_transform(f)
        out = TSNE(n_components=2, init="pca", random_state=seed,
                   perplexity=min(30.0, (len(f) - 1) / 3)).fit_transform(reduced)
    return out.astype(np.float32)


def joint_pca(train_features: np.ndarray, other: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The PCA map of the training features (standardised as `embed` does) with other images (generated samples)
    placed in the same plane: ((n_train, 2), (n_other, 2)) float32."""
    from sklearn.decomposition import PCA

    f = train_features.astype(np.float64)
    mean, std = f.mean(0), f.std(0) + 1e-8
    pca = PCA(n_components=2, random_state=seed).fit((f - mean) / std)
    project = lambda x: pca.transform((x.astype(np.float64) - mean) / std).astype(np.float32)  # noqa: E731
    return project(f), project(other)


def nearest(features: np.ndarray, i: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(ids, Euclidean distances) of the k nearest other instances to instance i in feature space."""
    if not 0 <= i < len(features):
        raise ConfigError(f"instance {i} is outside the training set (ids 0..{len(features) - 1})")
    d = np.sqrt(((features - features[i]) ** 2).sum(1, dtype=np.float64))
    d[i] = np.inf
    k = min(k, len(features) - 1)
    ids = np.argpartition(d, k)[:k] if k < len(d) else np.arange(len(d))
    ids = ids[np.argsort(d[ids], kind="stable")]
    return ids, d[ids]
