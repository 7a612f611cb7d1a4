"""Metric formulas against independent reference computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy import linalg
from scipy.special import logsumexp

from influence.errors import ConfigError
from influence.metrics import (
    RealStats,
    average_log_likelihood,
    check_metric,
    frechet_distance,
    harmful_sign,
    inception_score,
    sqrtm_psd,
)


def _features(rng: np.random.Generator, n: int, dim: int, shift: float) -> np.ndarray:
    """Correlated features with a realistic, ill-conditioned covariance (eigenvalues over 4 decades)."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scales = np.logspace(0, -2, dim)
    return (rng.standard_normal((n, dim)) * scales) @ q.T + shift * rng.standard_normal(dim)


def test_fid_equals_pytorch_fid():
    rng = np.random.default_rng(0)
    real = _features(rng, 500, 64, 0.0)
    gen = _features(rng, 500, 64, 0.3) * 1.2
    mu_r, s_r = real.mean(0), np.cov(real, rowvar=False)
    mu_g, s_g = gen.mean(0), np.cov(gen, rowvar=False)
    reference = calculate_frechet_distance(mu_g, s_g, mu_r, s_r)
    ours = float(frechet_distance(torch.from_numpy(gen), RealStats.of(torch.from_numpy(real))))
    assert reference > 0.1
    assert abs(ours - reference) / reference <= 1e-4
    # and a second, independent formula: tr sqrtm(S_g S_r) with scipy
    covmean = linalg.sqrtm(s_g @ s_r).real
    direct = ((mu_g - mu_r) ** 2).sum() + np.trace(s_g) + np.trace(s_r) - 2 * np.trace(covmean)
    assert abs(ours - direct) / direct <= 1e-4


def test_fid_of_a_set_with_itself_is_zero_and_float32_input_is_promoted():
    rng = np.random.default_rng(1)
    feats = torch.from_numpy(_features(rng, 400, 16, 0.0))
    assert abs(float(frechet_distance(feats, RealStats.of(feats)))) < 1e-6
    out = frechet_distance(feats.float(), RealStats.of(feats))
    assert out.dtype == torch.float64


def test_fid_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    real = RealStats.of(torch.from_numpy(_features(rng, 200, 8, 0.0)))
    gen = torch.from_numpy(_features(rng, 200, 8, 0.5)).requires_grad_(True)
    (grad,) = torch.autograd.grad(frechet_distance(gen, real), gen)
    v = torch.from_numpy(rng.standard_normal(gen.shape))
    eps = 1e-5
    with torch.no_grad():
        fd = (frechet_distance(gen + eps * v, real) - frechet_distance(gen - eps * v, real)) / (2 * eps)
    assert abs(float((grad * v).sum()) - float(fd)) <= 1e-6 * max(1.0, abs(float(fd)))


def test_sqrtm_psd_squares_back():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((10, 10))
    m = torch.from_numpy(a @ a.T)
    r = sqrtm_psd(m)
    assert torch.allclose(r @ r, m, atol=1e-9)
    assert torch.allclose(r, r.T)


def test_inception_score_extremes():
    uniform_onehot = torch.eye(10, dtype=torch.float64).repeat(30, 1)  # 300 predictions, 30 per class
    assert float(inception_score(uniform_onehot)) == pytest.approx(10.0, rel=1e-9)
    same = torch.zeros(50, 10, dtype=torch.float64)
    same[:, 3] = 1
    assert float(inception_score(same)) == pytest.approx(1.0, abs=1e-9)
    soft_identical = torch.softmax(torch.randn(1, 10, dtype=torch.float64), 1).repeat(40, 1)
    assert float(inception_score(soft_identical)) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_equals_a_numpy_computation():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((300, 10)) * 3
    p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    py = p.mean(0)
    expected = math.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1)))
    assert float(inception_score(torch.from_numpy(p))) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("bandwidth", [1.0, 0.3])
def test_average_log_likelihood_equals_scipy_kde(bandwidth):
    rng = np.random.default_rng(5)
    real = rng.multivariate_normal([1, 1], [[1, 0.8], [0.8, 1]], 300)
    gen = rng.standard_normal((200, 2)) * 0.7 + 0.5
    d = real.shape[1]
    sq = ((real[:, None, :] - gen[None, :, :]) ** 2).sum(-1)
    log_k = -sq / (2 * bandwidth**2) - 0.5 * d * np.log(2 * np.pi * bandwidth**2)
    expected = np.mean(logsumexp(log_k, axis=1) - np.log(len(gen)))
    ours = float(average_log_likelihood(torch.from_numpy(real), torch.from_numpy(gen), bandwidth))
    assert ours == pytest.approx(expected, rel=1e-10)
    # Same via scipy.stats: a Gaussian KDE with covariance bandwidth^2 I is a mixture of normals.
    from scipy.stats import multivariate_normal

    dens = np.mean([multivariate_normal(g, bandwidth**2 * np.eye(2)).pdf(real) for g in gen], axis=0)
    assert ours == pytest.approx(np.mean(np.log(dens)), rel=1e-8)


def test_metric_names_and_signs():
    check_metric("all", True)
    check_metric("fid", False)
    with pytest.raises(ConfigError, match="metric 'all' is not defined for image data"):
        check_metric("all", False)
    with pytest.raises(ConfigError, match="metric 'fid' is not defined for 2D data"):
        check_metric("fid", True)
    assert [harmful_sign(m) for m in ("is", "all", "fid", "dloss")] == [1, 1, -1, -1]


def test_a_replay_is_scored_also_on_the_metrics_that_cost_nothing_beside_those_asked():
    from influence.metrics import scored_with

    assert scored_with(["fid"], False) == ("is", "fid")  # one feature pass gives both
    assert scored_with(["dloss"], False) == ("is", "fid", "dloss")
    assert scored_with(["is"], False) == ("is", "fid")  # D-loss only when asked: it runs D over two image sets
    assert scored_with(["all"], True) == ("all", "dloss")  # the toy's metrics are small sums


def test_an_evaluation_in_chunks_equals_one_over_the_whole_split(tiny_run):
    """The CPU evaluates CPU_CHUNK images at a time (faster: the caches); every layer works per image, so the
    metrics, their gradients and the real statistics equal those of the split passed at once."""
    from influence.context import RunContext, load_run_config
    from influence.metrics import CPU_CHUNK, Evaluator
    from influence.train import Trace

    ctx = RunContext.create(load_run_config(tiny_run), tiny_run.root)
    n = 2 * CPU_CHUNK + 37  # two whole chunks and a part
    z = torch.randn(n, ctx.cfg.model.z_dim, generator=torch.Generator().manual_seed(0), dtype=ctx.dtype)
    real = ctx._put(ctx.dataset.valid.x)
    assert real.shape[0] > CPU_CHUNK  # the real statistics are taken in chunks too
    chunked = Evaluator(ctx.gan, real, z, ctx.features, False)
    whole = Evaluator(ctx.gan, real, z, ctx.features, False)
    whole.chunk = n
    whole.real_stats = RealStats.of(whole._features(real)[0])
    assert chunked.chunk == CPU_CHUNK < n
    torch.testing.assert_close(chunked.real_stats.mu, whole.real_stats.mu, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(chunked.real_stats.sigma, whole.real_stats.sigma, rtol=1e-6, atol=1e-9)
    td, tg = (ctx._put(torch.from_numpy(a.copy())).requires_grad_(True) for a in Trace.load(tiny_run).final_eval())
    names = ("is", "fid", "dloss")
    a, b = chunked.metrics(names, td, tg), whole.metrics(names, td, tg)
    for name in names:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-9)
        ga = torch.autograd.grad(a[name], (td, tg), allow_unused=True, retain_graph=True)
        gb = torch.autograd.grad(b[name], (td, tg), allow_unused=True, retain_graph=True)
        for x, y in zip(ga, gb):
            assert (x is None) == (y is None)
            if x is not None:  # float32 sums over the images in another order: rounding of the largest entries
                assert (x - y).abs().max() <= 1e-4 * y.abs().max(), (name, (x - y).abs().max(), y.abs().max())
