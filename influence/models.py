"""Generators, discriminators and the MNIST feature classifier.

No BatchNorm anywhere in G or D: BatchNorm mixes the instances of a minibatch, so
removing one training image would change the gradient of every other image in its
batch and per-instance influence would no longer be a sum of per-instance terms.
LayerNorm is per-sample; we use GroupNorm(1, C), which normalises each sample over
(C, H, W) with a per-channel affine, as TensorFlow's layer_norm in the paper's code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import ModelConfig

# The paper's MNIST discriminator: seven valid convs 28 -> 25 -> 12 -> 10 -> 9 -> 4 -> 2 -> 1.
SMALLCNN_KERNELS = (4, 3, 3, 2, 3, 3, 2)
SMALLCNN_STRIDES = (1, 2, 1, 1, 2, 1, 1)


def layer_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels)


Activation = Callable[[], nn.Module]


SMOOTH_ACTIVATIONS: dict[str, Activation] = {"softplus": nn.Softplus, "silu": nn.SiLU, "gelu": nn.GELU}


def hidden_activation(name: str, default: Activation) -> Activation:
    """The architecture's own activation, or a smooth one everywhere it would be.

    Smooth units exist for the influence check: with ReLU kinks a whole removal can flip
    units and the metric responds non-linearly, while the estimate is first order.
    """
    return SMOOTH_ACTIVATIONS.get(name, default)


class SmallCnnDiscriminator(nn.Module):
    def __init__(self, width: int, channels: int = 1, act: Activation = nn.Sigmoid):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for k, s in zip(SMALLCNN_KERNELS, SMALLCNN_STRIDES):
            layers += [nn.Conv2d(c_in, width, k, s), act(), layer_norm(width)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


class SmallCnnGenerator(nn.Module):
    """Mirror of the discriminator: transposed convs 1 -> 2 -> 4 -> 9 -> 10 -> 12 -> 25 -> 28."""

    def __init__(self, width: int, z_dim: int, channels: int = 1, act: Activation = nn.Sigmoid):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = z_dim
        for k, s in zip(reversed(SMALLCNN_KERNELS), reversed(SMALLCNN_STRIDES)):
            layers += [nn.ConvTranspose2d(c_in, width, k, s), act(), layer_norm(width)]
            c_in = width
        layers += [nn.Conv2d(width, channels, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DcganGenerator(nn.Module):
    """DCGAN generator for 28x28 or 32x32, LayerNorm where the classic one has BatchNorm."""

    def __init__(self, width: int, z_dim: int, channels: int, size: int, act: Activation = nn.ReLU):
        super().__init__()
        self.base = size // 4
        self.c0 = 2 * width
        self.project = nn.Sequential(nn.Linear(z_dim, self.c0 * self.base**2), act())
        self.net = nn.Sequential(
            layer_norm(self.c0),
            nn.ConvTranspose2d(self.c0, width, 4, 2, 1),
            layer_norm(width),
            act(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.c0, self.base, self.base)
        return self.net(h)


class DcganDiscriminator(nn.Module):
    def __init__(self, width: int, channels: int, size: int, act: Activation = lambda: nn.LeakyReLU(0.2)):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            act(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            layer_norm(2 * width),
            act(),
        )
        self.head = nn.Linear(2 * width * (size // 4) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).flatten(1)).squeeze(1)


class RadfordGenerator(nn.Module):
    """DCGAN generator in Radford et al.'s layout: z -> 4x4 x 8w -> 8x8 x 4w -> 16x16 x 2w -> 32x32 x w -> image
    (64 px: one more stage, from 4x4 x 16w). LayerNorm where the classic has BatchNorm: BatchNorm
    couples the instances of a batch, so one image's removal would move every other's gradient."""

    def __init__(self, width: int, z_dim: int, channels: int, size: int, act: Activation = nn.ReLU):
        super().__init__()
        stages = {32: 4, 64: 5}[size]
        chans = [width * 2 ** (stages - 1 - i) for i in range(stages)]  # 8w 4w 2w w (32 px)
        self.c0 = chans[0]
        self.project = nn.Linear(z_dim, self.c0 * 16)
        layers: list[nn.Module] = [layer_norm(self.c0), act()]
        for c_in, c_out in zip(chans, chans[1:]):  # each doubles the side: 4 -> 8 -> ... -> size
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), layer_norm(c_out), act()]
        layers += [nn.Conv2d(chans[-1], channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(-1, self.c0, 4, 4))


class RadfordDiscriminator(nn.Module):
    """Mirror of RadfordGenerator: image -> size x w -> ... -> 4x4 x 8w (16w at 64 px) -> logit, strided 4x4
    convs, LeakyReLU(0.2), LayerNorm after every conv but the first (Radford: BatchNorm there)."""

    def __init__(self, width: int, channels: int, size: int, act: Activation = lambda: nn.LeakyReLU(0.2)):
        super().__init__()
        stages = {32: 4, 64: 5}[size]
        chans = [width * 2**i for i in range(stages)]  # w 2w 4w 8w (32 px)
        layers: list[nn.Module] = [nn.Conv2d(channels, chans[0], 3, 1, 1), act()]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), layer_norm(c_out), act()]
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1] * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).flatten(1)).squeeze(1)


class FcGenerator(nn.Module):
    """The paper's 2D generator: z (10) -> 32 -> 32 -> 2, ReLU (its code: no biases)."""

    def __init__(self, z_dim: int, act: Activation = nn.ReLU, bias: bool = True):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, 32, bias), act(), nn.Linear(32, 32, bias), act(), nn.Linear(32, 2, bias))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class FcDiscriminator(nn.Module):
    """The paper's 2D discriminator: 2 -> 64 -> 64 -> 1, ReLU (its code: no biases)."""

    def __init__(self, act: Activation = nn.ReLU, bias: bool = True):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 64, bias), act(), nn.Linear(64, 64, bias), act(), nn.Linear(64, 1, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def _leaky() -> nn.Module:
    return nn.LeakyReLU(0.2)


# each architecture's own hidden units (G's, D's), used where model.activation is "default"
DEFAULT_UNITS: dict[str, tuple[Activation, Activation]] = {
    "smallcnn": (nn.Sigmoid, nn.Sigmoid), "dcgan": (nn.ReLU, _leaky), "dcgan-radford": (nn.ReLU, _leaky),
    "fcgan": (nn.ReLU, nn.ReLU)}


def has_kinks(cfg) -> bool:
    """ReLU or LeakyReLU units somewhere in G or D (the architecture's own units, kept by activation=default)."""
    return cfg.activation == "default" and any(isinstance(unit(), (nn.ReLU, nn.LeakyReLU))
                                               for unit in DEFAULT_UNITS[cfg.arch])


def build_gan(cfg: ModelConfig, channels: int = 1, size: int = 28) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator), initialised as `cfg.init` says (seed torch before calling)."""
    if cfg.arch not in DEFAULT_UNITS:
        raise ValueError(f"unknown arch {cfg.arch}")
    g_act, d_act = (hidden_activation(cfg.activation, unit) for unit in DEFAULT_UNITS[cfg.arch])
    if cfg.arch == "smallcnn":
        G, D = SmallCnnGenerator(cfg.width, cfg.z_dim, channels, g_act), SmallCnnDiscriminator(cfg.width, channels, d_act)
    elif cfg.arch == "dcgan":
        G, D = (DcganGenerator(cfg.width, cfg.z_dim, channels, size, g_act),
                DcganDiscriminator(cfg.width, channels, size, d_act))
    elif cfg.arch == "dcgan-radford":
        G, D = (RadfordGenerator(cfg.width, cfg.z_dim, channels, size, g_act),
                RadfordDiscriminator(cfg.width, channels, size, d_act))
    else:
        G, D = FcGenerator(cfg.z_dim, g_act, cfg.bias), FcDiscriminator(d_act, cfg.bias)
    if cfg.init == "glorot-uniform":
        glorot_uniform_(G)
        glorot_uniform_(D)
    return G, D


def glorot_uniform_(module: nn.Module) -> None:
    """TensorFlow's default for dense and conv kernels (the paper's code): U(+-sqrt(6 / (fan_in + fan_out))), zero biases.

    PyTorch's default (bound 1/sqrt(fan_in)) draws most of the 2D toy's kernels narrower (64x64
    layer: 0.125 vs 0.217); with it the ReLU toy's estimate agrees far less with leave-one-out
    (docs/architecture.md). Norm layers keep their (1, 0) affine.
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MnistClassifier(nn.Module):
    """The paper's IS/FID network: its 128-d sigmoid layer is the FID feature space."""

    def __init__(self, channels: int = 1, n_classes: int = 10, size: int = 28):
        super().__init__()
        side = ((size - 4) // 2 - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 5),
            nn.Sigmoid(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 5),
            nn.Sigmoid(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * side * side, 128),
            nn.Sigmoid(),
        )
        self.logits = nn.Linear(128, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return h, self.logits(h)
