"""The run store: one folder per run, safe formats, atomic writes, checksummed files.

Layout (see docs/architecture.md):
    ~/.cache/gan-influence/             data set .npz, feature nets (env GAN_INFLUENCE_CACHE overrides)
    <store>/<run_id>/config.json         the full RunConfig (its hash is the run id)
    <store>/<run_id>/manifest.json       size + sha256 of every file written through `Run`
    <store>/<run_id>/...                 weights, trace, history, grids, results

Every write goes to a temp file in the same folder and is renamed into place (then the
folder is synced), so a crash leaves either the old file or the new one. Files are read
back only after their checksum matches the manifest; a damaged file raises StoreError
(callers rebuild caches, and report anything else).

A run file is committed by its manifest entry: temp file (synced), manifest entry, rename.
A writer killed between the entry and the rename leaves the complete new file in its temp
file; the next reader finds it by the entry's checksum and renames it into place (`Run.verify`,
`Run.exists`), so a kill at any instant leaves the last committed version readable.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .errors import StoreError
from .progress import CancelToken, ProgressFn, Reporter

ENV_STORE = "GAN_INFLUENCE_STORE"
ENV_CACHE = "GAN_INFLUENCE_CACHE"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_manifest_lock = threading.Lock()
LOCKS = "_locks"  # <store>/_locks/<run_id>/<artefact>.lock: one writer per artefact (`Run.exclusive`)
_MANIFEST_SELF = "#sha256"  # the manifest's own checksum (of its entries), so a damaged manifest is named as such


def store_root(path: str | os.PathLike | None = None) -> Path:
    root = Path(path or os.environ.get(ENV_STORE) or "runs")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot use store folder '{root}': {e.strerror or e}") from None
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise StoreError(f"store folder '{root}' is not readable and writable")
    return root


def user_cache_dir() -> Path:
    """Dataset-level artefacts shared by every store: GAN_INFLUENCE_CACHE, else $XDG_CACHE_HOME/gan-influence
    (~/.cache/gan-influence)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan-influence"


def cache_dir(root: Path | None = None) -> Path:
    """The converted MNIST, feature nets and their accuracies: one user-level cache for every store (`root` is
    accepted for callers that pass their store; it does not change the answer)."""
    path = user_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot use the cache folder '{path}' ({e.strerror or e}); set {ENV_CACHE} to a "
                         "writable folder") from None
    return path


def check_run_id(run_id: str) -> str:
    # fullmatch: `$` in match() would also admit a trailing newline.
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise StoreError(f"invalid run id '{run_id}': letters, digits, '.', '_' and '-' only")
    return run_id


# ---------------------------------------------------------------- atomic primitives
def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` by `data` atomically; StoreError (old file intact, no temp file left) on failure."""
    _commit(_write_temp(path, data), path)


def _write_file(fd: int, data: bytes) -> None:
    """The low-level write of a new file's bytes (tests replace it to simulate a full disk)."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_temp(path: Path, data: bytes) -> str:
    """A complete, synced temp file with `data` next to `path`; StoreError, nothing left behind, on failure."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        _write_file(fd, data)
        return tmp
    except OSError as e:
        if tmp is not None:
            _silent_unlink(tmp)
        raise StoreError(_cannot_write(path, e)) from None
    except BaseException:
        if tmp is not None:
            _silent_unlink(tmp)
        raise


def _commit(tmp: str, path: Path) -> None:
    try:
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    except OSError as e:
        _silent_unlink(tmp)
        raise StoreError(_cannot_write(path, e)) from None
    except BaseException:
        _silent_unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_TEMP_TAIL = re.compile(r"^[a-z0-9_]{8}\.tmp$")  # what mkstemp adds after the prefix


def _temp_files_of(path: Path) -> list[Path]:
    """Temp files that writers of `path` left ('.<name>.<8 random characters>.tmp'), oldest first."""
    head = f".{path.name}."
    try:
        found = [p for p in path.parent.iterdir()
                 if p.name.startswith(head) and _TEMP_TAIL.match(p.name[len(head):])]
        return sorted(found, key=lambda p: p.stat().st_mtime_ns)
    except OSError:
        return []


def _target_of_temp(tmp: Path) -> Path | None:
    """The file a temp file was written for, or None for anything else."""
    name = tmp.name
    if name.startswith(".") and len(name) > 14 and _TEMP_TAIL.match(name[-12:]) and name[-13] == ".":
        return tmp.with_name(name[1:-13])
    return None


def _stale_temp_files(folder: Path, names: set[str] | None) -> list[tuple[Path, Path]]:
    """(temp file, the file it was written for) in `folder`, for the file names in `names` (None: all)."""
    out = []
    for p in sorted(folder.glob(".*.tmp")) if folder.is_dir() else ():
        target = _target_of_temp(p)
        if target is not None and (names is None or target.name in names):
            out.append((p, target))
    return out


def remove_stale_temp_files(folder: Path, names: Iterable[str] | None = None) -> None:
    """Delete the temp files that killed writers of plain files (`write_bytes`, no manifest) left in `folder`;
    only those of files named `names` if given. The caller is the only writer of those files now."""
    for p, _ in _stale_temp_files(Path(folder), None if names is None else set(names)):
        p.unlink(missing_ok=True)


def _cannot_write(path: Path, e: OSError) -> str:
    return f"cannot write '{path}': {e.strerror or e}; earlier results are unchanged"


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def encode_json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=True).encode()


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_state_dict(state: dict[str, Any]) -> bytes:
    """Tensors (and plain ints/strings, which weights_only loading also admits)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}, buf)
    return buf.getvalue()


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, encode_json(obj))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read '{path}': {e}") from None


def save_state_dict(path: Path, state: dict[str, torch.Tensor]) -> None:
    write_bytes(path, encode_state_dict(state))


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on a damaged file
        raise StoreError(f"cannot read weights '{path}': {e}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- one writer at a time
_held = threading.local()  # lock paths this thread holds -> depth (a nested take of a held lock does not wait)
WAIT_REPORT_S = 0.5


@contextlib.contextmanager
def exclusive(lock: Path, what: str, progress: ProgressFn | None = None, cancel: CancelToken | None = None):
    """Hold `lock` (a flock, across processes and threads) for the block: one writer of `what` at a time.

    Whoever finds it held waits, reporting the stage "waiting" (info `for`: `what`) every half second and
    stopping with Cancelled when `cancel` is set; the lock goes with its holder's death. The block gets
    whether it waited: then the caller checks again whether the other writer already did the work."""
    held = _held.__dict__.setdefault("paths", {})
    key = str(lock)
    if key in held:  # this thread holds it already (e.g. train() called inside a sweep's own training)
        held[key] += 1
        try:
            yield False
        finally:
            held[key] -= 1
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"cannot lock {what} ('{lock}'): {e.strerror or e}") from None
    try:
        report, last = None, 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if report is None or now - last >= WAIT_REPORT_S:
                    report = report or Reporter("waiting", 0, progress, cancel)
                    report(0, **{"for": what})  # raises Cancelled when asked to stop
                    last = now
                time.sleep(0.02)
        held[key] = 1
        try:
            yield report is not None
        finally:
            del held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def folder_lock(root: Path, folder: str | os.PathLike, progress: ProgressFn | None = None,
                cancel: CancelToken | None = None):
    """`exclusive` on a folder outside the runs that users of this store write (an export's target)."""
    try:
        resolved = str(Path(folder).expanduser().resolve())
    except (OSError, ValueError, RuntimeError) as e:
        raise StoreError(f"invalid folder '{folder}': {e}") from None
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return exclusive(Path(root) / LOCKS / "_folders" / f"{digest}.lock", f"the folder {resolved}", progress, cancel)


# ---------------------------------------------------------------- one run
class Run:
    """A run folder. Every file written through it is listed in manifest.json."""

    def __init__(self, root: Path, run_id: str):
        self.root = Path(root)
        self.run_id = check_run_id(run_id)
        self.dir = self.root / run_id

    def path(self, rel: str) -> Path:
        try:
            p = (self.dir / rel).resolve()
        except (ValueError, OSError, TypeError) as e:  # NUL bytes, symlink loops, not a string
            raise StoreError(f"invalid path '{rel!r}' in run {self.run_id}: {e}") from None
        if self.dir.resolve() not in p.parents:
            raise StoreError(f"path '{rel}' leaves the run folder")
        return p

    def exclusive(self, artefact: str, progress: ProgressFn | None = None, cancel: CancelToken | None = None):
        """`exclusive` on one artefact of the run ("train", "influence-<options>", "cleanse-<key>", ...): every
        command, job and app page that writes it takes this first."""
        name = check_run_id(artefact)  # the same rules: a plain file name
        return exclusive(self.root / LOCKS / self.run_id / f"{name}.lock", f"{artefact} of run {self.run_id}",
                         progress, cancel)

    def exists(self, rel: str) -> bool:
        """The file is there (or a killed writer committed it and it is rolled forward now)."""
        p = self.path(rel)
        return p.exists() or (bool(_temp_files_of(p)) and self._roll_forward(rel))

    # manifest ------------------------------------------------------------
    def manifest(self) -> dict[str, dict[str, Any]]:
        m = self.dir / "manifest.json"
        if not m.exists():
            return {}
        try:
            data = read_json(m)
        except StoreError as e:
            raise StoreError(f"run {self.run_id}: 'manifest.json' is damaged ({e})") from None
        own = data.pop(_MANIFEST_SELF, None) if isinstance(data, dict) else None
        if own is not None and own != hashlib.sha256(encode_json(data)).hexdigest():
            raise StoreError(f"run {self.run_id}: 'manifest.json' is damaged (its own checksum differs)")
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
            for v in data.values()
        ):
            raise StoreError(f"run {self.run_id}: 'manifest.json' is damaged (not a table of file sizes and checksums)")
        return data

    @contextlib.contextmanager
    def _manifest_locked(self):
        """The manifest, exclusive across threads and processes until the block ends."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = open(self.dir / ".manifest.lock", "a")
        except OSError as e:
            raise StoreError(_cannot_write(self.dir / ".manifest.lock", e)) from None
        with _manifest_lock, lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.manifest()

    @contextlib.contextmanager
    def _manifest_update(self):
        """Read-modify-write of the manifest, exclusive across threads and processes."""
        with self._manifest_locked() as m:
            yield m
            self._write_manifest(m)

    def _write_manifest(self, m: dict[str, dict[str, Any]]) -> None:
        write_json(self.dir / "manifest.json", {**m, _MANIFEST_SELF: hashlib.sha256(encode_json(m)).hexdigest()})

    def remove_stale_temp_files(self, folders: Iterable[str], names: Iterable[str] | None = None) -> None:
        """Finish the commits that killed writers left in `folders` ("" = the run folder itself), then
        delete their other temp files (writes that never reached the manifest); only those of files named
        `names` if given.

        Only for files no other process is writing now (the caller holds their artefact's lock); the
        manifest's temp files are written under its lock, which this holds."""
        names = None if names is None else set(names)
        with self._manifest_locked() as m:
            for folder in folders:
                for p, target in _stale_temp_files(self.dir / folder, names):
                    rel = target.relative_to(self.dir).as_posix()
                    if rel in m:
                        self._finish_commit(rel, m[rel])  # renames this temp file if it holds the entry's bytes
                    p.unlink(missing_ok=True)

    def _matches(self, p: Path, entry: dict[str, Any] | None) -> bool:
        try:
            return entry is not None and p.stat().st_size == entry["size"] and sha256_file(p) == entry["sha256"]
        except OSError:
            return False

    def _finish_commit(self, rel: str, entry: dict[str, Any]) -> bool:
        """Under the manifest lock: if `rel` differs from its entry and a temp file holds the entry's bytes (its
        writer died between the manifest update and the rename), rename that into place. True if `rel` now
        matches its entry."""
        p = self.path(rel)
        if self._matches(p, entry):
            return True
        for tmp in _temp_files_of(p):
            if self._matches(tmp, entry):
                try:
                    os.replace(tmp, p)
                    _fsync_dir(p.parent)
                except OSError as e:
                    raise StoreError(f"run {self.run_id}: cannot finish the interrupted write of '{rel}': "
                                     f"{e.strerror or e}") from None
                return True
        return False

    def _roll_forward(self, rel: str) -> bool:
        with self._manifest_locked() as m:
            return rel in m and self._finish_commit(rel, m[rel])

    def forget(self, prefix: str) -> None:
        """Drop manifest entries under `prefix` (their files are being removed or rebuilt)."""
        with self._manifest_update() as m:
            for k in [k for k in m if k.startswith(prefix)]:
                del m[k]

    def verify(self, rel: str) -> Path:
        """The file's path after checking it against the manifest; StoreError if missing or damaged.

        No lock on the way there: a file that differs from its entry is checked again under the manifest
        lock, where a writer is either done or dead (`_finish_commit`), so a reader racing a writer never
        calls a file damaged."""
        p = self.path(rel)
        if self._matches(p, self.manifest().get(rel)):
            return p
        with self._manifest_locked() as m:
            entry = m.get(rel)
            if entry is not None and self._finish_commit(rel, entry):
                return p
        if not p.exists():
            raise StoreError(f"run {self.run_id}: '{rel}' is missing")
        if entry is None:
            raise StoreError(f"run {self.run_id}: '{rel}' is not in the manifest (written outside the store?)")
        raise StoreError(f"run {self.run_id}: '{rel}' is damaged (size or checksum differs from the manifest)")

    # writers -------------------------------------------------------------
    def write(self, rel: str, data: bytes) -> Path:
        """Temp file, then the manifest entry, then the rename: a full disk at either write leaves
        the old file and its manifest entry as they were; a kill between the last two steps leaves the
        new file committed in its temp file, which the next reader renames into place."""
        p = self.path(rel)
        tmp = _write_temp(p, data)
        try:
            with self._manifest_locked() as m:
                m[rel] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                self._write_manifest(m)
                _commit(tmp, p)
        except BaseException:
            _silent_unlink(tmp)
            raise
        return p

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write(rel, encode_json(obj))

    def write_npy(self, rel: str, array: np.ndarray) -> Path:
        return self.write(rel, encode_npy(array))

    def write_state_dict(self, rel: str, state: dict[str, torch.Tensor]) -> Path:
        return self.write(rel, encode_state_dict(state))

    # readers (verified) --------------------------------------------------
    def read_json(self, rel: str) -> Any:
        return read_json(self.verify(rel))

    def read_npy(self, rel: str, mmap: bool = False) -> np.ndarray:
        p = self.verify(rel)
        try:
            return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise StoreError(f"cannot read '{p}': {e}") from None

    def read_state_dict(self, rel: str) -> dict[str, torch.Tensor]:
        return load_state_dict(self.verify(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.verify(rel).read_bytes()


def open_run(root: Path, run_id: str) -> Run:
    run = Run(root, run_id)
    if not (run.dir / "config.json").exists():
        raise StoreError(f"no run '{run_id}' in store '{root}' (see `gan-influence runs`)")
    return run


def _store_folders(root: Path) -> list[Path]:
    """The store's folders that may be runs (not its own `_...` folders, not hidden ones)."""
    return [d for d in sorted(Path(root).iterdir()) if d.is_dir() and not d.name.startswith(("_", "."))] \
        if Path(root).exists() else []


def foreign_folders(root: Path) -> list[str]:
    """Folders in the store that cannot be runs: a name that is not a run id ('<id> (copy)', a backup). Runs
    listings skip them (and say so), every command leaves them alone."""
    return [d.name for d in _store_folders(root) if not (_RUN_ID.fullmatch(d.name) and ".." not in d.name)]


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Summaries of the runs in the store, newest first; damaged runs are listed with their problem. Folders
    that are not runs are skipped (`foreign_folders`)."""
    out = []
    foreign = set(foreign_folders(root))
    for d in _store_folders(root):
        if d.name in foreign or not (d / "config.json").exists():
            continue
        run = Run(root, d.name)
        entry: dict[str, Any] = {"run_id": d.name, "modified": (d / "config.json").stat().st_mtime}
        try:
            entry["config"] = run.read_json("config.json")
            entry["summary"] = run.read_json("summary.json") if run.exists("summary.json") else None
        except StoreError as e:
            entry["problem"] = str(e)
        out.append(entry)
    return sorted(out, key=lambda e: -e["modified"])
