"""The IS/FID feature networks: the paper's small CNN classifier, pytorch-fid's Inception-v3, or a small
convolutional autoencoder trained on the images themselves (for data without labels).

- mnist-cnn: trained once per data set (seeded, Adam lr 1e-2, batch 128, 50 epochs on the
  validation split as in the paper), cached with its test accuracy. Its sigmoid units can stall
  on a plateau at lr 1e-2 when the split is small (4,800 gray or coloured digits: chance after 50
  epochs); a net whose training accuracy stays short of halfway from chance to perfect is trained
  again at 1e-3 (90% there), and the better of the two kept, the rate recorded.
- inception: pytorch-fid's weights file, looked up where pytorch-fid keeps it (the torch hub
  cache, `<torch hub dir>/checkpoints/`), downloaded there once when online.
- autoencoder: trained once per data set on the training split (reconstruction loss, no labels),
  cached with its test reconstruction R^2. Its features are specific to this data set, so its FID
  is not comparable to published FIDs, and it gives no class probabilities (no IS).
All of them live in the user-level cache (`store.cache_dir`), shared by every store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import conditions, store
from .config import EvalConfig
from .data import OFFLINE_ENV, Dataset
from .errors import ConfigError
from .metrics import FeatureNet
from .models import MnistClassifier

CLASSIFIER_EPOCHS = 50
CLASSIFIER_LR = 1e-2
CLASSIFIER_RETRY_LR = 1e-3  # where CLASSIFIER_LR stalled (see the module's docstring)
CLASSIFIER_BATCH = 128
CLASSIFIER_SEED = 0
AE_CODE = 64
AE_LR = 1e-3
AE_BATCH = 128
AE_STEPS = 800  # 100k images seen: enough for a feature space, about a minute on a busy CPU core
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"
FEATURE_LABELS = {
    "mnist-cnn": "small CNN classifier trained on this data set's labels",
    "inception": "Inception-v3 (pytorch-fid weights)",
    "autoencoder": "convolutional autoencoder trained on this data set (FID not comparable to published FIDs)",
}


def _key(data_identity: dict, **training) -> str:
    ident = dict(data_identity, n_train=None, **training)
    if ident.get("fingerprint"):  # own images: the same files are the same data set, wherever they lie
        ident.pop("root", None)  # in the identity of runs made before root_in_id
        ident.pop("root_in_id", None)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def _classifier_key(data_identity: dict) -> str:
    return _key(data_identity, epochs=CLASSIFIER_EPOCHS, lr=CLASSIFIER_LR, retry_lr=CLASSIFIER_RETRY_LR,
                seed=CLASSIFIER_SEED)


def _ae_key(data_identity: dict) -> str:
    return _key(data_identity, net="autoencoder", code=AE_CODE, steps=AE_STEPS, lr=AE_LR, seed=CLASSIFIER_SEED)


def _training_split(dataset: Dataset):
    # The paper trains on the validation split; small folder data sets have too few there.
    return dataset.valid if dataset.valid.x.shape[0] >= 5000 else dataset.train


# ---------------------------------------------------------------- the classifier
def train_classifier(dataset: Dataset, epochs: int = CLASSIFIER_EPOCHS, progress=None
                     ) -> tuple[MnistClassifier, float, dict]:
    """(the net, its test accuracy, how it was trained: the rate kept and each try's training accuracy)."""
    split = _training_split(dataset)
    if split.y is None:
        raise ConfigError("the MNIST-CNN features need labels; this data set has none (use eval.feature=autoencoder "
                          "or eval.feature=inception)")
    n_classes = int(split.y.max()) + 1
    net, fit = _fit(split, n_classes, CLASSIFIER_LR, epochs, progress)
    tries, lr, chance = {str(CLASSIFIER_LR): fit}, CLASSIFIER_LR, 1 / n_classes
    if fit < chance + (1 - chance) / 2:  # stalled (or a hard data set): the better of two rates
        retry, retry_fit = _fit(split, n_classes, CLASSIFIER_RETRY_LR, epochs, progress)
        tries[str(CLASSIFIER_RETRY_LR)] = retry_fit
        if retry_fit > fit:
            net, lr = retry, CLASSIFIER_RETRY_LR
    return net, _test_accuracy(net, dataset), {"lr": lr, "training_accuracy": tries}


def _test_accuracy(net: MnistClassifier, dataset: Dataset) -> float:
    if dataset.test.y is None:
        return float("nan")
    with torch.no_grad():
        return float((_predict(net, dataset.test.x) == dataset.test.y).float().mean())


def _fit(split, n_classes: int, lr: float, epochs: int, progress) -> tuple[MnistClassifier, float]:
    """A seeded training at `lr`: (the net in eval mode, its accuracy on the split it was trained on)."""
    generator = torch.Generator().manual_seed(CLASSIFIER_SEED)
    torch.manual_seed(CLASSIFIER_SEED)
    net = MnistClassifier(split.x.shape[1], n_classes, split.x.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = split.x.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, CLASSIFIER_BATCH):
            idx = order[i : i + CLASSIFIER_BATCH]
            loss = F.cross_entropy(net(split.x[idx]), split.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if progress:
            progress(epoch + 1, epochs)
    net.eval()
    with torch.no_grad():
        return net, float((_predict(net, split.x) == split.y).float().mean())


def _predict(net: MnistClassifier, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])


# ---------------------------------------------------------------- the autoencoder
class ConvAutoencoder(nn.Module):
    """28/32 px images -> 64-d code -> images. The code is the FID feature space."""

    def __init__(self, channels: int, size: int, code: int = AE_CODE):
        super().__init__()
        self.side = size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 16, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(16, 32, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(32 * self.side**2, code),
        )
        self.project = nn.Sequential(nn.Linear(code, 32 * self.side**2), nn.LeakyReLU(0.2))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(16, channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.project(self.encoder(x)).view(-1, 32, self.side, self.side))


class _Encoder(nn.Module):
    def __init__(self, ae: ConvAutoencoder):
        super().__init__()
        self.encoder = ae.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def train_autoencoder(dataset: Dataset, steps: int | None = None, progress=None) -> tuple[ConvAutoencoder, float]:
    """(autoencoder, test R^2 = 1 - reconstruction MSE / pixel variance of the test images); progress(done, steps)
    about 50 times (it may raise to cancel)."""
    steps = steps or AE_STEPS
    every = max(1, steps // 50)
    x = dataset.train.x
    generator = torch.Generator().manual_seed(CLASSIFIER_SEED)
    torch.manual_seed(CLASSIFIER_SEED)
    net = ConvAutoencoder(x.shape[1], x.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=AE_LR)
    order, pos = torch.randperm(len(x), generator=generator), 0
    for step in range(steps):
        if pos + AE_BATCH > len(order):
            order, pos = torch.randperm(len(x), generator=generator), 0
        batch = x[order[pos : pos + AE_BATCH]]
        pos += AE_BATCH
        loss = F.mse_loss(net(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and ((step + 1) % every == 0 or step + 1 == steps):
            progress(step + 1, steps)
    net.eval()
    return net, _test_r2(net, dataset)


def _test_r2(net: ConvAutoencoder, dataset: Dataset) -> float:
    """1 - reconstruction MSE / pixel variance of the test images."""
    test = dataset.test.x
    with torch.no_grad():
        mse = float(torch.cat([(net(test[i : i + 1000]) - test[i : i + 1000]).pow(2).flatten(1).mean(1)
                               for i in range(0, len(test), 1000)]).mean())
    variance = float(((test - test.mean(0)) ** 2).mean())
    return 1.0 - mse / variance if variance > 0 else float("nan")


# ---------------------------------------------------------------- Inception-v3
def inception_weights_path(explicit: str | None = None) -> Path:
    """pytorch-fid's weights file: eval.inception_weights, else the torch hub cache (downloaded there once)."""
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"eval.inception_weights={explicit} does not exist (pytorch-fid's {INCEPTION_FILE})")
        return Path(explicit)
    target = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if target.is_file():
        return target
    where = (f"Inception features need pytorch-fid's weights file {INCEPTION_FILE}: download {INCEPTION_URL} "
             f"and put it in {target.parent}/ (or pass eval.inception_weights=PATH)")
    if os.environ.get(OFFLINE_ENV) == "1":
        raise ConfigError(f"{where}; {OFFLINE_ENV}=1 forbids downloading it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{INCEPTION_FILE}.part")
    try:
        torch.hub.download_url_to_file(INCEPTION_URL, str(tmp), progress=True)  # a progress bar on stderr
        os.replace(tmp, target)
    except Exception as e:  # URLError, HTTPError, timeouts, a full disk: all end in the same advice
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{where}; the download failed ({type(e).__name__}: {e})") from None
    return target


class InceptionFeatures(nn.Module):
    """pool3 features (2048-d, FID) and the 1008-way logits (IS) of pytorch-fid's Inception-v3."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        from unittest import mock

        from pytorch_fid import inception as fid_inception

        # pytorch-fid fetches its weights itself; hand it the file read here (weights_only) instead.
        with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: state):
            self.pool3 = fid_inception.InceptionV3([3], resize_input=True, normalize_input=False)
        self.fc = nn.Linear(2048, 1008)
        self.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # images are already in [-1, 1]
        h = self.pool3(x)[0].flatten(1)
        return h, self.fc(h)


def load_inception(explicit: str | None = None) -> FeatureNet:
    path = inception_weights_path(explicit)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = InceptionFeatures(state)
    except (RuntimeError, KeyError, OSError, EOFError) as e:
        raise ConfigError(f"{path} is not pytorch-fid's Inception weights file {INCEPTION_FILE} ({e}); "
                          f"download it again from {INCEPTION_URL}") from None
    return FeatureNet(net)


# ---------------------------------------------------------------- the cached feature net of a run
# A finished run keeps its own copy of the trained feature net's weights: its metrics stay the ones it
# reported even where the cache holds another net (trained at another thread count, on another machine,
# or after the cache was cleared). Inception's weights are one fixed file and are not copied.
PINNED = "features/feature_net.pt"
PINNED_INFO = "features/feature_net.json"  # how it was trained and how good it is (the cache entry's .json)


def feature_weights(cfg: EvalConfig, data_identity: dict, cache_dir: Path) -> Path | None:
    """The cache file of the data set's trained feature net (classifier or autoencoder); None for Inception."""
    if cfg.feature == "inception":
        return None
    if cfg.feature == "autoencoder":
        return cache_dir / f"autoencoder-{_ae_key(data_identity)}.pt"
    return cache_dir / f"classifier-{_classifier_key(data_identity)}.pt"


def load_feature_net(cfg: EvalConfig, dataset: Dataset, data_identity: dict, cache_dir: Path, progress=None,
                     pinned: Path | None = None) -> FeatureNet | None:
    """The feature network for this data set: the run's own copy (`pinned`) if given, else the cached one
    (training it on first use)."""
    if cfg.feature == "inception":
        return load_inception(cfg.inception_weights)
    weights = feature_weights(cfg, data_identity, cache_dir)
    if cfg.feature == "autoencoder":
        return _autoencoder(dataset, weights, pinned, progress)
    split = _training_split(dataset)
    if split.y is None:
        raise ConfigError("this data set has no labels, so the default IS/FID features (a classifier on its labels) "
                          "cannot be trained: set eval.feature=autoencoder (trained on your images) or "
                          "eval.feature=inception (pytorch-fid's Inception-v3)")
    net = _classifier_shape(split)
    with _training_once(weights, pinned):
        if (source := _stored_weights(weights, pinned)) is not None:
            net.load_state_dict(store.load_state_dict(source))
        else:
            net, accuracy, how = train_classifier(dataset, progress=progress)
            store.save_state_dict(weights, net.state_dict())
            store.write_json(weights.with_suffix(".json"), {"test_accuracy": accuracy, "epochs": CLASSIFIER_EPOCHS,
                             "lr": how["lr"], "training_accuracy": how["training_accuracy"],
                             "batch": CLASSIFIER_BATCH, "seed": CLASSIFIER_SEED, "n_classes": net.logits.out_features,
                             "conditions": conditions.current("cpu", torch.float32)})
    return FeatureNet(net)


def _training_once(weights: Path, pinned: Path | None):
    """One process trains a data set's feature net into the user cache; the others wait and load it."""
    if pinned is not None or _stored_weights(weights, None) is not None:
        return contextlib.nullcontext()
    return store.exclusive(weights.with_name(f".{weights.name}.lock"), f"the feature net {weights.name}")


def _stored_weights(weights: Path, pinned: Path | None) -> Path | None:
    """Where the trained net is: the run's own copy, else the cache entry once complete (weights and its
    .json), else None (train it)."""
    if pinned is not None:
        return pinned
    return weights if weights.exists() and weights.with_suffix(".json").exists() else None


def _classifier_shape(split) -> MnistClassifier:
    """An untrained classifier of the shape a stored one of this data set has (its weights are loaded into it)."""
    return MnistClassifier(split.x.shape[1], int(split.y.max()) + 1, split.x.shape[-1])


def _autoencoder_shape(dataset: Dataset) -> ConvAutoencoder:
    """An untrained autoencoder of the shape a stored one of this data set has."""
    return ConvAutoencoder(dataset.train.x.shape[1], dataset.train.x.shape[-1])


def _autoencoder(dataset: Dataset, weights: Path, pinned: Path | None, progress=None) -> FeatureNet:
    net = _autoencoder_shape(dataset)
    with _training_once(weights, pinned):
        if (source := _stored_weights(weights, pinned)) is not None:
            net.load_state_dict(store.load_state_dict(source))
        else:
            net, r2 = train_autoencoder(dataset, progress=progress)
            store.save_state_dict(weights, net.state_dict())
            store.write_json(weights.with_suffix(".json"), {"test_r2": r2, "steps": AE_STEPS, "lr": AE_LR,
                             "batch": AE_BATCH, "code": AE_CODE, "seed": CLASSIFIER_SEED,
                             "conditions": conditions.current("cpu", torch.float32)})
    return FeatureNet(_Encoder(net), has_probs=False)


def feature_info(cfg: EvalConfig, data_identity: dict, cache_dir: Path, pinned_record: dict | None = None) -> dict:
    """What the IS/FID features are and how good they are on this data set (after load_feature_net); pinned_record:
    the record of the run's own copy of the net (`measure_pinned` where the run keeps none), else the cache
    entry's is read."""
    info: dict = {"feature": cfg.feature, "label": FEATURE_LABELS[cfg.feature],
                  "comparable": cfg.feature == "inception"}
    m = pinned_record
    if m is None:
        weights = feature_weights(cfg, data_identity, cache_dir)  # None for Inception: nothing trained here
        if weights is None or not weights.with_suffix(".json").exists():
            return info
        m = store.read_json(weights.with_suffix(".json"))
    # the net's weights depend on the thread count it was trained at: two stores' FIDs differ unless it matches
    info["conditions"] = m.get("conditions")
    if m.get("measured_now"):
        info["measured_now"] = True
    if cfg.feature == "mnist-cnn":
        info.update(test_accuracy=m["test_accuracy"], n_classes=m.get("n_classes"))
    else:
        info["test_r2"] = m["test_r2"]
    return info


def measure_pinned(cfg: EvalConfig, dataset: Dataset, weights: Path) -> dict:
    """The quality of a run's copy of its net, measured now on the test split, for a run that keeps no record of
    it (trained before 2026-12-08): the cache's record may describe another net, trained at another thread count.
    How it was trained is unknown, so the record has no conditions."""
    state = store.load_state_dict(weights)
    if cfg.feature == "autoencoder":
        net = _autoencoder_shape(dataset)
        net.load_state_dict(state)
        return {"test_r2": _test_r2(net.eval(), dataset), "measured_now": True}
    net = _classifier_shape(_training_split(dataset))
    net.load_state_dict(state)
    return {"test_accuracy": _test_accuracy(net.eval(), dataset), "n_classes": net.logits.out_features,
            "measured_now": True}


def classifier_accuracy(dataset: Dataset, data_identity: dict, cache_dir: Path) -> float | None:
    meta = cache_dir / f"classifier-{_classifier_key(data_identity)}.json"
    return store.read_json(meta)["test_accuracy"] if meta.exists() else None
