"""A person's own folder or zip of PNG/JPEG images as a data set.

Every load lists the source (influence.data.sources; where a relocation put it, influence.data.locations),
reads and hashes every file (the fingerprint), refuses a source that changed since the run was made, and then
decodes the images, or reads them from the cache of decoded sets when this fingerprint, colour and size were
decoded before. Unreadable files are skipped and listed with their reason. The held-out splits honour
data.n_valid / data.n_test; configs made before fingerprints existed (no data.fingerprint) keep their 10% + 10%.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .cache import decoded_name, read_decoded, write_decoded
from .dataset import Raw, SourceNotes
from .decode import NotAnImage, PixelBudget, decode, header
from .fingerprint import Record, check_unchanged, file_record, fingerprint, remember
from .locations import source_root
from .sources import Listing, Reader, list_source

KEEP_BLOBS_BYTES = 2**31  # sources up to this size are read once; larger ones again to decode (on a cache miss)


def load_images(cfg: DataConfig, seed: int, cache_dir: Path) -> Raw:
    if cfg.root is None:
        raise DataError("data.source=folder needs data.root: a folder or a .zip of PNG/JPEG images")
    unresolved = [k for k in ("color", "image_size", "n_valid", "n_test") if getattr(cfg, k) == "auto"]
    if unresolved:
        raise ConfigError(f"data.{unresolved[0]}=auto is read from the images when a config is made "
                          "(influence.data.prepare); this config was not prepared")
    root = source_root(cfg, cache_dir)
    listing = list_source(root)
    records, blobs = read_all(listing)
    fp = fingerprint(records)
    remember(cache_dir, fp, records)
    if cfg.fingerprint is not None:
        check_unchanged(root, cfg.fingerprint, fp, records, cache_dir)
    mode = "L" if cfg.color == "gray" else "RGB"
    name = decoded_name(fp, mode, cfg.image_size)
    cached = read_decoded(cache_dir, name)
    if cached is not None:
        x, meta = cached
        names, skipped = meta["names"], [tuple(s) for s in meta["skipped"]]
    else:
        names, images, skipped = decode_all(listing, blobs, mode, cfg.image_size)
        x = np.stack(images) if images else np.zeros((0, len(mode), cfg.image_size, cfg.image_size), np.uint8)
        if len(images) >= 3:
            write_decoded(cache_dir, name, x, {"names": names, "skipped": skipped})
    if len(x) < 3:
        examples = "; ".join(f"{n}: {r}" for n, r in skipped[:3])
        raise DataError(f"{root}: {len(x)} readable PNG/JPEG image(s), at least 3 are needed"
                        + (f" ({len(skipped)} skipped, e.g. {examples})" if skipped else ""))
    labels, class_names = labels_of(names) if cfg.labels == "folders" else (None, None)
    if cfg.fingerprint is None:  # made before fingerprints: 10% valid, 10% test, at least one each
        n_valid = n_test = max(1, len(x) // 10)
    else:
        n_valid, n_test = cfg.n_valid, cfg.n_test
    index = hold_out(len(x), n_valid, n_test, seed)
    # Each split keeps file order, so neighbouring training ids are neighbouring files.
    parts = {s: (x[i], None if labels is None else labels[i]) for s, i in index.items()}
    paths = {s: [names[j] for j in i] for s, i in index.items()}
    notes = SourceNotes(fp, len(records), str(root), listing.links, listing.renamed)
    return Raw(parts=parts, class_names=class_names, skipped=skipped, paths=paths, notes=notes)


def hold_out(n: int, n_valid: int, n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Sorted indices of the validation, test and training images: a seeded permutation's first n_valid, next
    n_test, and the rest."""
    if n_valid + n_test >= n:
        raise DataError(f"data.n_valid={n_valid} and data.n_test={n_test} hold out all of the {n} readable images, "
                        "leaving none to train on: lower them")
    order = np.random.default_rng(seed).permutation(n)
    cut = {"valid": order[:n_valid], "test": order[n_valid : n_valid + n_test], "train": order[n_valid + n_test :]}
    return {s: np.sort(i) for s, i in cut.items()}


def read_all(listing: Listing) -> tuple[list[Record], dict[str, bytes | str] | None]:
    """Every member's record (path, size, sha256), and the bytes (or why not) per path when the source is
    small enough to keep them for decoding."""
    keep = sum(m.size for m in listing.members) <= KEEP_BLOBS_BYTES
    records, blobs = [], {} if keep else None
    with Reader(listing) as reader:
        for m in listing.members:
            blob = reader.read(m)
            records.append(file_record(m.path, blob if isinstance(blob, bytes) else None, m.size))
            if blobs is not None:
                blobs[m.path] = blob
    return records, blobs


def decode_all(listing: Listing, blobs: dict[str, bytes | str] | None, mode: str, size: int):
    """(paths, uint8 (C, size, size) arrays, skipped (path, reason)) of the readable images, in path order;
    DataError once the images' pixels exceed the cap (decode.MAX_SOURCE_PIXELS) in all."""
    names, images, skipped = [], [], []
    budget = PixelBudget(listing.root)
    with Reader(listing) as reader:
        for m in listing.members:
            blob = blobs[m.path] if blobs is not None else reader.read(m)
            if isinstance(blob, str):
                skipped.append((m.path, blob))
                continue
            try:
                budget.add(header(blob))
                images.append(decode(blob, mode, size))
                names.append(m.path)
            except NotAnImage as e:
                skipped.append((m.path, str(e)))
    return names, images, skipped


def labels_of(names: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """Class = first-level sub-folder; None when some image lies outside any sub-folder."""
    parts = [PurePosixPath(n).parts for n in names]
    # A single folder holding everything (e.g. a zipped folder) is a container, not a class.
    while all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    if not parts or any(len(p) == 1 for p in parts):
        return None, None
    class_names = sorted({p[0] for p in parts})
    lookup = {c: i for i, c in enumerate(class_names)}
    return np.array([lookup[p[0]] for p in parts], dtype=np.int64), class_names
