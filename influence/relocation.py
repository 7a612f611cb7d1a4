"""Own images that moved: the runs trained on them pointed at their new place.

The new place is accepted only when its files are the ones the runs were trained on (the same fingerprint);
it is then recorded for every run with that fingerprint (`data.locations`), in every store of this user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import store
from .config import DataConfig, RunConfig
from .data.cache import read_json_entry
from .data.fingerprint import changes
from .data.locations import images_found, record
from .data.resolve import survey
from .errors import ConfigError, DataError

SHOWN = 3  # runs named in a message


@dataclass
class Relocation:
    root: str  # the images' new place
    fingerprint: str
    runs: dict[str, str]  # run id -> the place it recorded (data.root)


def relocate(store_root: Path, images: str | Path) -> Relocation:
    """Record `images` as the place of the images some runs of the store were trained on; DataError naming
    the closest runs and what differs when no run was trained on exactly these files."""
    root = os.path.abspath(os.path.expanduser(str(images)))
    if not os.path.exists(root):
        raise DataError(f"there is nothing at {root}: give the folder or .zip where the images are now")
    found = survey(root)
    own = _own_image_runs(store_root)
    runs = {run_id: d.root for run_id, d in own.items() if d.fingerprint == found.fingerprint}
    if not runs:
        raise DataError(_no_match(store_root, root, found.fingerprint, own))
    record(store.cache_dir(), found.fingerprint, root)
    return Relocation(root, found.fingerprint, runs)


def remember(store_root: Path, cfg: RunConfig) -> str | None:
    """A trained run named again with its images at another place (`train --config --set data.root`, the Train
    page's recorded form) once a load there has checked their fingerprint: that place is recorded as `relocate`
    would, when the run's own folder is gone. Returns the place recorded, or None."""
    d = cfg.data
    run = store.Run(store_root, cfg.run_id)
    if d.source != "folder" or not d.fingerprint or not d.root or not run.exists("summary.json"):
        return None
    stored = RunConfig.from_dict(run.read_json("config.json")).data.root
    if stored is None or os.path.exists(stored) or os.path.abspath(d.root) == os.path.abspath(stored):
        return None  # its own place is there (and is read first): recording another would change nothing
    record(store.cache_dir(), d.fingerprint, os.path.abspath(d.root))
    return os.path.abspath(d.root)


def _own_image_runs(store_root: Path) -> dict[str, DataConfig]:
    out = {}
    for entry in store.list_runs(store_root):
        try:
            cfg = RunConfig.from_dict(entry["config"])
        except (KeyError, TypeError, ConfigError):  # a damaged run: `runs` reports it
            continue
        if cfg.data.source == "folder" and cfg.data.fingerprint:
            out[entry["run_id"]] = cfg.data
    return out


def _no_match(store_root: Path, root: str, fp: str, own: dict[str, DataConfig]) -> str:
    """Which runs' images are missing, and how the files at `root` differ from theirs (from the cache's file
    lists, when it still holds them)."""
    head = f"no run in {store_root} was trained on the images in {root} (fingerprint {fp[:12]}); nothing recorded"
    cache = store.cache_dir()
    new = read_json_entry(cache, f"{fp}.files.json")
    missing = []
    for run_id, d in own.items():
        if images_found(d, cache):
            continue
        old = read_json_entry(cache, f"{d.fingerprint}.files.json")
        diff = changes([tuple(r) for r in old], [tuple(r) for r in new]) if isinstance(old, list) and \
            isinstance(new, list) else "its file list is no longer cached"
        missing.append(f"{run_id} (images were at {d.root}; against them: {diff})")
    if not own:
        return head + " (the store has no run on own images)"
    if not missing:
        return head + " (every own-images run of the store finds its images)"
    more = f", and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
    return f"{head}. Runs whose images are missing: {'; '.join(missing[:SHOWN])}{more}"
