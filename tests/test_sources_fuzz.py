"""Fuzz of own-image sources (issue 23's numbers): zips and folders with repeated names, a file beside a folder of
the same name, links (out of the folder, to folders, dangling, loops), pipes, pixel and deflate bombs, odd
modes (1-bit, palette, LA, RGBA, 16-bit grey, CMYK and grey JPEG) and damaged central directories.

Each input goes through `prepare` (survey, fingerprint) and `load_dataset`. The outcome is predicted from an
independent decoding of the members with PIL: a one-line DataError/ConfigError where the source cannot be a
data set, else exactly the decodable members' images (as a multiset: nothing leaked, nothing dropped), each
under a unique path that names its member, and every other member listed as skipped. Damaged archives: a
one-line error, or a result whose paths are unique and whose counts add up. Never a traceback; each input runs
under a 20 s alarm (a hang fails), and the process's peak memory may grow by at most 300 MB over all of them.
Caps, scaled down so that bombs trigger: files 1 MB, 1 MP per image, 4 MP per source (the defaults: 50 MB,
2^26 and 2^32 pixels). `pytest -s` prints the counts (`FAULTS sources: ...`).
"""

from __future__ import annotations

import io
import os
import resource
import signal
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from influence.config import apply_overrides, preset
from influence.data import decode, load_dataset, prepare, sources
from influence.errors import ConfigError, DataError

FILE_CAP, IMAGE_CAP, SOURCE_CAP = 2**20, 2**20, 2**22
SIZE = 28
TRIED: Counter = Counter()
MEMORY_GROWTH_MB = 300


@pytest.fixture(scope="module", autouse=True)
def scaled_caps_and_counts():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    previous = signal.signal(signal.SIGALRM, _hang)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "MAX_FILE_BYTES", FILE_CAP)
        mp.setattr(decode, "MAX_IMAGE_PIXELS", IMAGE_CAP)
        mp.setattr(decode, "MAX_SOURCE_PIXELS", SOURCE_CAP)
        yield
    signal.signal(signal.SIGALRM, previous)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"\nFAULTS sources: {sum(TRIED.values())} inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
          + f"; peak memory grew by {growth:.0f} MB")
    assert growth < MEMORY_GROWTH_MB


def _hang(*_):
    raise TimeoutError("an input took more than 20 s: a hang")


def _img(mode: str, size=(8, 8), value=None, fmt="PNG", seed=0) -> bytes:
    """An image in `mode` (random pixels, or one `value`), saved as PNG or JPEG."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    elif value is not None:
        img = Image.new(mode, size, value)
    else:
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


CONTENTS = {
    **{f"grey{i}": _img("L", seed=i) for i in range(4)},
    **{f"rgb{i}": _img("RGB", (9, 7), seed=10 + i) for i in range(3)},
    "rgba": _img("RGBA", seed=20), "palette": _img("P", seed=21), "la": _img("LA", seed=22), "1bit": _img("1", seed=23),
    "grey16": _img("I;16", seed=24), "jpeg": _img("RGB", (12, 10), fmt="JPEG", seed=25),
    "jpeg-grey": _img("L", fmt="JPEG", seed=26), "cmyk": _img("CMYK", fmt="JPEG", seed=27),
    "too-many-pixels": _img("L", (1100, 1000), value=0),  # 1.1 MP, over the per-image cap: skipped
    "large": _img("L", (1000, 900), value=3),  # 0.9 MP: five of them pass the 4 MP source cap
    "header-bomb": _header_only(100_000, 100_000), "deflate-bomb": b"\0" * (2 * FILE_CAP),
    "truncated": _img("L", seed=30)[:60], "random": bytes(np.random.default_rng(31).integers(0, 256, 200, np.uint8)),
    "empty": b"", "text": b"not an image",
}
GOOD = [k for k in CONTENTS if k.startswith(("grey", "rgb"))]
CONTENT = st.one_of(st.sampled_from(GOOD), st.sampled_from(GOOD), st.sampled_from(sorted(CONTENTS)))
NAMES = st.one_of(
    st.sampled_from(["a.png", "a.png", "b.png", "c/d.png", "c/d.png/e.png", "c", "x.jpg", "deep/1/2/3.png",
                     "UPPER.PNG", "sp ace.png", "ü.png", ".hidden.png", "__MACOSX/a.png", "e/f.png", "noext"]),
    st.text(st.characters(whitelist_categories=("Ll", "Nd")), min_size=1, max_size=6).map(lambda s: f"r/{s}.png"),
)
ZIP_NAMES = st.one_of(NAMES, st.sampled_from(["../up.png", "/abs.png", "C:\\win.png", "a/../../b.png"]))


def _unsafe(name: str) -> bool:
    win = PureWindowsPath(name)
    return bool(win.drive or win.root) or ".." in win.parts


def _hidden(name: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(name).parts)


def _decoded(blob: bytes, mode: str) -> tuple[int, np.ndarray | None]:
    """(pixels the header claims, or 0 when it is unreadable or over the per-image cap; the image, or None),
    by PIL alone."""
    if len(blob) > FILE_CAP:
        return 0, None
    pixels = 0
    try:
        with Image.open(io.BytesIO(blob), formats=("PNG", "JPEG")) as im:
            if im.width * im.height > IMAGE_CAP:
                return 0, None
            pixels = im.width * im.height
            if im.mode in ("I;16", "I"):
                im = Image.fromarray(np.rint(np.asarray(im, np.float64).clip(0, 65535) / 257).astype(np.uint8))
            arr = np.asarray(im.convert(mode).resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)
    except Exception:
        return pixels, None
    return pixels, arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W), as the data set holds it


def _expect(members: list[tuple[str, bytes]], mode: str) -> tuple[bool, list[bytes], int]:
    """(whether the source loads, its decodable images as bytes, how many members are listed): unsafe names are
    listed (and skipped), hidden ones not."""
    listed = [(n, b) for n, b in members if _unsafe(n) or not _hidden(n)]
    results = [_decoded(b, mode) for n, b in listed if not _unsafe(n)]
    images = [a.tobytes() for _, a in results if a is not None]
    loads = sum(p for p, _ in results) <= SOURCE_CAP and len(images) > 4  # 2 validation + 2 test + training
    return loads, images, len(listed)


def _run(root: Path, mode: str, cache: Path):
    signal.alarm(20)
    try:
        cfg = prepare(apply_overrides(preset("tiny"), ["data.source=folder", f"data.root={root}", "data.n_valid=2",
                                                       "data.n_test=2", f"data.color={'gray' if mode == 'L' else 'rgb'}",
                                                       "data.image_size=28"]))
        return load_dataset(cfg.data, 0, cache)
    except (DataError, ConfigError) as e:
        assert str(e) and "\n" not in str(e) and "Traceback" not in str(e)
        return e
    finally:
        signal.alarm(0)


def _check(ds, loads: bool, images: list[bytes] | None, n_listed: int | None) -> str:
    if isinstance(ds, Exception):
        assert not loads, f"refused a loadable source: {ds}"
        return "one-line error"
    every = ds.paths["train"] + ds.paths["valid"] + ds.paths["test"]
    assert len(every) == len(set(every)) and not any(_unsafe(p) or _hidden(p) for p in every)
    assert {p for p, _ in ds.skipped}.isdisjoint(every)
    if images is None:  # a damaged archive: no independent decoding to compare with
        assert len(every) + len(ds.skipped) == ds.notes.n_files
        return "loaded (damaged archive)"
    assert loads, "loaded a source that should be refused"
    x = np.concatenate([getattr(ds, s).x.numpy() for s in ("train", "valid", "test")])
    got = sorted(np.rint((xi + 1) * 127.5).astype(np.uint8).tobytes() for xi in x)
    assert got == sorted(images)  # every decodable member once: nothing leaked, nothing dropped
    assert len(every) + len(ds.skipped) == n_listed
    return "loaded, images as PIL decodes them"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(st.tuples(ZIP_NAMES, CONTENT), min_size=0, max_size=14),
       damage=st.sampled_from(["none"] * 4 + ["flip-tail", "truncate", "central-signature"]),
       mode=st.sampled_from(["L", "RGB"]), at=st.integers(1, 80))
@example(members=[("c", "grey0")], damage="flip-tail", mode="L", at=63)  # "zip file version 23.5": NotImplementedError
def test_zip_sources_fuzzed(members, damage, mode, at):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "up.zip"
        with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # repeated names are part of the fuzz
            for name, key in members:
                z.writestr(name, CONTENTS[key])
        raw = bytearray(path.read_bytes())
        if damage == "flip-tail" and raw:
            raw[-min(at, len(raw))] ^= 0xFF
        elif damage == "truncate":
            raw = raw[: max(0, len(raw) - at)]
        elif damage == "central-signature" and (i := raw.rfind(b"PK\x01\x02")) >= 0:
            raw[i : i + 4] = b"XXXX"
        path.write_bytes(bytes(raw))
        ds = _run(path, mode, Path(tmp) / "cache")
        if damage == "none":
            loads, images, n_listed = _expect([(n, CONTENTS[k]) for n, k in members], mode)
            outcome = _check(ds, loads, images, n_listed)
        else:
            outcome = _check(ds, False, None, None) if not isinstance(ds, Exception) else "one-line error"
        TRIED[f"zips{' (damaged)' if damage != 'none' else ''}: {outcome}"] += 1


LINKS = ["out-file", "out-dir", "in-dir", "in-file", "dangling", "loop", "fifo"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members=st.lists(st.tuples(NAMES, CONTENT), min_size=0, max_size=14),
       links=st.lists(st.sampled_from(LINKS), max_size=4, unique=True), mode=st.sampled_from(["L", "RGB"]))
def test_folder_sources_fuzzed(members, links, mode):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        root.mkdir()
        written = []
        for name, key in members:
            p = root / name
            if p.exists() or any(q.is_file() for q in p.parents if root in q.parents):
                continue  # a folder cannot hold a file and a folder of one name, nor one name twice
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(CONTENTS[key])
            written.append((name, CONTENTS[key]))
        (Path(tmp) / "outside.png").write_bytes(CONTENTS["grey0"])
        (Path(tmp) / "outdir").mkdir()
        (Path(tmp) / "outdir" / "o.png").write_bytes(CONTENTS["grey1"])
        (root / "sub").mkdir(exist_ok=True)
        extra = []
        for kind in links:
            link = root / f"link-{kind}.png"
            if kind == "out-file":
                os.symlink(Path(tmp) / "outside.png", link)
            elif kind == "out-dir":
                os.symlink(Path(tmp) / "outdir", link)
            elif kind == "in-dir":
                os.symlink(root / "sub", link)
            elif kind == "in-file":
                (root / "sub" / "target.png").write_bytes(CONTENTS["rgb0"])
                os.symlink(root / "sub" / "target.png", link)
                extra += [("sub/target.png", CONTENTS["rgb0"]), (link.name, CONTENTS["rgb0"])]
            elif kind == "dangling":
                os.symlink(root / "nowhere.png", link)
                extra.append((link.name, b""))  # listed as unreadable
            elif kind == "loop":
                os.symlink(link, link)
                extra.append((link.name, b""))
            else:
                os.mkfifo(link)
                extra.append((link.name, b""))
        loads, images, n_listed = _expect(written + extra, mode)
        ds = _run(root, mode, Path(tmp) / "cache")
        outcome = _check(ds, loads, images, n_listed)
        if not isinstance(ds, Exception):
            assert {p for p, _ in ds.notes.links} == {f"link-{k}.png" for k in links if k in ("out-file", "out-dir",
                                                                                            "in-dir")}
        TRIED[f"folders{' with links/pipes' if links else ''}: {outcome}"] += 1
