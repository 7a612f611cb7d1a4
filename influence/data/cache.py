"""Decoded own-image data sets in the user-level cache (`<cache>/sources/`), keyed by the source's fingerprint.

A folder is decoded once per fingerprint, colour and size; every later load (estimate, cleanse, the app)
reads the arrays instead (a load still reads and hashes the files, to check the fingerprint). The newest
KEEP_DECODED entries are kept. A damaged or unwritable entry is never an error: the images are decoded again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .. import store
from ..errors import StoreError

SOURCES = "sources"
KEEP_DECODED = 8
DECODE_VERSION = 1  # bump when decoding changes what an image becomes


def _path(cache_dir: Path, name: str) -> Path:
    return Path(cache_dir) / SOURCES / name


def read_json_entry(cache_dir: Path, name: str):
    path = _path(cache_dir, name)
    if not path.is_file():
        return None
    try:
        return store.read_json(path)
    except StoreError:
        return None


def write_json_entry(cache_dir: Path, name: str, obj) -> None:
    try:
        store.write_json(_path(cache_dir, name), obj)
    except StoreError:
        pass  # the cache is an optimisation


def decoded_name(fp: str, mode: str, size: int) -> str:
    return f"{fp}-{mode}{size}-d{DECODE_VERSION}.npz"


def read_decoded(cache_dir: Path, name: str) -> tuple[np.ndarray, dict] | None:
    """(uint8 images (N, C, S, S), meta) of a cached decode, or None."""
    path = _path(cache_dir, name)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, meta = npz["x"], json.loads(str(npz["meta"]))
        if x.dtype != np.uint8 or x.ndim != 4 or len(meta["names"]) != len(x):
            return None
        path.touch()  # recently used: kept by the pruning below
        return x, meta
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def write_decoded(cache_dir: Path, name: str, x: np.ndarray, meta: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=x, meta=np.array(json.dumps(meta)))
    try:
        store.write_bytes(_path(cache_dir, name), buf.getvalue())
    except StoreError:
        return
    entries = sorted(_path(cache_dir, "").glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP_DECODED:]:
        old.unlink(missing_ok=True)
