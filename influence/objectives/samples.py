"""Objectives on chosen generated samples: what made the generator produce G(z*)?

Each is a differentiable function of the generator's parameters on a set of chosen latent vectors z*
(stored with the result), one row per sample unless said otherwise. Sign convention as everywhere:
influence_j ~= objective(trained without j) - objective(trained with j); harmful = removing j moves the
objective the way the user wants.

| objective | rows | value | better | harmful influence |
| --- | --- | --- | --- | --- |
| realism | 1 per sample | logit of the run's final D on G(z*) (D held fixed, also in replays) | higher | positive |
| clarity | 1 per sample | log-probability the feature classifier gives the sample's class (fixed at construction: its top class at the end of training) | higher | positive |
| reference | 1 per sample | minus the feature-space distance from G(z*) to a reference image | higher (closer) | positive |
| position | 2 per sample (x, y) | the 2D sample's coordinates: each training point gets a displacement vector | none: a displacement | - |
| class | 1 | mean soft share of class c over the set of z | the way the user wants (more / less) | positive / negative |

The identity (kind, sha256 of z*, the fixed class or reference, ...) enters the name, `<kind>-<hash>`, so
results on other samples or another reference never replace each other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.decode import decode_image
from ..errors import ConfigError
from .base import Objective

KINDS = ("realism", "clarity", "reference", "position", "class")
KIND_LABELS = {"realism": "realism", "clarity": "clarity", "reference": "pull toward the reference",
               "position": "position", "class": "class share"}
WANTS = ("more", "less")
MAX_SAMPLES = 64  # stacked adjoints of one pass (position: 2 rows each)
MAX_REFERENCE_BYTES = 20 * 2**20


def z_digest(z: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(z.detach().cpu().double().numpy()).tobytes()).hexdigest()


def features_of(ctx, images: torch.Tensor) -> torch.Tensor:
    """Feature-net features (float64, differentiable w.r.t. the images) of a batch of images: the space of the
    run's FID and of its data map; the flattened values where the run has no feature net (2D points)."""
    if ctx.features is None:
        return images.reshape(len(images), -1).double()
    return ctx.features(images.double())[0]


def class_log_probs(ctx, images: torch.Tensor) -> torch.Tensor:
    """(n, classes) log-probabilities of the run's feature classifier (float64, differentiable)."""
    if ctx.features is None or not ctx.features.has_probs:
        raise ConfigError("clarity and class share need the run's feature classifier: MNIST or a folder of images "
                          "with labels (class sub-folders) and eval.feature=mnist-cnn")
    _, logits = ctx.features.net.features_and_logits(images.double())
    return F.log_softmax(logits.double(), dim=1)


class SampleObjective(Objective):
    """An objective on chosen latent vectors z (n, z_dim); rows belong to samples (`row_sample`)."""

    kind: str
    per_sample = True  # False: one value over the whole set of z (class share)

    def __init__(self, z: torch.Tensor, params: dict):
        if z.dim() != 2 or len(z) == 0:
            raise ConfigError("samples: give at least one latent vector")
        self.z = z.detach().cpu().double()
        self.params = params
        self.label = f"{KIND_LABELS[self.kind]} of {len(self.z)} sample{'s' if len(self.z) != 1 else ''}"
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        self.name = f"{self.kind}-{digest}"

    @property
    def n_samples(self) -> int:
        return len(self.z)

    @property
    def rows(self) -> int:  # type: ignore[override]
        return len(self.row_sample)

    @property
    def row_sample(self) -> np.ndarray:
        """The sample each output row belongs to."""
        return np.arange(len(self.z))

    def row_labels(self) -> list[str]:
        return [f"sample {i}" for i in self.row_sample]

    def identity(self) -> dict:
        return {"objective": self.kind, "n": len(self.z), "z_sha256": z_digest(self.z), **self.params}

    def sign_sentence(self) -> str:
        side = "positive" if self.harmful_sign > 0 else "negative"
        return (f"predicted change of the {KIND_LABELS[self.kind]} if the training image is removed; {side} = "
                f"harmful (removal moves it the way you want: {'up' if self.higher_is_better else 'down'})")

    def generate(self, ctx, theta_g: torch.Tensor) -> torch.Tensor:
        return ctx.gan.generate(theta_g, self.z.to(theta_g.device, theta_g.dtype))


class Realism(SampleObjective):
    """The final discriminator's logit of G(z*); D stays the trained run's final D (in replays too), so only the
    generator's change counts."""

    kind, higher_is_better = "realism", True

    def __init__(self, z: torch.Tensor, final_d: torch.Tensor):
        self.final_d = final_d.detach().cpu()
        super().__init__(z, {"discriminator": "final"})

    def values(self, ctx, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        return ctx.gan.logits(self.final_d.to(theta_g.device, theta_g.dtype), self.generate(ctx, theta_g)).reshape(-1)


class Clarity(SampleObjective):
    """The feature classifier's log-probability of each sample's class, the class fixed at construction (the
    top class of G(z*) at the end of training), so a replay that blurs the digit lowers it."""

    kind, higher_is_better = "clarity", True

    def __init__(self, z: torch.Tensor, classes: list[int]):
        if len(classes) != len(z):
            raise ConfigError("clarity: one class per sample")
        self.classes = [int(c) for c in classes]
        super().__init__(z, {"classes": self.classes})

    def values(self, ctx, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        log_p = class_log_probs(ctx, self.generate(ctx, theta_g))
        return log_p[torch.arange(len(self.z)), torch.as_tensor(self.classes)]


class Reference(SampleObjective):
    """Minus the feature-space distance from G(z*) to a reference image (a training image or one of the user's)."""

    kind, higher_is_better = "reference", True

    def __init__(self, z: torch.Tensor, reference_features: torch.Tensor, reference: dict):
        self.target = reference_features.detach().cpu().double().reshape(-1)
        super().__init__(z, {"reference": reference})

    def values(self, ctx, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        f = features_of(ctx, self.generate(ctx, theta_g))
        return -(f - self.target.to(f.device)).pow(2).sum(1).add(1e-24).sqrt()  # 1e-24: finite gradient at 0


class Position(SampleObjective):
    """The 2D sample's coordinates (x, y): the influence of a training point on a sample is a displacement vector
    (how the sample moves if the point is removed). No direction is better: 'harmful' does not apply."""

    kind, higher_is_better = "position", True

    def __init__(self, z: torch.Tensor):
        super().__init__(z, {})

    @property
    def row_sample(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.z)), 2)

    def row_labels(self) -> list[str]:
        return [f"sample {i} {axis}" for i in range(len(self.z)) for axis in ("x", "y")]

    def sign_sentence(self) -> str:
        return "predicted displacement of the sample (x, y) if the training point is removed; no direction is harmful"

    def values(self, ctx, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        return self.generate(ctx, theta_g).reshape(-1)


class ClassShare(SampleObjective):
    """The mean soft share of class c (the classifier's probability) over a fixed set of z: which images make
    the GAN over- or under-produce c. One row; the user says which way it should go."""

    kind, per_sample = "class", False

    def __init__(self, z: torch.Tensor, cls: int, want: str, class_name: str | None = None):
        if want not in WANTS:
            raise ConfigError(f"class share: want must be one of {WANTS}")
        self.cls, self.want, self.higher_is_better = int(cls), want, want == "more"
        super().__init__(z, {"class": self.cls, "want": want})
        self.label = f"share of class {class_name or cls} over {len(self.z)} samples ({want} wanted)"

    @property
    def row_sample(self) -> np.ndarray:
        return np.zeros(1, dtype=np.int64)

    def row_labels(self) -> list[str]:
        return [f"class {self.cls} share"]

    def values(self, ctx, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        return class_log_probs(ctx, self.generate(ctx, theta_g))[:, self.cls].exp().mean().reshape(1)


# ---------------------------------------------------------------- from user input
def parse(text: str) -> tuple[str, list[str]]:
    """'reference:path/a.png' -> ('reference', ['path/a.png']); 'class:3:less' -> ('class', ['3', 'less'])."""
    kind, _, rest = text.strip().partition(":")
    if kind not in KINDS:
        raise ConfigError(f"unknown objective '{text}'; choose realism, clarity, reference:PATH (or reference:#ID "
                          "for a training image), position (2D) or class:C[:more|less]")
    if kind == "reference":
        if not rest:
            raise ConfigError("reference needs an image: reference:PATH or reference:#ID (a training image)")
        return kind, [rest]
    args = rest.split(":") if rest else []
    if kind == "class" and not 1 <= len(args) <= 2:
        raise ConfigError("class share: give class:C or class:C:more / class:C:less")
    if kind not in ("class",) and args:
        raise ConfigError(f"objective {kind} takes no argument")
    return kind, args


def check_request(cfg, text: str, n_samples: int) -> tuple[str, list[str]]:
    """(kind, arguments) of an objective the run can take on n_samples samples; ConfigError otherwise."""
    kind, args = parse(text)
    if kind == "position" and not cfg.is_2d:
        raise ConfigError("position is the 2D toy's objective; for images use realism, clarity or reference")
    if kind in ("clarity", "class") and cfg.is_2d:
        raise ConfigError(f"{kind} needs a classifier of images; on the 2D toy use position or reference")
    if kind != "class" and n_samples > MAX_SAMPLES:
        raise ConfigError(f"at most {MAX_SAMPLES} samples per pass (got {n_samples})")
    return kind, args


def build(ctx, final_d: torch.Tensor, final_g: torch.Tensor, text: str, z: torch.Tensor) -> SampleObjective:
    """The objective named by `text` on latent vectors z, its fixed parts taken from the trained run
    (final_d, final_g: the parameters at the end of training, on ctx's device)."""
    kind, args = check_request(ctx.cfg, text, len(z))
    if kind == "realism":
        return Realism(z, final_d)
    if kind == "position":
        return Position(z)
    with torch.no_grad():
        generated = ctx.gan.generate(final_g, z.to(final_g.device, final_g.dtype))
        if kind == "clarity":
            return Clarity(z, class_log_probs(ctx, generated).argmax(1).tolist())
        if kind == "reference":
            image, reference = reference_image(ctx, args[0])
            return Reference(z, features_of(ctx, image[None].to(ctx.device)), reference)
        return _class_share(ctx, z, generated, args)


def _class_share(ctx, z: torch.Tensor, generated: torch.Tensor, args: list[str]) -> ClassShare:
    names = ctx.dataset.class_names
    n_classes = class_log_probs(ctx, generated[:1]).shape[1]
    token = args[0]
    if names and token in names:
        cls = names.index(token)
    else:
        try:
            cls = int(token)
        except ValueError:
            raise ConfigError(f"class share: '{token}' is neither a class number nor a class name") from None
    if not 0 <= cls < n_classes:
        raise ConfigError(f"class share: class {cls} is not in 0..{n_classes - 1}")
    if len(args) == 2:
        want = args[1]
        if want not in WANTS:
            raise ConfigError("class share: say class:C:more or class:C:less")
    else:  # by default the way back to the training data: less if the GAN over-produces c, more if it under-produces
        share = float(class_log_probs(ctx, generated)[:, cls].exp().mean())
        y = ctx.dataset.train.y
        want = "less" if y is not None and share > float((y == cls).double().mean()) else "more"
    return ClassShare(z, cls, want, names[cls] if names else None)


def reference_image(ctx, spec: str) -> tuple[torch.Tensor, dict]:
    """The reference as the run holds images ((C, H, W) or a 2D point) and what names it: '#ID' = a training
    instance; else a PNG/JPEG file, named by the sha256 of its pixels as the run reads them (not its path)."""
    n = ctx.dataset.n_train
    if spec.startswith("#"):
        try:
            i = int(spec[1:])
        except ValueError:
            raise ConfigError(f"reference: '{spec}' is not a training id (#ID)") from None
        if not 0 <= i < n:
            raise ConfigError(f"reference: training id {i} is not in 0..{n - 1}")
        return ctx.dataset.train.x[i], {"train_id": i}
    if ctx.cfg.is_2d:
        raise ConfigError("on the 2D toy the reference is a training point: reference:#ID")
    path = Path(spec)
    try:
        if path.stat().st_size > MAX_REFERENCE_BYTES:
            raise ConfigError(f"reference image '{spec}' is larger than {MAX_REFERENCE_BYTES // 2**20} MB")
        blob = path.read_bytes()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the reference image '{spec}': {e}") from None
    image = decode_image(blob, ctx.cfg.data.color, ctx.dataset.train.x.shape[-1])
    if image.shape[0] != ctx.dataset.train.x.shape[1]:
        raise ConfigError(f"reference image has {image.shape[0]} channels, the run's images {ctx.dataset.train.x.shape[1]}")
    digest = hashlib.sha256(((image.numpy() + 1) * 127.5).round().astype(np.uint8).tobytes()).hexdigest()
    return image, {"image_sha256": digest, "file": path.name}
