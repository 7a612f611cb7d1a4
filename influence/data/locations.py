"""Where own images lie now: a moved folder or zip found again by its fingerprint.

A run records the absolute path of its images (data.root) and their fingerprint. When the images move,
`influence.relocation.relocate` fingerprints them at their new place and records fingerprint -> path here, in the
user-level cache's `image-locations.json` (one small file, never pruned: it is not a cache entry). Every later
load of a run with that fingerprint whose recorded folder is gone reads from there (`source_root`); the
fingerprint is checked at every load anyway, so a place whose files changed since is refused like a changed
folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import store
from ..config import DataConfig, RunConfig
from ..errors import ConfigError, DataError, StoreError

LOCATIONS = "image-locations.json"


class ImagesMissing(DataError):
    """A run's images are not where it recorded them (nor where a relocation put them)."""

    def __init__(self, root: str, fingerprint: str | None, hint: str | None = None):
        self.root, self.fingerprint = root, fingerprint  # no fingerprint: nothing to relocate by
        if hint is None:
            hint = (" If you moved them, point the run to their new place (the files must be unchanged): "
                    "gan-influence relocate --images NEW_PATH" if fingerprint else "")
        super().__init__(f"the images of this run are not at {root} (moved or deleted?).{hint}")


def recorded(cache_dir: Path) -> dict[str, str]:
    """fingerprint -> the path its images were last relocated to ({} when none, or the file is unreadable)."""
    try:
        table = store.read_json(Path(cache_dir) / LOCATIONS)
    except StoreError:
        return {}
    return table if isinstance(table, dict) else {}


def record(cache_dir: Path, fingerprint: str, root: str) -> None:
    """Remember that the images of `fingerprint` now lie at `root` (replacing an earlier relocation of them)."""
    path = Path(cache_dir) / LOCATIONS
    with store.exclusive(path.with_name(LOCATIONS + ".lock"), "the images' locations"):
        store.write_json(path, {**recorded(cache_dir), fingerprint: str(root)})


def source_root(d: DataConfig, cache_dir: Path) -> str:
    """Where to read a folder source: data.root while it exists (a relocation never redirects a run whose
    folder is still there), else the place its fingerprint was relocated to; ImagesMissing when neither exists."""
    if os.path.exists(d.root):
        return d.root
    moved = recorded(cache_dir).get(d.fingerprint) if d.fingerprint else None
    if moved and os.path.exists(moved):
        return moved
    raise ImagesMissing(d.root, d.fingerprint)


def images_found(d: DataConfig, cache_dir: Path) -> bool:
    """Whether a folder source's images are where a load looks for them (always true for other sources)."""
    if d.source != "folder" or d.root is None:
        return True
    try:
        source_root(d, cache_dir)
    except ImagesMissing:
        return False
    return True


def stored_run_images_found(config: dict, cache_dir: Path) -> bool:
    """`images_found` for a run's stored config.json (a config this version cannot read counts as found: the
    listing that asks still shows the run)."""
    try:
        return images_found(RunConfig.from_dict(config).data, cache_dir)
    except (ConfigError, TypeError, KeyError, AttributeError):
        return True
