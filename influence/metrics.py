"""GAN evaluation metrics as differentiable torch functions.

- IS  = exp(E_x KL(p(y|x) || p(y)))                     (higher is better)
- FID = |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^1/2) (lower is better)
- ALL = mean over real x of log (1/N sum_i N(x; g_i, I)) (2D toy; higher is better)
- D-loss = discriminator loss on held-out real data and fixed z (the paper's baseline)

Each metric is a torch function of the generator output (D-loss: of both players), so
the estimator can take its gradient w.r.t. the parameters. FID's matrix square root
uses tr (S_r S_g)^1/2 = sum sqrt(eig(R S_g R)) with R = S_r^1/2 precomputed: R S_g R
is symmetric PSD, so eigvalsh is stable and differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Collection
from typing import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError

# Sign convention: harmful = removing the instance improves the metric.
HIGHER_IS_BETTER = {"is": True, "fid": False, "all": True, "dloss": False}
METRIC_LABELS = {"is": "IS", "fid": "FID", "all": "ALL", "dloss": "D-loss"}
IMAGE_METRICS = ("is", "fid", "dloss")
POINT_METRICS = ("all", "dloss")


def available_metrics(is_2d: bool) -> tuple[str, ...]:
    return POINT_METRICS if is_2d else IMAGE_METRICS


# Metrics a replay scores at almost no cost beside any other: IS and FID share the generator's samples and the
# feature net's pass (D-loss runs D over real and generated images: on mnist-adam 1.15 s a split against 0.65 s
# for both), and on the 2D toy every metric is a small sum.
SCORED_FREELY = {False: ("is", "fid"), True: POINT_METRICS}


def scored_with(metrics: Collection[str], is_2d: bool) -> tuple[str, ...]:
    """What a replay asked for `metrics` is scored on: those and the ones that cost nothing beside them, so that
    a later validation of one of those reads the replay back instead of replaying."""
    return tuple(m for m in available_metrics(is_2d) if m in metrics or m in SCORED_FREELY[is_2d])


def check_metric(name: str, is_2d: bool) -> None:
    allowed = available_metrics(is_2d)
    if name not in allowed:
        kind = "2D data" if is_2d else "image data"
        raise ConfigError(f"metric '{name}' is not defined for {kind}; choose from {', '.join(allowed)}")


def harmful_sign(metric: str) -> int:
    """+1 if a positive influence means harmful (IS, ALL), -1 if a negative one does (FID, D-loss)."""
    return 1 if HIGHER_IS_BETTER[metric] else -1


def sign_sentence(metric: str) -> str:
    label = METRIC_LABELS[metric]
    side = "positive" if harmful_sign(metric) > 0 else "negative"
    return f"predicted change of {label} if the instance is removed; {side} = harmful (removal improves {label})"


# ---------------------------------------------------------------- formulas
def inception_score(probs: torch.Tensor) -> torch.Tensor:
    log_p = torch.log(probs.clamp_min(1e-12))
    log_py = torch.log(probs.mean(0).clamp_min(1e-12))
    return torch.exp((probs * (log_p - log_py)).sum(1).mean())


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = features.mean(0)
    centred = features - mu
    return mu, centred.T @ centred / (features.shape[0] - 1)


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(matrix)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


@dataclass(frozen=True)
class RealStats:
    """Feature mean/covariance of a real split and the square root of the covariance."""

    mu: torch.Tensor
    sigma: torch.Tensor
    sigma_sqrt: torch.Tensor

    @staticmethod
    def of(features: torch.Tensor) -> "RealStats":
        mu, sigma = gaussian_stats(features.double())
        return RealStats(mu, sigma, sqrtm_psd(sigma))

    def to(self, device: torch.device | str) -> "RealStats":
        return RealStats(self.mu.to(device), self.sigma.to(device), self.sigma_sqrt.to(device))


def frechet_distance(gen_features: torch.Tensor, real: RealStats) -> torch.Tensor:
    """Differentiable FID in float64 (matches pytorch_fid.calculate_frechet_distance)."""
    mu, sigma = gaussian_stats(gen_features.double())
    middle = real.sigma_sqrt @ sigma @ real.sigma_sqrt
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = eig.clamp_min(1e-12).sqrt().sum()
    return ((mu - real.mu) ** 2).sum() + torch.trace(sigma) + torch.trace(real.sigma) - 2 * trace_sqrt


def average_log_likelihood(real_points: torch.Tensor, gen_points: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """Mean log-density of real points under a Gaussian KDE centred on generated points."""
    real, gen = real_points.double(), gen_points.double()
    dim = real.shape[1]
    sq = torch.cdist(real, gen).pow(2)
    log_kernel = -sq / (2 * bandwidth**2) - 0.5 * dim * math.log(2 * math.pi * bandwidth**2)
    return (torch.logsumexp(log_kernel, dim=1) - math.log(gen.shape[0])).mean()


# ---------------------------------------------------------------- evaluator
class FeatureNet(torch.nn.Module):
    """A frozen network giving (features, class probabilities) for images in [-1, 1]."""

    def __init__(self, net: torch.nn.Module, has_probs: bool = True):
        super().__init__()
        self.net = net.eval()
        self.has_probs = has_probs
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.has_probs:
            h, logits = self.net.features_and_logits(x)
            return h, F.softmax(logits.double(), dim=1)
        return self.net(x), None


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, x.shape[0], size)])


# An evaluation on the CPU passes its images through G and the feature net this many at a time: 2,000 at once
# (a split's z) leave the caches between layers, and an evaluation took twice as long (quick and mnist-adam at 1
# thread; docs/benchmarks.md, "Spot check cost"). The metrics are those of the whole split up to float rounding
# (every layer works per image: LayerNorm, no BatchNorm). A GPU, and the 2D toy's small nets, take the split at once.
CPU_CHUNK = 100


class Evaluator:
    """Computes IS / FID / ALL / D-loss of a generator against one real split.

    `real` are the real instances of the split (validation for influence, test for
    cleansing); `z` the fixed latent vectors of that split.
    """

    def __init__(self, gan, real: torch.Tensor, z: torch.Tensor, features: FeatureNet | None, is_2d: bool,
                 real_stats: RealStats | None = None):
        self.gan, self.real, self.z, self.features, self.is_2d = gan, real, z, features, is_2d
        self.chunk = CPU_CHUNK if z.device.type == "cpu" and not is_2d else max(1, z.shape[0])
        self.real_stats = real_stats  # given: computed elsewhere from the same `real` (a cluster task's payload)
        if real_stats is None and features is not None and not is_2d:
            with torch.no_grad():
                feats = self._features(real)[0]
            self.real_stats = RealStats.of(feats)

    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.features is None:
            raise ConfigError("IS/FID need a feature network: the data set has no labels to train the "
                              "classifier and no Inception weights were given (eval.inception_weights)")
        dtype = next(self.features.parameters()).dtype
        parts = [self.features(images[i : i + self.chunk].to(dtype)) for i in range(0, images.shape[0], self.chunk)]
        probs = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
        return torch.cat([p[0] for p in parts]), probs

    def metric(self, name: str, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        """The metric as a differentiable scalar of (theta_d, theta_g)."""
        return self.metrics((name,), theta_d, theta_g)[name]

    def metrics(self, names: tuple[str, ...], theta_d: torch.Tensor, theta_g: torch.Tensor) -> dict[str, torch.Tensor]:
        """Several metrics sharing one generator pass and one feature pass."""
        for name in names:
            check_metric(name, self.is_2d)
        generated = batched(lambda z: self.gan.generate(theta_g, z), self.z, self.chunk)
        out: dict[str, torch.Tensor] = {}
        if "dloss" in names:
            # As many real images as fixed z: the real and fake halves weigh the same.
            def logits(x: torch.Tensor) -> torch.Tensor:
                return batched(lambda b: self.gan.logits(theta_d, b), x, self.chunk)

            real = F.softplus(-logits(self.real[: self.z.shape[0]])).mean()
            out["dloss"] = real + F.softplus(logits(generated)).mean()
        if "all" in names:
            out["all"] = average_log_likelihood(self.real, generated)
        if "fid" in names or "is" in names:
            feats, probs = self._features(generated)
            if "fid" in names:
                out["fid"] = frechet_distance(feats, self.real_stats)
            if "is" in names:
                if probs is None:
                    raise ConfigError("IS needs class probabilities: use eval.feature=mnist-cnn")
                out["is"] = inception_score(probs)
        return out

    def evaluate(self, theta_d: torch.Tensor, theta_g: torch.Tensor, names: tuple[str, ...] | None = None) -> dict[str, float]:
        names = tuple(n for n in (names or available_metrics(self.is_2d)) if self._computable(n))
        with torch.no_grad():
            return {n: float(v) for n, v in self.metrics(names, theta_d, theta_g).items()}

    def _computable(self, name: str) -> bool:
        return name in ("dloss", "all") or self.features is not None and (name == "fid" or self.features.has_probs)


def real_reference(features: FeatureNet, real: torch.Tensor) -> dict[str, float]:
    """IS of real images, and FID between two halves of them: the scale a user should compare against."""
    with torch.no_grad():
        dtype = next(features.parameters()).dtype
        feats = batched(lambda b: features(b.to(dtype))[0], real)
        probs = batched(lambda b: features(b.to(dtype))[1], real) if features.has_probs else None
    half = feats.shape[0] // 2
    out = {"fid_real_halves": float(frechet_distance(feats[:half], RealStats.of(feats[half:])))}
    if probs is not None:
        out["is_real"] = float(inception_score(probs))
    return out

