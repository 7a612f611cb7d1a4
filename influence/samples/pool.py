"""The run's pool of generated samples to pick from (the Generated samples page): POOL_SIZE samples from z fixed
by the run's seed, each with its realism (the final D's logit), clarity (the classifier's log-probability of
its top class), nearest training image in feature space, and a place on a map shared with the training images
(a PCA of the feature-net features fitted on the training set; the 2D toy: the plane itself).

Cached in the run under samples/: pool_z.npy, pool_generated.npy, pool.parquet (one row per sample),
map_train.npy (the training images on the same map).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import datamap, store
from ..context import RunContext, load_run_config
from ..errors import StoreError
from ..objectives.samples import class_log_probs, features_of
from ..train import Trace
from . import nearcopy
from .explain import final_parameters
from .latents import pool_latents

FILES = ("pool_z.npy", "pool_generated.npy", "pool.parquet", "map_train.npy")


@dataclass
class Pool:
    table: pd.DataFrame  # sample, realism, clarity, class (-1: no classifier), nearest_id, nearest_distance, map_x, map_y
    z: np.ndarray
    generated: np.ndarray  # (POOL_SIZE, ...) images in [-1, 1] or 2D points
    train_map: np.ndarray  # (n_train, 2): the training images on the same map


def sample_pool(run: store.Run, ctx: RunContext | None = None) -> Pool:
    """The pool, from the run's cache or computed once (seconds: one generator pass and a nearest-neighbour
    search)."""
    try:
        if all(run.exists(f"samples/{f}") for f in FILES):
            return Pool(pd.read_parquet(run.verify("samples/pool.parquet")), run.read_npy("samples/pool_z.npy"),
                        run.read_npy("samples/pool_generated.npy"), run.read_npy("samples/map_train.npy"))
    except StoreError:
        pass  # damaged: computed again
    cfg = load_run_config(run)
    ctx = ctx or RunContext.create(cfg, run.root)
    trace = Trace.load(run)
    final_d, final_g = final_parameters(ctx, trace)
    z = pool_latents(cfg)
    with torch.no_grad():
        generated = ctx.gan.generate(final_g, z.to(ctx.device, ctx.dtype))
        realism = ctx.gan.logits(final_d, generated).double().cpu().numpy()
        if ctx.features is not None and ctx.features.has_probs:
            log_p = class_log_probs(ctx, generated)
            clarity, cls = (t.cpu().numpy() for t in log_p.max(1))
        else:
            clarity, cls = np.full(len(z), np.nan), np.full(len(z), -1)
        sample_features = features_of(ctx, generated).float().cpu().numpy()
    train_features = datamap.training_features(run, ctx)
    nearest_id, nearest_distance = nearcopy.nearest(train_features, sample_features)
    if cfg.is_2d:
        train_map, sample_map = ctx.dataset.train.x.numpy().astype(np.float32), sample_features
    else:
        train_map, sample_map = datamap.joint_pca(train_features, sample_features)
    table = pd.DataFrame({"sample": np.arange(len(z)), "realism": realism, "clarity": clarity,
                          "class": np.asarray(cls, dtype=np.int64), "nearest_id": nearest_id,
                          "nearest_distance": nearest_distance, "map_x": sample_map[:, 0], "map_y": sample_map[:, 1]})
    pool = Pool(table, z.numpy(), generated.float().cpu().numpy(), train_map)
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    run.write_npy("samples/pool_z.npy", pool.z)
    run.write_npy("samples/pool_generated.npy", pool.generated)
    run.write_npy("samples/map_train.npy", train_map)
    run.write("samples/pool.parquet", buf.getvalue())
    return pool
