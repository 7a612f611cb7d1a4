"""The IS/FID feature network: the paper's small MNIST CNN, or Inception-v3 via pytorch-fid.

The CNN is trained once per data set (seeded, Adam lr 1e-2, batch 128, 50 epochs on
the validation split as in the paper) and cached as a state dict with its test accuracy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from . import store
from .config import EvalConfig
from .data import Dataset
from .errors import ConfigError
from .metrics import FeatureNet
from .models import MnistClassifier

CLASSIFIER_EPOCHS = 50
CLASSIFIER_LR = 1e-2
CLASSIFIER_BATCH = 128
CLASSIFIER_SEED = 0


def _key(dataset: Dataset, data_identity: dict) -> str:
    ident = dict(data_identity, n_train=None, epochs=CLASSIFIER_EPOCHS, lr=CLASSIFIER_LR, seed=CLASSIFIER_SEED)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def _training_split(dataset: Dataset):
    # The paper trains on the validation split; small folder data sets have too few there.
    return dataset.valid if dataset.valid.x.shape[0] >= 5000 else dataset.train


def train_classifier(dataset: Dataset, epochs: int = CLASSIFIER_EPOCHS, progress=None) -> tuple[MnistClassifier, float]:
    split = _training_split(dataset)
    if split.y is None:
        raise ConfigError("the MNIST-CNN features need labels; this data set has none (use eval.feature=inception)")
    n_classes = int(split.y.max()) + 1
    generator = torch.Generator().manual_seed(CLASSIFIER_SEED)
    torch.manual_seed(CLASSIFIER_SEED)
    net = MnistClassifier(split.x.shape[1], n_classes, split.x.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=CLASSIFIER_LR)
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
        pred = torch.cat([net(dataset.test.x[i : i + 1000]).argmax(1) for i in range(0, len(dataset.test.x), 1000)])
    accuracy = float((pred == dataset.test.y).float().mean()) if dataset.test.y is not None else float("nan")
    return net, accuracy


def load_feature_net(cfg: EvalConfig, dataset: Dataset, data_identity: dict, cache_dir: Path, progress=None) -> FeatureNet | None:
    """The cached feature network for this data set (training it on first use); None if impossible."""
    if cfg.feature == "inception":
        return _inception(cfg.inception_weights)
    if _training_split(dataset).y is None:
        return None
    key = _key(dataset, data_identity)
    weights, meta = cache_dir / f"classifier-{key}.pt", cache_dir / f"classifier-{key}.json"
    split = _training_split(dataset)
    net = MnistClassifier(split.x.shape[1], int(split.y.max()) + 1, split.x.shape[-1])
    if weights.exists() and meta.exists():
        net.load_state_dict(store.load_state_dict(weights))
    else:
        net, accuracy = train_classifier(dataset, progress=progress)
        store.save_state_dict(weights, net.state_dict())
        store.write_json(meta, {"test_accuracy": accuracy, "epochs": CLASSIFIER_EPOCHS, "lr": CLASSIFIER_LR,
                                "batch": CLASSIFIER_BATCH, "seed": CLASSIFIER_SEED})
    return FeatureNet(net)


def classifier_accuracy(dataset: Dataset, data_identity: dict, cache_dir: Path) -> float | None:
    meta = cache_dir / f"classifier-{_key(dataset, data_identity)}.json"
    return store.read_json(meta)["test_accuracy"] if meta.exists() else None


def _inception(weights: str | None) -> FeatureNet:
    """pytorch-fid's Inception-v3 (pool3, 2048-d). Needs its weights file: nothing is downloaded."""
    if not weights or not Path(weights).is_file():
        raise ConfigError(
            "Inception features need pytorch-fid's weights file (pt_inception-2015-12-05-6726825d.pth); "
            "download it on a connected machine and pass eval.inception_weights=PATH"
        )
    from pytorch_fid import inception as fid_inception

    fid_inception.load_state_dict_from_url = lambda *a, **k: torch.load(weights, map_location="cpu", weights_only=True)
    net = fid_inception.InceptionV3([3], resize_input=True, normalize_input=False)

    class Pool3(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = net

        def forward(self, x):
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            return self.inner(x)[0].flatten(1)

    return FeatureNet(Pool3(), has_probs=False)
