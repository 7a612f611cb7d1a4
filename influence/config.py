"""Typed run configuration, presets and `--set key=value` overrides.

A run is fully described by a `RunConfig`; its run id is a hash of the canonical
JSON of that config (seed included), so the same config always maps to the same
cached run on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin

from .errors import ConfigError

_PRESET_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")
DATA_SOURCES = ("mnist", "torchvision-mnist", "fashion-mnist", "folder", "normal2d")
ARCHS = ("smallcnn", "dcgan", "dcgan-radford", "fcgan")
ACTIVATIONS = ("default", "softplus", "silu", "gelu")
INITS = ("torch", "glorot-uniform")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEMES = ("simultaneous", "alternating")
TRACE_MODES = ("auto", "snapshots", "checkpoints")
# train.trace_lr: the traced epochs' learning rate as the schedule says (no probe), chosen by the probe
# (influence.tracelr), or as the schedule says with the probe run beside it (its warning when the rate is too high).
TRACE_LRS = ("schedule", "auto", "check")
# train.trace_lr_confirm: which of the probe's rungs are confirmed on the whole first traced epoch (influence.tracelr)
TRACE_LR_CONFIRMS = ("replayed", "measured", "passed", "off")
# trace_mode=auto: snapshots when the whole trace fits this many MB of disk, else checkpoints.
TRACE_BUDGET_MB = 1024
FEATURES = ("mnist-cnn", "inception", "autoencoder", "auto")
LABELS = ("folders", "none")
COLORS = ("gray", "rgb", "auto")
AUTO = "auto"
# Sizes each generator makes (others: any of 28, 32, 64).
ARCH_SIZES = {"smallcnn": (28,), "dcgan": (28, 32), "dcgan-radford": (32, 64)}
# Own images: what a preset sets for MNIST that the images decide instead (unless set explicitly): read from
# the images, hold out 10% + 10%, all images, features by the labels (influence.data.prepare resolves them).
FOLLOW_SOURCE = {"data.color": AUTO, "data.image_size": AUTO, "data.n_valid": AUTO, "data.n_test": AUTO,
                 "data.n_train": None, "eval.feature": AUTO}


def _added(default: Any, help: str) -> Any:
    """A field added after the first release: left out of the run id at its default, so older runs keep theirs."""
    return field(default=default, metadata={"help": help, "id_omitted_at_default": True})


@dataclass(frozen=True)
class DataConfig:
    source: str = field(default="mnist", metadata={"help": f"one of {DATA_SOURCES}"})
    n_train: int | None = field(
        default=None, metadata={"help": "use a seeded random subset of this many training images"}
    )
    root: str | None = field(
        default=None, metadata={"help": "torchvision root folder, or a folder/zip of your images (made absolute)"}
    )
    image_size: int | str = field(default=28, metadata={
        "help": "images are resized to this square size: 28, 32, 64, or auto (folder source: the size the model "
                "makes that is nearest above the images' own, read from them)"})
    color: str = field(default="gray", metadata={
        "help": f"one of {COLORS}: auto (folder source) = rgb when the images hold colour, read from them"})
    labels: str = field(
        default="folders",
        metadata={
            "help": f"folder source, one of {LABELS}: first-level sub-folder = class (when every image is in one), "
            "or none (sub-folders are only storage)",
            "id_omitted_at_default": True,
        },
    )
    n_valid: int | str = field(default=1000, metadata={
        "help": "validation images/points (normal2d; folder source: held out of training, the split influence is "
                "measured on; auto = 10%, at least 20)"})
    n_test: int | str = field(default=1000, metadata={
        "help": "test images/points (normal2d; folder source: held out, the split cleansing is judged on; auto = "
                "10%, at least 20)"})
    dtype: str = field(
        default="float32",
        metadata={
            "help": "normal2d: precision of the sampled points; float64 keeps them as sampled (the paper's code), "
            "float32 rounds them (earlier versions)",
            "id_omitted_at_default": True,
        },
    )
    # Folder source: the sha256 of its files (paths, sizes, contents), recorded when a config is made
    # (influence.data.prepare), so a run is bound to the exact images it was trained on.
    fingerprint: str | None = _added(None, "folder source: fingerprint of the images (recorded automatically)")
    name: str | None = field(default=None, metadata={
        "help": "the data set's name in run ids and labels (folder source: the folder's or zip's name)",
        "id_omitted_at_default": True, "not_in_id": True})


@dataclass(frozen=True)
class ModelConfig:
    arch: str = field(default="smallcnn", metadata={
        "help": f"one of {ARCHS}: smallcnn (the paper's MNIST GAN), dcgan (two conv layers, 28/32 px), "
                "dcgan-radford (Radford et al.'s DCGAN with LayerNorm, 32/64 px), fcgan (the 2D toy)"})
    width: int = field(default=8, metadata={"help": "channels of the conv layers (smallcnn: 8 or 32)"})
    z_dim: int = field(default=32, metadata={"help": "latent dimension"})
    activation: str = field(
        default="default",
        metadata={
            "help": "hidden activations: default (the paper's: sigmoid in smallcnn, ReLU in dcgan/fcgan), or a "
            "smooth one, softplus, silu or gelu (so a whole removal stays close to the first-order estimate)",
            "id_omitted_at_default": True,
        },
    )
    bias: bool = field(
        default=True,
        metadata={"help": "fcgan: dense layers with biases (the paper's code has none)", "id_omitted_at_default": True},
    )
    init: str = field(
        default="torch",
        metadata={
            "help": f"weight initialisation, one of {INITS}: PyTorch's default, or Glorot-uniform kernels and zero "
            "biases (the paper's code)",
            "id_omitted_at_default": True,
        },
    )


    # Bring your own GAN: start from these state dicts (torch, loaded weights_only, or safetensors). The
    # checksums, not the paths, enter the run id; they are filled in from the files when a config is made.
    init_g: str | None = field(
        default=None,
        metadata={"help": "start G from this state dict (.pt or .safetensors) of the same architecture",
                  "id_omitted_at_default": True, "not_in_id": True},
    )
    init_d: str | None = field(
        default=None,
        metadata={"help": "start D from this state dict (.pt or .safetensors) of the same architecture",
                  "id_omitted_at_default": True, "not_in_id": True},
    )
    init_g_sha256: str | None = field(
        default=None, metadata={"help": "sha256 of init_g (recorded automatically)", "id_omitted_at_default": True}
    )
    init_d_sha256: str | None = field(
        default=None, metadata={"help": "sha256 of init_d (recorded automatically)", "id_omitted_at_default": True}
    )
    # The fine-tune's optimizer state: fresh unless given (torch.optim state dicts of each player, e.g. Adam's
    # exp_avg / exp_avg_sq / step; `finetune` writes a store run's final state in that form).
    init_opt_d: str | None = field(default=None, metadata={
        "help": "start D's optimizer state from this torch.optim state dict (.pt, weights_only); default: fresh",
        "id_omitted_at_default": True, "not_in_id": True})
    init_opt_g: str | None = field(default=None, metadata={
        "help": "start G's optimizer state from this torch.optim state dict (as init_opt_d)",
        "id_omitted_at_default": True, "not_in_id": True})
    init_from_run: str | None = field(default=None, metadata={
        "help": "the store run whose final weights (and optimizer state, if taken) init_g / init_d are (gan-influence "
                "finetune --from; recorded, the checksums identify the files)",
        "id_omitted_at_default": True, "not_in_id": True})
    init_opt_d_sha256: str | None = _added(None, "sha256 of init_opt_d (recorded automatically)")
    init_opt_g_sha256: str | None = _added(None, "sha256 of init_opt_g (recorded automatically)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=2, metadata={"help": "training epochs"})
    batch_size: int = field(default=100, metadata={"help": "minibatch size (real and fake)"})
    lr_d: float = field(default=0.01, metadata={"help": "SGD learning rate of the discriminator"})
    lr_g: float = field(default=0.01, metadata={"help": "SGD learning rate of the generator"})
    lr_schedule: tuple[tuple[int, float, float], ...] = field(
        default=(),
        metadata={
            "help": "per-epoch overrides 'EPOCH:LR_D:LR_G,...' (1-based epoch from which the pair holds)"
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "L2 penalty wd/2*|w|^2 on weights (not biases)"})
    trace_epochs: int = field(default=1, metadata={"help": "record the trace of the last K epochs"})
    trace_steps: int | None = field(
        default=None, metadata={"help": "record only the last N steps instead of whole epochs"}
    )
    dtype: str = field(default="float32", metadata={"help": "float32 or float64 training"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu or cuda"})
    # Fields below were added after the first release: left out of the run id at their default.
    optimizer: str = _added("sgd", f"optimizer of both players: {OPTIMIZERS} (each player has its own state and lr)")
    betas: tuple[float, float] = _added((0.9, 0.999), "Adam's (beta1, beta2), e.g. '0.5,0.999' (GANs) or '0.0,0.99'")
    eps: float = _added(1e-8, "Adam's epsilon in the denominator")
    momentum: float = _added(0.9, "heavy-ball momentum coefficient (optimizer=momentum)")
    nesterov: bool = _added(False, "Nesterov momentum (optimizer=momentum)")
    decoupled_wd: bool = _added(False, "Adam only: decoupled weight decay (AdamW) instead of the L2 term in the loss")
    scheme: str = _added("simultaneous", "simultaneous (both players step at the same parameters, the paper) or "
                         "alternating (D steps, then a G step at the updated D, each with its own z)")
    d_steps: int = _added(1, "alternating: D steps per G step (each on its own minibatch)")
    ema_decay: float = _added(0.0, "EMA of the generator's weights, ema <- d*ema + (1-d)*theta_G after each G step "
                              "(0 = off)")
    # auto and snapshots give bit-identical results (so do checkpoints) and share the ids of runs from before auto
    # existed (then snapshots was the default); an explicit checkpoints keeps the ids it always had.
    trace_mode: str = field(default="auto", metadata={
        "help": "auto (snapshots when the whole trace fits train.trace_budget_mb of disk, else checkpoints), "
                "snapshots (the full training state before every traced step) or checkpoints (every K steps; the "
                "estimator and replays recompute the steps between, bit for bit)",
        "id_omitted_values": ("auto", "snapshots")})
    checkpoint_every: int | None = _added(None, "trace_mode=checkpoints: store the state every K traced steps "
                                          "(default: the longest segment whose states fit 4 GiB of memory, at least "
                                          "about sqrt(steps))")
    trace_budget_mb: int = field(default=TRACE_BUDGET_MB, metadata={
        "help": f"trace_mode=auto: the disk the trace may take before checkpoints replace snapshots (default "
                f"{TRACE_BUDGET_MB} MB = 1 GiB; storage only, results are the same)", "not_in_id": True})
    trace_lr: str = _added("schedule", "learning rate of the traced epochs: schedule (as lr_schedule says), auto "
                           "(before the traced epochs, probe a ladder of rates and take the largest whose growth of "
                           "|u|, extrapolated to the whole trace, stays reliable), or check (as the schedule says, "
                           "with the probe beside it: a warning when the rate is far above the probe's)")
    trace_lr_probe_steps: int | None = _added(None, "trace_lr probe: traced steps per rung (default: a tenth of the "
                                              "traced steps, 8 to 50)")
    # was a bool: passed was true, off false; a run probed then keeps its id (`id_values`), and its stored config loads
    trace_lr_confirm: str = field(default="replayed", metadata={
        "help": "trace_lr probe: how a rung is confirmed. replayed: every rung whose short segment did not itself "
                "grow |u| past the threshold is trained and walked over the whole first traced epoch (the walk's "
                "growth is its verdict), and a stable one replays that epoch without the main metric's most "
                "harmful 5%, passing only when the metric moved as predicted (within 1/3x to 3x); measured: the "
                "walk alone; passed: only a rung whose segment extrapolates as reliable is walked (short segments "
                "under-read folder32's epoch about 90-fold and over-read dcgan32's); off: the segment's "
                "extrapolation decides",
        "in_id_when": ("trace_lr", ("auto", "check")), "id_values": {"passed": True, "off": False}})


@dataclass(frozen=True)
class EvalConfig:
    n_valid_z: int = field(default=2000, metadata={"help": "fixed validation z (influence is taken on these)"})
    n_test_z: int = field(default=2000, metadata={"help": "fixed test z (cleansing is judged on these)"})
    n_grid: int = field(default=64, metadata={"help": "samples in the per-epoch grid (same z every epoch)"})
    feature: str = field(
        default="mnist-cnn",
        metadata={"help": "IS/FID features: mnist-cnn (a classifier trained on the labels), inception (pytorch-fid's "
                          "Inception-v3), autoencoder (trained on unlabelled images; FID not comparable to "
                          "published FIDs), or auto (the classifier when the data have labels, else the autoencoder)"},
    )
    inception_weights: str | None = field(
        default=None, metadata={"help": "path to pytorch-fid's pt_inception weights file"}
    )
    metrics_every_epoch: bool = field(default=True, metadata={"help": "evaluate test metrics after every epoch"})
    ema_generator: bool = _added(True, "with train.ema_decay > 0: metrics (and so influence) are taken on the EMA "
                                 "generator")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    preset: str = field(default="custom", compare=False, metadata={"help": "name only; not part of the id"})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result (the preset name does not).

        Fields added after the first release are left out at their default, so runs
        made before they existed keep their ids; a field whose values give the same result
        (`id_omitted_values`: trace_mode auto and snapshots) is left out at those values; a field
        that only acts beside another's values (`in_id_when`) is in the id exactly then.
        """
        d = self.to_dict()
        d.pop("preset")
        for section in (self.data, self.model, self.train, self.eval):
            part = d[_section_name(section)]
            for f in fields(section):
                value = getattr(section, f.name)
                when = f.metadata.get("in_id_when")  # a field that only matters beside another field's values
                if when is not None:
                    if getattr(section, when[0]) not in when[1]:
                        part.pop(f.name)
                    else:  # a value the id names as an earlier type did (a bool before it had three values)
                        part[f.name] = f.metadata.get("id_values", {}).get(value, value)
                    continue
                if f.metadata.get("not_in_id") or (f.metadata.get("id_omitted_at_default") and value == f.default) \
                        or value in f.metadata.get("id_omitted_values", ()):
                    part.pop(f.name)
        return d

    @property
    def run_id(self) -> str:
        """'<preset>-s<seed>-<hash>', own images '<data set>-<preset>-s<seed>-<hash>'."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        named = f"{self.data.name}-" if self.data.name else ""
        return f"{named}{self.preset}-s{self.seed}-{digest}"

    @property
    def is_2d(self) -> bool:
        return self.data.source == "normal2d"

    def lr_at_epoch(self, epoch: int) -> tuple[float, float]:
        """(lr_d, lr_g) in force during 1-based `epoch`."""
        lr = (self.train.lr_d, self.train.lr_g)
        for start, lr_d, lr_g in sorted(self.train.lr_schedule):
            if epoch >= start:
                lr = (lr_d, lr_g)
        return lr

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunConfig":
        return _build(RunConfig, d, "")


def _section_name(section) -> str:
    return {DataConfig: "data", ModelConfig: "model", TrainConfig: "train", EvalConfig: "eval"}[type(section)]


def _build(cls, d: dict[str, Any], prefix: str):
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in sorted(unknown))}")
    kwargs = {}
    for name, value in d.items():
        f = known[name]
        sub = _dataclass_type(f)
        if sub is not None:
            kwargs[name] = _build(sub, value, prefix + name + ".")
        elif name == "lr_schedule":
            kwargs[name] = tuple(tuple(x) for x in value)
        elif name == "betas":
            kwargs[name] = tuple(value)
        elif name == "trace_lr_confirm" and isinstance(value, bool):  # a run probed when it was a bool
            kwargs[name] = "passed" if value else "off"
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _dataclass_type(f: dataclasses.Field):
    t = f.type if not isinstance(f.type, str) else _SUBCONFIGS.get(f.type)
    return t if dataclasses.is_dataclass(t) else None


_SUBCONFIGS = {"DataConfig": DataConfig, "ModelConfig": ModelConfig, "TrainConfig": TrainConfig, "EvalConfig": EvalConfig}


# ---------------------------------------------------------------- presets
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
    ),    # The toy as GANs are trained today: Adam (betas 0.5/0.999). Smooth units (softplus) keep a whole
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
    # at a tenth of the lr, where the backward recursion holds (docs/architecture.md). GELU units and
    # float64: with ReLU/LeakyReLU, or in float32 (a removal moves the weights by ~1e-7 relative, the
    # size of float32's rounding), leave-one-out does not respond smoothly to a removal (tau 0.27 for
    # FID); with GELU in float64 it matches the estimate (docs/benchmarks.md), and the digits are better than ReLU's.
    "mnist-adam": _preset(
        "mnist-adam",
        data=DataConfig(source="mnist", n_train=10_000),
        model=ModelConfig(arch="dcgan", width=32, activation="gelu"),
        train=TrainConfig(epochs=10, lr_d=0.0004, lr_g=0.0004, lr_schedule=((10, 0.00004, 0.00004),), optimizer="adam",
                          betas=(0.5, 0.999), scheme="alternating", dtype="float64"),
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
# New MNIST runs (CLI and app): Adam gives better digits than the paper's SGD (test FID 1.4-1.9 against quick's
# 2.2-2.4; docs/benchmarks.md, issue 10), trains in about 4 minutes on 2 cores, and its estimates match leave-one-out.
DEFAULT_PRESET = "mnist-adam"


def preset(name: str, seed: int = 0) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], seed=seed)


# ---------------------------------------------------------------- overrides
def apply_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply `section.key=value` strings (e.g. `train.lr_d=0.001`, `seed=3`)."""
    d = cfg.to_dict()
    assigned = set()
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        assigned.add(key.strip())
        path = key.strip().split(".")
        target_cls, target = RunConfig, d
        for part in path[:-1]:
            f = {f.name: f for f in fields(target_cls)}.get(part)
            if f is None or _dataclass_type(f) is None:
                raise ConfigError(f"unknown config key '{key}'")
            target_cls, target = _dataclass_type(f), target[part]
        f = {f.name: f for f in fields(target_cls)}.get(path[-1])
        if f is None or _dataclass_type(f) is not None:
            valid = ", ".join(_all_keys())
            raise ConfigError(f"unknown config key '{key}'; valid keys: {valid}")
        target[path[-1]] = _parse_value(f, raw.strip(), key)
    out = RunConfig.from_dict(d)
    if out.data.source == "folder" and cfg.data.source != "folder":
        out = own_images_defaults(out, keep=assigned)
    out = with_init_checksums(out)
    validate(out)
    return out


def own_images_defaults(cfg: RunConfig, keep: set[str] = frozenset()) -> RunConfig:
    """The config with FOLLOW_SOURCE's values (the images decide colour, size, splits and features), except
    the keys in `keep` (set explicitly)."""
    d = cfg.to_dict()
    for key, value in FOLLOW_SOURCE.items():
        if key not in keep:
            section, name = key.split(".")
            d[section][name] = value
    return RunConfig.from_dict(d)


INIT_FILES = ("init_g", "init_d", "init_opt_g", "init_opt_d")


def with_init_checksums(cfg: RunConfig) -> RunConfig:
    """The config with the sha256 of model.init_g / init_d (and the optimizer states init_opt_g / init_opt_d) filled
    in from the files (they enter the run id)."""
    changes = {}
    for name in INIT_FILES:
        path = getattr(cfg.model, name)
        sha_field = f"{name}_sha256"
        if path is None:
            if getattr(cfg.model, sha_field) is not None:
                changes[sha_field] = None
            continue
        changes[sha_field] = hashlib.sha256(read_init_file(path, f"model.{name}")).hexdigest()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes)) if changes else cfg


MAX_INIT_BYTES = 1 << 30  # 1 GiB: 268M float32 parameters, far above any built-in architecture


def read_init_file(path: str | Path, key: str) -> bytes:
    """The bytes of a pretrained-weights file (model.init_g / init_d): a regular file of at most MAX_INIT_BYTES,
    else one ConfigError line. Opened without blocking and checked before reading: a FIFO would hang the
    reader (the app's field takes any path), /dev/zero would fill memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"{key}: cannot read '{path}' ({getattr(e, 'strerror', None) or e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{key}: '{path}' is not a regular file (a folder, FIFO or device); give a .pt or "
                              ".safetensors weights file")
        if info.st_size > MAX_INIT_BYTES:
            raise ConfigError(f"{key}: '{path}' has {info.st_size / 2**20:.0f} MiB, more than the "
                              f"{MAX_INIT_BYTES >> 20} MiB a weights file of these architectures can need")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_INIT_BYTES + 1)
        if len(data) > MAX_INIT_BYTES:  # it grew while being read
            raise ConfigError(f"{key}: '{path}' is larger than {MAX_INIT_BYTES >> 20} MiB")
        return data
    except OSError as e:
        raise ConfigError(f"{key}: cannot read '{path}' ({e.strerror or e})") from None
    finally:
        os.close(fd)


def _all_keys() -> list[str]:
    keys = []
    for f in fields(RunConfig):
        sub = _dataclass_type(f)
        keys += [f"{f.name}.{g.name}" for g in fields(sub)] if sub else [f.name]
    return keys


def _parse_value(f: dataclasses.Field, raw: str, key: str) -> Any:
    if f.name == "lr_schedule":
        return _parse_schedule(raw, key)
    if f.name == "betas":
        try:
            b1, b2 = (float(b) for b in raw.split(","))
        except ValueError:
            raise ConfigError(f"{key}: expected two numbers 'BETA1,BETA2' (e.g. 0.5,0.999), got '{raw}'") from None
        return [b1, b2]
    types = _field_types(f)
    if raw.lower() in ("none", "null", "") and type(None) in types:
        return None
    for t in types:
        try:
            if t is bool:
                if raw.lower() in ("true", "1", "yes"):
                    return True
                if raw.lower() in ("false", "0", "no"):
                    return False
                continue
            if t in (int, float, str):
                return t(raw)
        except ValueError:
            continue
    names = "/".join(t.__name__ for t in types)
    raise ConfigError(f"{key}: cannot read '{raw}' as {names}")


def _parse_schedule(raw: str, key: str) -> list[list[float]]:
    if raw.lower() in ("", "none"):
        return []
    out = []
    for part in raw.split(","):
        bits = part.split(":")
        try:
            if len(bits) != 3:
                raise ValueError
            out.append([int(bits[0]), float(bits[1]), float(bits[2])])
        except ValueError:
            raise ConfigError(f"{key}: expected EPOCH:LR_D:LR_G[,...], got '{part}'") from None
    return out


def _field_types(f: dataclasses.Field) -> tuple[type, ...]:
    t = f.type
    if isinstance(t, str):
        mapping = {"int": (int,), "float": (float,), "str": (str,), "bool": (bool,),
                   "int | None": (int, type(None)), "str | None": (str, type(None)), "int | str": (int, str),
                   "float | None": (float, type(None))}
        return mapping.get(t, (str,))
    if get_origin(t) is not None:
        return tuple(get_args(t))
    return (t,)


def validate(cfg: RunConfig) -> None:
    """Reject configs that cannot train, with one clear reason."""
    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval
    checks = [
        (isinstance(cfg.seed, int) and 0 <= cfg.seed < 2**32, "seed must be an integer in 0..2^32-1"),
        (_PRESET_NAME.fullmatch(cfg.preset) is not None, "preset names use letters, digits, '-' and '_' (at most 40)"),
        (d.source in DATA_SOURCES, f"data.source must be one of {DATA_SOURCES}, got '{d.source}'"),
        (d.n_train is None or d.n_train >= 1, "data.n_train must be positive"),
        (d.color in COLORS, f"data.color must be one of {COLORS}"),
        (d.labels in LABELS, f"data.labels must be one of {LABELS}"),
        (all((getattr(m, f) is None) == (getattr(m, f + "_sha256") is None) for f in INIT_FILES),
         "model.init_g/init_d/init_opt_g/init_opt_d need their sha256: give the files with --init-g/--init-d (or "
         "--set, which records it)"),
        ((m.init_opt_d is None and m.init_opt_g is None) or t.optimizer != "sgd",
         "model.init_opt_d/init_opt_g: plain SGD keeps no optimizer state to start from"),
        (d.image_size in (28, 32, 64, AUTO), "data.image_size must be 28, 32, 64 or auto"),
        (d.image_size == AUTO or d.image_size in ARCH_SIZES.get(m.arch, (d.image_size,)),
         f"{m.arch} generates images of {' or '.join(f'{s}x{s}' for s in ARCH_SIZES.get(m.arch, ()))} pixels "
         f"(data.image_size)"),
        (all(isinstance(n, int) and n >= 2 or n == AUTO for n in (d.n_valid, d.n_test)),
         "data.n_valid and data.n_test must be at least 2 (or auto)"),
        (d.source == "folder" or AUTO not in (d.color, d.image_size, d.n_valid, d.n_test),
         "data.color, data.image_size, data.n_valid and data.n_test can be auto for the folder source only"),
        (d.fingerprint is None or d.source == "folder", "data.fingerprint belongs to the folder source"),
        (d.name is None or _PRESET_NAME.fullmatch(d.name) is not None,
         "data.name uses letters, digits, '-' and '_' (at most 40)"),
        (m.arch in ARCHS, f"model.arch must be one of {ARCHS}, got '{m.arch}'"),
        (1 <= m.width <= 512, "model.width must lie in 1..512"),
        (1 <= m.z_dim <= 1024, "model.z_dim must lie in 1..1024"),
        (m.activation in ACTIVATIONS, f"model.activation must be one of {ACTIVATIONS}"),
        (m.init in INITS, f"model.init must be one of {INITS}, got '{m.init}'"),
        (m.bias or m.arch == "fcgan", "model.bias=false is implemented for fcgan only"),
        (d.dtype in DTYPES, f"data.dtype must be one of {DTYPES}"),
        (d.dtype == "float32" or d.source == "normal2d", "data.dtype=float64 applies to normal2d data only"),
        ((m.arch == "fcgan") == (d.source == "normal2d"), "fcgan goes with normal2d data and only with it"),
        (t.epochs >= 1, "train.epochs must be at least 1"),
        (t.batch_size >= 1, "train.batch_size must be at least 1"),
        (t.lr_d > 0 and t.lr_g > 0, "learning rates must be positive"),
        (all(lr_d > 0 and lr_g > 0 for _, lr_d, lr_g in t.lr_schedule), "learning rates must be positive"),
        (all(1 <= ep <= t.epochs for ep, _, _ in t.lr_schedule), "lr_schedule epochs must lie in 1..epochs"),
        (t.weight_decay >= 0, "train.weight_decay must not be negative"),
        (1 <= t.trace_epochs <= t.epochs, "train.trace_epochs must lie in 1..epochs"),
        (t.trace_steps is None or t.trace_steps >= 1, "train.trace_steps must be positive"),
        (t.dtype in DTYPES, f"train.dtype must be one of {DTYPES}"),
        (t.device in DEVICES, f"train.device must be one of {DEVICES}"),
        (t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {OPTIMIZERS}, got '{t.optimizer}'"),
        (len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas must be two numbers in [0, 1)"),
        (t.eps > 0, "train.eps must be positive"),
        (0 <= t.momentum < 1, "train.momentum must lie in [0, 1)"),
        (not t.decoupled_wd or t.optimizer == "adam", "train.decoupled_wd (AdamW) needs train.optimizer=adam"),
        (t.scheme in SCHEMES, f"train.scheme must be one of {SCHEMES}, got '{t.scheme}'"),
        (1 <= t.d_steps <= 100, "train.d_steps must lie in 1..100"),
        (t.d_steps == 1 or t.scheme == "alternating", "train.d_steps > 1 needs train.scheme=alternating"),
        (0 <= t.ema_decay < 1, "train.ema_decay must lie in [0, 1) (0 = off)"),
        (t.trace_mode in TRACE_MODES, f"train.trace_mode must be one of {TRACE_MODES}"),
        (t.checkpoint_every is None or t.checkpoint_every >= 1, "train.checkpoint_every must be positive"),
        (t.trace_budget_mb >= 1, "train.trace_budget_mb must be at least 1"),
        (t.trace_lr in TRACE_LRS, f"train.trace_lr must be one of {TRACE_LRS}, got '{t.trace_lr}'"),
        (t.trace_lr_confirm in TRACE_LR_CONFIRMS,
         f"train.trace_lr_confirm must be one of {TRACE_LR_CONFIRMS}, got '{t.trace_lr_confirm}'"),
        (t.trace_lr_probe_steps is None or t.trace_lr_probe_steps >= 2, "train.trace_lr_probe_steps must be at least 2"),
        (2 <= e.n_valid_z <= 100_000 and 2 <= e.n_test_z <= 100_000, "eval.n_valid_z and eval.n_test_z must lie in 2..100000"),
        (1 <= e.n_grid <= 10_000, "eval.n_grid must lie in 1..10000"),
        (e.feature in FEATURES, f"eval.feature must be one of {FEATURES}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def describe_fields() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every config key: the CLI help and the app form use it."""
    out = []
    defaults = RunConfig()
    for f in fields(RunConfig):
        sub = _dataclass_type(f)
        if sub is None:
            out.append((f.name, getattr(defaults, f.name), f.metadata.get("help", "")))
            continue
        for g in fields(sub):
            out.append((f"{f.name}.{g.name}", getattr(getattr(defaults, f.name), g.name), g.metadata.get("help", "")))
    return out
