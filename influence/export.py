"""A cleaned data set to take away: the run's training set without a removal set, written to a new folder.

- folder / zip sources: the original files, byte for byte, under their unique relative paths;
- built-in data (MNIST, torchvision): one PNG per image in a sub-folder per class, and labels.csv;
- always: removed.csv (id, path, label, influence per metric of the result in use) and
  manifest.json (what was removed and why: method, the named result and its options, verdicts, and per
  metric the spot check's trust levels with what its replays measured, or "not checked").
The folder is built next to the target under a temporary name (`.NAME.partial-*`, with a lock file beside
it that the export holds) and renamed into place when complete. Any failure (a full disk, a target that
cannot be written) is one ConfigError, and the partial folder is removed; partial folders of exports that
were killed (their lock is free) are removed by the next export to the same target. The source is only
read: a target inside it (or around it) is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import store
from .cleanse import check_removal_ids
from .context import RunContext, load_run_config
from .data.sources import Reader, list_source
from .errors import ConfigError, StoreError
from .estimator import cached_results, chosen_name
from .honesty import metric_report, uninformative
from .removal import removal_frame
from .validation.spotcheck import check_path, stored_check
from .validation.trust import kept

MANIFEST, REMOVED, LABELS = "manifest.json", "removed.csv", "labels.csv"
PARTIAL = ".{name}.partial-"


def _check_target(target: Path, source: Path | None) -> None:
    if source is not None:
        src = source.resolve()
        if target == src or src in target.parents or target in src.parents:
            raise ConfigError(f"export target {target} overlaps the source {src}; the source is never written to: "
                              "choose a folder outside it")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"export target {target} already exists and is not empty; choose a new folder")


def export_cleaned(run: store.Run, removal_ids, target: str | os.PathLike, why: str = "removal set",
                   ctx: RunContext | None = None) -> dict:
    """Write the training set without `removal_ids` to `target`; returns the manifest."""
    cfg = load_run_config(run)
    if cfg.is_2d:
        raise ConfigError("export writes image files; the 2D toy has none")
    ctx = ctx or RunContext.create(cfg, run.root)
    ds = ctx.dataset
    removed = check_removal_ids(removal_ids, ds.n_train)
    keep = np.setdiff1d(np.arange(ds.n_train), removed)
    target = Path(target).expanduser().absolute()
    source = Path(ds.notes.root) if ds.notes is not None else None  # own images: where they were read from
    try:
        target = target.resolve()
        _remove_stale_partials(target)  # also where the target exists: one killed after its rename left its lock
        _check_target(target, source)
        target.parent.mkdir(parents=True, exist_ok=True)
        with _partial_folder(target) as tmp:
            if source is not None:
                files = _copy_originals(source, [ds.train_paths[i] for i in keep], tmp)
            else:
                files = _write_pngs(ds, keep, tmp)
            name = chosen_name(run)
            results = cached_results(run, name)
            verdicts = metric_report(run, ctx)["verdicts"]
            check = stored_check(run, name)
            _write_file(tmp / REMOVED, removal_frame(removed, ds, results, verdicts).to_csv(index=False).encode())
            manifest = {
                "run_id": run.run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "source": cfg.data.source, "source_root": str(source) if source else cfg.data.root,
                "n_train": ds.n_train,
                "n_removed": int(len(removed)), "n_exported": int(len(keep)), "files": files,
                "why": why, "influence_result": name,
                "estimate_options": next(iter(results.values())).meta["options"] if results else None,
                "stability_verdicts": {m: r.meta["verdict"] for m, r in results.items()},
                # what replays showed of the estimate the set came from: the levels a curator can check
                "trust": {m: kept(r, check) for m, r in results.items()},
                "trust_check_file": check_path(name, check["level"]) if check else None,
                # what each metric can mean for this run: an influence on an uninformative metric means nothing
                "metric_verdicts": verdicts,
                "uninformative_metrics": [m for m in verdicts if uninformative(verdicts, m)],
                "removed_list": REMOVED,
                "note": "the training split only: the run's validation and test images are not part of the export",
                **_not_exported(ds),
            }
            _write_file(tmp / MANIFEST, store.encode_json(manifest))
            _check_target(target, source)  # nobody created it meanwhile
            if target.exists():
                target.rmdir()  # an empty folder the user made for it
            os.rename(tmp, target)
    except (OSError, StoreError) as e:
        reason = e.strerror or str(e) if isinstance(e, OSError) else str(e)
        where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        raise ConfigError(f"cannot export to {target}: {reason}{where}; nothing was exported") from None
    return manifest


HELD_OUT_WHY = {"valid": "held out for validation: influence is estimated on it",
                "test": "held out for testing: cleansing is judged on it"}


def _not_exported(ds) -> dict:
    """Own images: every file of the source that the export does not hold besides the removed ones, and why;
    and the paths the export gives members whose names were not unique."""
    report = ds.source_report()
    if not report:
        return {}
    held = [{"path": p, "why": HELD_OUT_WHY[s]} for s in ("valid", "test") for p in report["held_out"][s]]
    return {"not_exported": {"held_out": held, "unreadable": report["unreadable"],
                             "links_not_followed": report["links_not_followed"]},
            "renamed": report["renamed"]}


@contextlib.contextmanager
def _partial_folder(target: Path):
    """A new `.NAME.partial-*` folder beside the target, with a lock file `<folder>.lock` that this export holds
    until the block ends (the folder is removed then, unless renamed into place). Dead exports' partials are
    removed before (`export_cleaned`)."""
    lock_file = tempfile.NamedTemporaryFile(dir=target.parent, prefix=PARTIAL.format(name=target.name),
                                            suffix=".lock", delete=False)
    lock = Path(lock_file.name)
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # before the folder exists
        tmp = lock.with_suffix("")
        tmp.mkdir()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place
    finally:
        lock.unlink(missing_ok=True)
        lock_file.close()


def _remove_stale_partials(target: Path) -> None:
    """Partial folders (and lock files) of exports to `target` that died: their lock is free, or missing."""
    prefix = PARTIAL.format(name=target.name)
    for path in sorted(target.parent.glob(prefix + "*"), key=lambda p: p.name.endswith(".lock")):
        lock = path if path.name.endswith(".lock") else path.with_name(path.name + ".lock")
        if path is lock and not lock.exists():
            continue  # removed with its folder just before
        with contextlib.suppress(OSError), open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # an export running now
            if path is not lock:
                shutil.rmtree(path, ignore_errors=True)
            lock.unlink(missing_ok=True)


def _write_file(path: Path, data: bytes) -> None:
    """One exported file (tests replace it to simulate a full disk)."""
    with open(path, "xb") as f:
        f.write(data)


def _copy_originals(source: Path, paths: list[str], out: Path) -> int:
    """Each instance's own bytes under its unique path (zip members that shared a name are told apart by
    their place in the archive, not by the name)."""
    listing = list_source(source)
    members = {m.path: m for m in listing.members}
    with Reader(listing) as reader:
        for rel in paths:
            data = reader.read(members[rel]) if rel in members else "gone"
            if isinstance(data, str):
                raise ConfigError(f"{rel} cannot be read from {source} any more ({data}); nothing exported")
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            _write_file(dst, data)
    return len(paths)


def _write_pngs(ds, keep: np.ndarray, out: Path) -> int:
    """One PNG per kept image in a folder per class (so the export loads back as a labelled folder)."""
    x = ((ds.train.x[keep].numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
    labels = ds.train.y.numpy()[keep] if ds.train.y is not None else None
    rows = []
    for k, i in enumerate(keep.tolist()):
        cls = ds.class_names[labels[k]] if labels is not None and ds.class_names else None
        rel = f"{_safe(cls)}/{i:06d}.png" if cls is not None else f"{i:06d}.png"
        arr = x[k][0] if x.shape[1] == 1 else x[k].transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        _write_file(out / rel, buf.getvalue())
        rows.append({"file": rel, "id": i, "source_index": int(ds.source_index[i]),
                     "label": int(labels[k]) if labels is not None else -1, "class": cls or ""})
    _write_file(out / LABELS, pd.DataFrame(rows).to_csv(index=False).encode())
    return len(rows)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "class"
