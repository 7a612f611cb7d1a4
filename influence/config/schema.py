"""The run configuration's sections as typed dataclasses with help text, and the run id: a hash of the
canonical JSON of everything that determines the result (seed included)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigError

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
    # In the id only while root_in_id: own images are bound to a run by their fingerprint, not by where they lie
    root: str | None = field(
        default=None, metadata={"help": "torchvision root folder, or a folder/zip of your images (made absolute)",
                                "in_id_when": ("root_in_id", (True,))}
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
    root_in_id: bool = _added(True, "whether data.root is part of the run id: yes for runs made before "
                              "2026-12-05; own images prepared since are bound to their runs by the fingerprint "
                              "alone (recorded automatically), so the same images in another folder are the same "
                              "run, and a moved folder keeps its runs")


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
            part = d[section_name(section)]
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
        return build(RunConfig, d, "")


def section_name(section) -> str:
    return {DataConfig: "data", ModelConfig: "model", TrainConfig: "train", EvalConfig: "eval"}[type(section)]


def build(cls, d: dict[str, Any], prefix: str):
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in sorted(unknown))}")
    kwargs = {}
    for name, value in d.items():
        f = known[name]
        sub = dataclass_type(f)
        if sub is not None:
            kwargs[name] = build(sub, value, prefix + name + ".")
        elif name == "lr_schedule":
            kwargs[name] = tuple(tuple(x) for x in value)
        elif name == "betas":
            kwargs[name] = tuple(value)
        elif name == "trace_lr_confirm" and isinstance(value, bool):  # a run probed when it was a bool
            kwargs[name] = "passed" if value else "off"
        else:
            kwargs[name] = value
    return cls(**kwargs)


def dataclass_type(f: dataclasses.Field):
    t = f.type if not isinstance(f.type, str) else _SUBCONFIGS.get(f.type)
    return t if dataclasses.is_dataclass(t) else None


_SUBCONFIGS = {"DataConfig": DataConfig, "ModelConfig": ModelConfig, "TrainConfig": TrainConfig, "EvalConfig": EvalConfig}
