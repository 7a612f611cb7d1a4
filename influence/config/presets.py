"""The presets: named configurations, each with why it is set as it is."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ConfigError
from .schema import AUTO, DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig


def _preset(name: str, **parts: Any) -> RunConfig:
    return RunConfig(preset=name, **parts)


PRESETS: dict[str, RunConfig] = {
    # For tests: seconds on a laptop core.
    "tiny": _preset(
        "tiny",
        data=DataConfig(source="mnist", n_train=1000),
        model=ModelConfig(arch="smallcnn", width=8),
        train=TrainConfig(epochs=2, lr_d=0.01, lr_g=0.01, lr_schedule=((2, 0.001, 0.001),)),
        eval=EvalConfig(n_valid_z=500, n_test_z=500, n_grid=36),
    ),
    # Recognisable digits in a few minutes; the traced last epoch runs at lr 1e-3, where the
    # linearised backward recursion holds (at 1e-2 it explodes, see docs/architecture.md).
    "quick": _preset(
        "quick",
        data=DataConfig(source="mnist", n_train=10_000),
        model=ModelConfig(arch="smallcnn", width=8),
        train=TrainConfig(epochs=20, lr_d=0.01, lr_g=0.01, lr_schedule=((20, 0.001, 0.001),)),
    ),
    "paper-valid": _preset(
        "paper-valid",
        data=DataConfig(source="mnist", n_train=10_000),
        model=ModelConfig(arch="smallcnn", width=8),
        train=TrainConfig(epochs=50, lr_d=0.001, lr_g=0.001, weight_decay=0.001),
    ),
    "paper-cleansing": _preset(
        "paper-cleansing",
        data=DataConfig(source="mnist"),
        model=ModelConfig(arch="smallcnn", width=32),
        train=TrainConfig(epochs=20, lr_d=0.001, lr_g=0.001, weight_decay=0.001),
        eval=EvalConfig(n_valid_z=10_000, n_test_z=10_000),
    ),
    # The paper's toy as its code builds it (models/SmallMulVarGaussGAN.py): float64 data, dense
    # layers without biases, Glorot-uniform kernels. With biases and PyTorch's init (the preset
    # before 2026-11-30, still reachable with model.bias=true model.init=torch data.dtype=float32)
    # a whole removal flips ReLU units and leave-one-out departs from the estimate.
    "toy2d": _preset(
        "toy2d",
        data=DataConfig(source="normal2d", n_valid=1000, n_test=1000, dtype="float64"),
        model=ModelConfig(arch="fcgan", z_dim=10, bias=False, init="glorot-uniform"),
        train=TrainConfig(epochs=50, lr_d=0.001, lr_g=0.001, dtype="float64"),
        eval=EvalConfig(n_valid_z=1000, n_test_z=1000, n_grid=1000, feature="mnist-cnn"),
    ),
    # The earlier toy (biases, PyTorch init) with softplus instead of ReLU: smooth units do not
    # flip, so leave-one-out agrees with the first-order estimate (bench/linearity.py).
    "toy2d-smooth": _preset(
        "toy2d-smooth",
        data=DataConfig(source="normal2d", n_valid=1000, n_test=1000),
        model=ModelConfig(arch="fcgan", z_dim=10, activation="softplus"),
        train=TrainConfig(epochs=50, lr_d=0.001, lr_g=0.001, dtype="float64"),
        eval=EvalConfig(n_valid_z=1000, n_test_z=1000, n_grid=1000, feature="mnist-cnn"),
    ),
    # The toy as GANs are trained today: Adam (betas 0.5/0.999). Smooth units (softplus) keep a whole
    # removal within the first-order estimate; with biases and 50 epochs the generator covers the
    # Gaussian on every seed tried (without biases, or after 20 epochs, some seeds collapse: docs/benchmarks.md).
    "toy2d-adam": _preset(
        "toy2d-adam",
        data=DataConfig(source="normal2d", n_valid=1000, n_test=1000, dtype="float64"),
        model=ModelConfig(arch="fcgan", z_dim=10, activation="softplus"),
        train=TrainConfig(epochs=50, lr_d=0.001, lr_g=0.001, dtype="float64", optimizer="adam", betas=(0.5, 0.999)),
        eval=EvalConfig(n_valid_z=1000, n_test_z=1000, n_grid=1000, feature="mnist-cnn"),
    ),
    # A real DCGAN (Radford layout, LayerNorm) on MNIST framed at 32 px; checkpointed trace. Sized for a
    # GPU: on 2 CPU cores a step takes seconds (docs/benchmarks.md).
    "dcgan32": _preset(
        "dcgan32",
        data=DataConfig(source="mnist", n_train=10_000, image_size=32),
        model=ModelConfig(arch="dcgan-radford", width=64, z_dim=100),
        train=TrainConfig(epochs=5, lr_d=0.0002, lr_g=0.0002, lr_schedule=((5, 0.00002, 0.00002),), optimizer="adam",
                          betas=(0.5, 0.999), scheme="alternating", trace_mode="checkpoints"),
    ),
    # MNIST as GANs are trained today: a DCGAN (two conv layers, LayerNorm) with Adam and alternating
    # D/G steps; better digits than the paper's sigmoid smallcnn (docs/benchmarks.md). The traced last epoch runs
    # at a tenth of the lr, where the backward recursion holds (docs/architecture.md). GELU units: with
    # ReLU/LeakyReLU leave-one-out does not respond smoothly to a removal (tau 0.16-0.39 for FID in float32);
    # with GELU it matches the estimate in float32 as in float64 (tau 0.99-1.00, seeds 0-2), so the preset
    # trains in float32 since 2026-12-05: about 4x faster, and its spot check costs 1.2-1.4x the pass instead of
    # 3-5x, since a replay keeps the training's dtype (docs/benchmarks.md, "mnist-adam in float32").
    "mnist-adam": _preset(
        "mnist-adam",
        data=DataConfig(source="mnist", n_train=10_000),
        model=ModelConfig(arch="dcgan", width=32, activation="gelu"),
        train=TrainConfig(epochs=10, lr_d=0.0004, lr_g=0.0004, lr_schedule=((10, 0.00004, 0.00004),), optimizer="adam",
                          betas=(0.5, 0.999), scheme="alternating", dtype="float32"),
    ),
    # 32x32 folders of your own images (RGB or grey): a GAN to pretrain and then fine-tune and trace (gan-influence
    # finetune). The DCGAN layout (LayerNorm, never BatchNorm) at width 64 with GELU units (smooth, as mnist-adam's:
    # the estimate is first order), chosen by bench/folder32.py's search on the synthetic shapes set: at an equal
    # budget of about 250 CPU seconds its test FID (autoencoder features) was 1.00, ReLU units 1.26, Radford's
    # layout at width 16 6.07 (GELU) / 6.96 (ReLU), at width 32 18.0 (docs/benchmarks.md).
    "folder32": _preset(
        "folder32",
        data=DataConfig(source="folder", image_size=32, color=AUTO, n_valid=AUTO, n_test=AUTO),
        model=ModelConfig(arch="dcgan", width=64, z_dim=100, activation="gelu"),
        train=TrainConfig(epochs=60, batch_size=64, lr_d=0.0002, lr_g=0.0002, optimizer="adam", betas=(0.5, 0.999),
                          scheme="alternating"),
        eval=EvalConfig(feature=AUTO),
    ),
}


# New MNIST runs (CLI and app): Adam gives better digits than the paper's SGD (test FID 1.4-2.0 against quick's
# 2.2-2.4; docs/benchmarks.md, issue 10), trains in about 50 s on 2 cores (float32), and its estimates match
# leave-one-out.
DEFAULT_PRESET = "mnist-adam"


def preset(name: str, seed: int = 0) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], seed=seed)
