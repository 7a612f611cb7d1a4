"""Selection methods for cleansing: permutations, the planted outlier, seeded randomness."""

from __future__ import annotations

import numpy as np
import pytest

from influence.baselines import baseline_features, isolation_forest_scores, methods_for, ranking
from influence.context import RunContext, load_run_config
from influence.errors import ConfigError
from influence.estimator import estimate


def _ctx(run):
    return RunContext.create(load_run_config(run), run.root)


def test_every_toy_method_ranks_every_id_once(toy_run):
    ctx = _ctx(toy_run)
    assert methods_for(True) == ("all", "dloss", "iforest", "random")
    for method in methods_for(True):
        order = ranking(toy_run, ctx, method, seed=0)
        assert order.dtype.kind == "i" and np.array_equal(np.sort(order), np.arange(2000)), method


def test_influence_ranking_puts_the_harmful_side_first(toy_run):
    ctx = _ctx(toy_run)
    for m, sign in (("all", 1), ("dloss", -1)):  # harmful: positive ALL, negative D-loss
        scores = estimate(toy_run, [m])[m].scores
        order = ranking(toy_run, ctx, m)
        ranked = sign * scores[order]
        assert np.all(np.diff(ranked) <= 0)
        assert order[0] == (np.argmax(scores) if sign > 0 else np.argmin(scores))


@pytest.mark.slow
def test_every_mnist_method_ranks_every_id_once(tiny_run):
    ctx = _ctx(tiny_run)
    assert methods_for(False) == ("is", "fid", "dloss", "iforest", "iforest-pixels", "random")
    for method in methods_for(False):
        order = ranking(tiny_run, ctx, method, seed=0)
        assert np.array_equal(np.sort(order), np.arange(1000)), method
    feats = baseline_features(ctx, "iforest")
    assert feats.shape == (1000, 128) and ((feats > 0) & (feats < 1)).all()  # the classifier's sigmoid layer
    assert baseline_features(ctx, "iforest-pixels").shape == (1000, 784)


def test_isolation_forest_puts_a_planted_outlier_first():
    rng = np.random.default_rng(0)
    points = rng.multivariate_normal([1, 1], [[1, 0.8], [0.8, 1]], 500)
    points[137] = [9.0, -7.0]  # far outside the Gaussian, across its correlation
    scores = isolation_forest_scores(points, seed=0)
    assert scores.shape == (500,)
    order = np.argsort(-scores)
    assert order[0] == 137
    assert scores[137] > np.sort(scores)[-2] + 0.05  # clearly apart from the runner-up
    # seeded: the same scores again
    assert np.array_equal(scores, isolation_forest_scores(points, seed=0))


def test_iforest_ranking_on_the_toy_scores_the_training_points(toy_run):
    ctx = _ctx(toy_run)
    points = ctx.dataset.train.x.numpy()
    expected = np.argsort(-isolation_forest_scores(points, seed=3), kind="stable")
    assert np.array_equal(ranking(toy_run, ctx, "iforest", seed=3), expected)
    # the most anomalous point lies far from the centre (1, 1) of the distribution
    first = points[expected[0]]
    assert np.linalg.norm(first - 1) > np.percentile(np.linalg.norm(points - 1, axis=1), 95)


def test_random_is_seeded(toy_run):
    ctx = _ctx(toy_run)
    a, b, c = (ranking(toy_run, ctx, "random", seed=s) for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, np.random.default_rng(7).permutation(2000))


def test_unknown_method_is_a_config_error(toy_run):
    ctx = _ctx(toy_run)
    for method in ("fid", "iforest-pixels", "nope"):
        with pytest.raises(ConfigError, match=f"unknown selection method '{method}'"):
            ranking(toy_run, ctx, method)
