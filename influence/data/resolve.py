"""Making a config for own images: what the images decide, read from them once, when the config is made.

`prepare(cfg)` (the CLI's train and sweep, the app's Train form) makes data.root absolute, records the
source's fingerprint (it enters the run id; the root does not, so a moved folder keeps its runs, `locations`),
names the data set after the folder or zip, and resolves
every `auto`: colour (rgb when the images hold colour), size (the size the model makes nearest above the
images' own), held-out splits (10% each, at least 20) and the feature net (the classifier when every
image lies in a class folder, else the autoencoder). `survey(root)` is what the app shows before that.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .. import store
from ..config import ARCH_SIZES, AUTO, RunConfig, validate
from ..errors import ConfigError, DataError
from .decode import GREY_MODES, NotAnImage, PixelBudget, has_colour, header
from .fingerprint import file_record, fingerprint, remember
from .images import labels_of
from .sources import Reader, list_source

HOLD_OUT_SHARE = 0.1  # auto splits: 10% validation, 10% test ...
HOLD_OUT_MIN = 20  # ... at least this many each (context.MIN_SPLIT: fewer cannot hold a metric)
COLOUR_SAMPLE = 32  # images (spread over the source) decoded to see whether they hold colour


@dataclass
class Survey:
    """What a folder/zip holds, from its files and image headers (nothing is decoded but a colour sample)."""

    root: str
    fingerprint: str
    n_files: int
    sides: list[int]  # the longer side of every image whose header reads
    colour: bool
    has_labels: bool
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.sides)

    def size_for(self, arch: str) -> int:
        """The smallest size the model makes at or above the images' median side, else its largest."""
        sizes = ARCH_SIZES.get(arch, (28, 32, 64))
        side = int(np.median(self.sides)) if self.sides else sizes[-1]
        return next((s for s in sizes if s >= side), sizes[-1])

    def auto_hold_out(self) -> int:
        """data.n_valid / n_test = auto: 10% each, at least 20."""
        return max(HOLD_OUT_MIN, round(self.n_images * HOLD_OUT_SHARE))

    def sizes_text(self) -> str:
        if not self.sides:
            return "no readable image"
        lo, hi = min(self.sides), max(self.sides)
        return f"{lo}x{lo} px" if lo == hi else f"{lo} to {hi} px (longer side; median {int(np.median(self.sides))})"


def survey(root: str | Path) -> Survey:
    """List, read and hash the source, and read every image's header; DataError when it cannot be a data set
    (not a folder or zip, too many files, over the pixel cap)."""
    listing = list_source(root)
    every = max(1, len(listing.members) // COLOUR_SAMPLE)  # members whose colour is looked at
    records, names, sides, unreadable = [], [], [], []
    colour, budget = False, PixelBudget(root)
    with Reader(listing) as reader:
        for i, m in enumerate(listing.members):
            blob = reader.read(m)
            records.append(file_record(m.path, blob if isinstance(blob, bytes) else None, m.size))
            if isinstance(blob, str):
                unreadable.append((m.path, blob))
                continue
            try:
                h = header(blob)
            except NotAnImage as e:
                unreadable.append((m.path, str(e)))
                continue
            budget.add(h)
            names.append(m.path)
            sides.append(max(h.width, h.height))
            if not colour and i % every == 0 and h.mode not in GREY_MODES:
                colour = _colour(blob)
    fp = fingerprint(records)
    remember(store.cache_dir(), fp, records)
    return Survey(str(root), fp, len(records), sides, colour, labels_of(names)[0] is not None, unreadable,
                  listing.links, listing.renamed)


def _colour(blob: bytes) -> bool:
    try:
        return has_colour(blob)
    except Exception:  # a file that fails to decode is reported at load; it decides nothing here
        return False


def prepare(cfg: RunConfig, found: Survey | None = None) -> RunConfig:
    """The config ready to train: own images' root absolute, fingerprint and name recorded, every auto
    resolved (`found`: the survey of cfg's root, when the caller has it). Other sources: eval.feature=auto
    becomes the classifier (they have labels); nothing else changes."""
    d, e = cfg.data, cfg.eval
    if d.source != "folder":
        out = cfg if e.feature != AUTO else dataclasses.replace(cfg, eval=dataclasses.replace(e, feature="mnist-cnn"))
        validate(out)
        return out
    if not d.root:
        raise ConfigError("data.source=folder needs data.root: a folder or a .zip of PNG/JPEG images")
    root = os.path.abspath(os.path.expanduser(d.root))
    found = found if found is not None and found.root == root else survey(root)
    labelled = d.labels == "folders" and found.has_labels
    data = dataclasses.replace(
        d, root=root, fingerprint=found.fingerprint, root_in_id=False, name=d.name or data_set_name(root),
        color=("rgb" if found.colour else "gray") if d.color == AUTO else d.color,
        image_size=found.size_for(cfg.model.arch) if d.image_size == AUTO else d.image_size,
        n_valid=found.auto_hold_out() if d.n_valid == AUTO else d.n_valid,
        n_test=found.auto_hold_out() if d.n_test == AUTO else d.n_test)
    if data.n_valid + data.n_test >= found.n_images:
        raise DataError(f"{root} holds {found.n_images} readable images: data.n_valid={data.n_valid} and "
                        f"data.n_test={data.n_test} leave none to train on")
    feature = ("mnist-cnn" if labelled else "autoencoder") if e.feature == AUTO else e.feature
    out = dataclasses.replace(cfg, data=data, eval=dataclasses.replace(e, feature=feature))
    validate(out)
    return out


def require_prepared(cfg: RunConfig) -> None:
    """ConfigError for a new own-images run whose config was not made by `prepare` (no fingerprint)."""
    if cfg.data.source == "folder" and cfg.data.fingerprint is None:
        raise ConfigError("a new run on own images needs its images' fingerprint: make the config with "
                          "influence.data.prepare (the CLI and the app do)")


def data_set_name(root: str | Path) -> str:
    """The folder's name, or the zip's without '.zip' (an app upload's without its content-hash prefix), as a
    run-id part: letters, digits, '-' and '_', at most 40."""
    stem = PurePosixPath(Path(root).as_posix()).name
    stem = stem[:-4] if stem.lower().endswith(".zip") else stem
    stem = re.sub(r"^[0-9a-f]{16}-", "", stem)  # app uploads: <sha256 prefix>-<uploaded name>.zip
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:40]
    return name or "images"


FEATURE_WORDS = {"mnist-cnn": "a classifier trained on the class folders", "autoencoder":
                 "an autoencoder trained on the images", "inception": "Inception-v3"}


def describe(cfg: RunConfig, found: Survey) -> str:
    """One sentence: what the images are and what the prepared config makes of them."""
    d = cfg.data
    parts = [f"{found.n_images} readable images ({found.sizes_text()}, {'in colour' if found.colour else 'grey'}) "
             f"in {found.n_files} files"]
    if found.unreadable:
        parts.append(f"{len(found.unreadable)} unreadable files skipped")
    if found.links:
        parts.append(f"{len(found.links)} links not followed")
    if found.renamed:
        parts.append(f"{len(found.renamed)} zip members renamed to unique paths")
    parts.append(f"{'RGB' if d.color == 'rgb' else 'grey'} at {d.image_size} px, {d.n_valid} validation + {d.n_test} "
                 f"test images held out, IS/FID features: {FEATURE_WORDS[cfg.eval.feature]}")
    return "; ".join(parts)
