"""Own-image sets in the user-level cache (`<cache>/sources/`), keyed by the source's fingerprint: decoded arrays,
and the file list of each fingerprint (to name what changed when a run's source no longer matches).

A folder is decoded once per fingerprint, colour and size; every later load (estimate, cleanse, the app)
reads the arrays instead (a load still reads and hashes the files, to check the fingerprint). The newest
KEEP_DECODED decoded sets and KEEP_FILE_LISTS file lists are kept. A damaged or unwritable entry is never an
error: the images are decoded again.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from .. import store
from ..errors import StoreError
from . import decode

SOURCES = "sources"
KEEP_DECODED = 8
KEEP_FILE_LISTS = 256
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


def touch_entry(cache_dir: Path, name: str) -> bool:
    """Mark an entry as just used (the pruning keeps the newest); False when it is not there."""
    path = _path(cache_dir, name)
    try:
        os.utime(path)
    except OSError:
        return False
    return True


def write_json_entry(cache_dir: Path, name: str, obj) -> None:
    try:
        store.write_json(_path(cache_dir, name), obj)
    except StoreError:
        return  # the cache is an optimisation
    _keep_newest(cache_dir, "*.json", KEEP_FILE_LISTS)


def _keep_newest(cache_dir: Path, pattern: str, keep: int) -> None:
    def age(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # removed by another process meanwhile
            return 0.0

    for old in sorted(_path(cache_dir, "").glob(pattern), key=age, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def decoded_name(fp: str, mode: str, size: int) -> str:
    """The entry of a decode: the files, the colour, the size, and what decoding admits (its per-image cap)."""
    return f"{fp}-{mode}{size}-p{decode.MAX_IMAGE_PIXELS}-d{DECODE_VERSION}.npz"


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
        touch_entry(cache_dir, name)  # recently used: kept by the pruning
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
    _keep_newest(cache_dir, "*.npz", KEEP_DECODED)
