"""A folder or zip of images as a list of members: listed within bounds, read one at a time, never extracted.

- Folders are walked without following links to folders; a link to a file is read only when its target lies
  inside the folder (others are listed in `links`, not read). Walking stops with a DataError past
  MAX_SCAN_ENTRIES entries, MAX_SCAN_DEPTH levels or MAX_SCAN_SECONDS (so `/` as the folder fails fast).
- Zips: a damaged archive is a DataError; member names that are unsafe (absolute, '..') are never read.
  Names are made unique: members sharing a name, and a file whose name is also a folder of other members
  (`x.png` and `x.png/y.png`), get `stem~N.ext` paths, listed in `renamed` (an export writes each under it).
- Hidden files and macOS metadata (`.DS_Store`, `__MACOSX/`) are not the user's images and are ignored.
"""

from __future__ import annotations

import os
import stat
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import DataError

MAX_FILE_BYTES = 50 * 2**20  # larger files are skipped (decompression bombs, stray videos)
MAX_ZIP_MEMBERS = 200_000  # a zip with more members is refused outright
MAX_SOURCE_BYTES = 16 * 2**30  # a source whose files hold more in all is refused before anything is read
MAX_SCAN_ENTRIES = 250_000  # directory entries a folder walk looks at before it gives up
MAX_SCAN_DEPTH = 32
MAX_SCAN_SECONDS = 10.0  # (walking all of / here took 13.8 s)


@dataclass
class Member:
    path: str  # unique path of the instance, relative to the root (posix)
    name: str  # its name in the folder or archive (differs from path when renamed)
    size: int  # bytes on disk / uncompressed size the archive declares
    problem: str | None = None  # why it is not read at all (unsafe name, too large, not a regular file)
    index: int = -1  # zip: position in the archive's member list (names may repeat)


@dataclass
class Listing:
    root: Path
    kind: str  # "folder" or "zip"
    members: list[Member]  # sorted by path
    links: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)


def list_source(root: str | Path) -> Listing:
    root = Path(root)
    if root.is_dir():
        listing = Listing(root, "folder", [])
        _walk(root, listing)
    elif root.is_file() and zipfile.is_zipfile(root):
        listing = _zip_listing(root)
    else:
        raise DataError(f"data.root={root} is neither a folder nor a .zip file of PNG/JPEG images")
    listing.members.sort(key=lambda m: m.path)
    listing.links.sort()
    total = sum(m.size for m in listing.members if m.problem is None)
    if total > MAX_SOURCE_BYTES:
        raise DataError(f"{root} holds {total / 2**30:.1f} GiB of files; sources above {MAX_SOURCE_BYTES / 2**30:g} GiB "
                        "are refused (data.sources.MAX_SOURCE_BYTES): use a smaller folder")
    return listing


def ignored(name: str) -> bool:
    """Hidden files and macOS archive metadata are not the user's images (and must not become classes)."""
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


# ---------------------------------------------------------------- folders
def _walk(root: Path, listing: Listing) -> None:
    real_root = os.path.realpath(root)
    deadline = time.monotonic() + MAX_SCAN_SECONDS
    seen = 0
    stack: list[tuple[str, str, int]] = [(str(root), "", 0)]
    while stack:
        folder, rel_folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            listing.members.append(Member(rel_folder or ".", rel_folder or ".", 0, f"cannot list the folder ({e.strerror or e})"))
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_SCAN_ENTRIES or time.monotonic() > deadline:
                what = f"more than {MAX_SCAN_ENTRIES} entries" if seen > MAX_SCAN_ENTRIES else \
                    f"more entries than {MAX_SCAN_SECONDS:g} s of listing reach"
                raise DataError(f"data.root={root} holds {what} (stopped looking; data.sources.MAX_SCAN_*): "
                                "choose the folder that holds your images")
            rel = f"{rel_folder}/{entry.name}" if rel_folder else entry.name
            if ignored(entry.name):
                continue
            try:
                if entry.is_symlink():
                    _link(entry, rel, real_root, listing)
                elif entry.is_dir(follow_symlinks=False):
                    if depth + 1 >= MAX_SCAN_DEPTH:
                        raise DataError(f"data.root={root} nests folders more than {MAX_SCAN_DEPTH} deep ({rel}): "
                                        "choose the folder that holds your images")
                    stack.append((entry.path, rel, depth + 1))
                else:
                    _file(entry.stat(follow_symlinks=False), rel, listing)
            except OSError as e:
                listing.members.append(Member(rel, rel, 0, f"cannot read the file ({e.strerror or e})"))


def _link(entry: os.DirEntry, rel: str, real_root: str, listing: Listing) -> None:
    target = os.path.realpath(entry.path)
    if os.path.commonpath([real_root, target]) != real_root:
        listing.links.append((rel, f"a link to {target}, outside the folder: not read"))
    elif os.path.isdir(target):
        listing.links.append((rel, "a link to a folder: not followed (its images would count twice)"))
    else:
        _file(os.stat(target), rel, listing)


def _file(st: os.stat_result, rel: str, listing: Listing) -> None:
    if not stat.S_ISREG(st.st_mode):
        listing.members.append(Member(rel, rel, 0, "not a regular file (device, pipe or socket)"))
    elif st.st_size > MAX_FILE_BYTES:
        listing.members.append(Member(rel, rel, st.st_size, f"larger than {MAX_FILE_BYTES // 2**20} MB"))
    else:
        listing.members.append(Member(rel, rel, st.st_size))


# ---------------------------------------------------------------- zips
def open_zip(root: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(root)
    # a damaged central directory, mostly; a flipped byte there can also read as an unsupported zip version
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise DataError(f"{root} is not a readable zip file ({type(e).__name__}: {e}); make the archive again") from e


def _zip_listing(root: Path) -> Listing:
    with open_zip(root) as archive:
        infos = archive.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise DataError(f"{root} has {len(infos)} members; more than {MAX_ZIP_MEMBERS} are refused")
    # unsafe names first: '..' would otherwise pass for a hidden name, and the user must hear of them
    files = [(i, info) for i, info in enumerate(infos)
             if not info.is_dir() and (_unsafe(info.filename) or not ignored(info.filename))]
    paths, renamed = unique_paths([info.filename for _, info in files])
    members = []
    for (index, info), path in zip(files, paths, strict=True):
        problem = None
        if _unsafe(info.filename):
            problem = "unsafe path in the archive (absolute or containing '..')"
        elif info.file_size > MAX_FILE_BYTES:
            problem = f"larger than {MAX_FILE_BYTES // 2**20} MB uncompressed"
        members.append(Member(path, info.filename, info.file_size, problem, index))
    return Listing(root, "zip", members, renamed=renamed)


def unique_paths(names: list[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """A path per name that no other member has and that can be written as a file: every member of a repeated
    name, and a file whose name is also a folder of other members, becomes `stem~N.ext`; one with no file name
    ('.') becomes `unnamed~N`."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    folders = {str(p) for n in names for p in PurePosixPath(n).parents if str(p) != "."}
    taken = set(names) | folders
    out, renamed = [], []
    for n in names:
        p = PurePosixPath(n)
        if counts[n] == 1 and n not in folders and p.name:
            out.append(n)
            continue
        why = (f"duplicate name: the archive holds {counts[n]} members named {n}" if counts[n] > 1 else
               f"{n} is also a folder of other members" if n in folders else f"{n} has no file name")
        if not p.name:  # a member named '.' names no file (it would be written as its folder): 'unnamed~N'
            p = p / "unnamed"
        k = 1
        while (new := str(p.with_name(f"{p.stem}~{k}{p.suffix}"))) in taken:
            k += 1
        taken.add(new)
        out.append(new)
        renamed.append((n, new, why))
    return out, renamed


def _unsafe(name: str) -> bool:
    path = PureWindowsPath(name)  # parses both '/' and '\' separators and drive letters
    return bool(path.drive or path.root) or ".." in path.parts


# ---------------------------------------------------------------- reading
class Reader:
    """Reads members' bytes (bounded) from a listing; for a zip, keeps the archive open until closed."""

    def __init__(self, listing: Listing):
        self.listing = listing
        self._zip = open_zip(listing.root) if listing.kind == "zip" else None
        self._infos = self._zip.infolist() if self._zip is not None else None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, member: Member) -> bytes | str:
        """The member's bytes, or why they cannot be read."""
        if member.problem is not None:
            return member.problem
        try:
            if self._zip is None:
                # O_NONBLOCK: a file replaced by a pipe since the listing must not hang the load
                with os.fdopen(os.open(self.listing.root / member.name, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
                    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                        return "not a regular file (device, pipe or socket)"
                    data = f.read(MAX_FILE_BYTES + 1)
            else:
                # Read at most one byte past the bound: the header's size may lie.
                with self._zip.open(self._infos[member.index]) as f:
                    data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            return f"cannot read the file ({e.strerror or e})"
        except Exception as e:  # zipfile raises many types: bad CRC, encryption, unknown compression, zlib errors
            return f"cannot read from the archive ({type(e).__name__}: {e})"
        return data if len(data) <= MAX_FILE_BYTES else f"larger than {MAX_FILE_BYTES // 2**20} MB"
