"""Own-image sources (issue 23, items 1, 3, 5, 8, 9, 11, 12): a run is bound to the exact files it was trained
on (fingerprint in the run id, refusal when they change), unique paths for zip members, bounded decoding, 16-bit
PNGs, damaged archives, bounded folder walks and links that leave the folder."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from influence import classifier, store
from influence.cli import main
from influence.config import RunConfig, apply_overrides, preset, validate
from influence.context import RunContext
from influence.data import load_dataset, prepare
from influence.data.images import hold_out
from influence.errors import ConfigError, DataError
from influence.estimator import estimate
from influence.train import train

N_PER_CLASS = 36  # two classes: 72 images, 20 + 20 held out (auto), 32 to train


def png(value: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def class_folder(root: Path, n: int = N_PER_CLASS) -> Path:
    """Two class folders of small grey PNGs, each image a different shade."""
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / f"c{c}" / f"{i:03d}.png").write_bytes(png(40 + 100 * c + i))
    return root


def own_config(root: Path | str, *sets: str):
    """The tiny preset on a folder through --set, as the CLI makes it (then prepared)."""
    return prepare(apply_overrides(preset("tiny"), ["data.source=folder", f"data.root={root}", "train.batch_size=8",
                                                    *sets]))


def _one_error_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- item 1: fingerprint, run id, refusal
def test_the_fingerprint_enters_the_run_id_and_the_root_is_made_absolute(tmp_path, monkeypatch):
    a, b = class_folder(tmp_path / "a" / "imgs"), class_folder(tmp_path / "b" / "imgs")
    (b / "c0" / "000.png").write_bytes(png(7))  # one file differs
    monkeypatch.chdir(tmp_path / "a")
    from_a = own_config("imgs")
    monkeypatch.chdir(tmp_path / "b")
    from_b = own_config("imgs")
    assert from_a.data.root == str(a) and from_b.data.root == str(b)  # absolute, not the text typed
    assert from_a.data.fingerprint and from_a.data.fingerprint != from_b.data.fingerprint
    assert from_a.run_id != from_b.run_id
    assert from_a.run_id.startswith("imgs-tiny-s0-")  # the data set's name, then the preset
    (a / "c1" / "new.png").write_bytes(png(3))
    assert own_config(a).run_id != from_a.run_id  # one more file: another run
    # built-in data keep their ids (pinned in test_config), and need no fingerprint
    assert prepare(preset("tiny")).run_id == preset("tiny").run_id and preset("tiny").data.fingerprint is None


def test_the_same_images_in_another_folder_are_the_same_run_and_older_runs_keep_their_ids(tmp_path):
    a = class_folder(tmp_path / "a" / "imgs")
    b = tmp_path / "b" / "imgs"
    shutil.copytree(a, b)
    from_a, from_b = own_config(a), own_config(b)
    assert from_a.data.root != from_b.data.root and from_a.run_id == from_b.run_id  # bound by content alone
    assert "root" not in from_a.identity()["data"] and from_a.identity()["data"]["root_in_id"] is False
    # a run made before 2026-12-05 (its config.json has no root_in_id) keeps its path in its id, as it had it
    old = {**from_a.to_dict(), "data": {k: v for k, v in from_a.to_dict()["data"].items() if k != "root_in_id"}}
    legacy = RunConfig.from_dict(old)
    data = legacy.identity()["data"]
    assert data["root"] == str(a) and "root_in_id" not in data
    assert legacy.run_id != from_a.run_id
    assert legacy.run_id != dataclasses.replace(legacy, data=dataclasses.replace(legacy.data, root=str(b))).run_id
    with pytest.raises(ConfigError, match="root_in_id=false needs data.fingerprint"):
        validate(dataclasses.replace(from_a, data=dataclasses.replace(from_a.data, fingerprint=None)))


def test_feature_net_cache_is_keyed_by_the_fingerprint_not_the_path(tmp_path):
    a = class_folder(tmp_path / "a")
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b)
    ca, cb = own_config(a), own_config(b)
    weights = [classifier.feature_weights(c.eval, c.identity()["data"], tmp_path) for c in (ca, cb)]
    assert ca.eval.feature == "mnist-cnn" and weights[0] == weights[1]  # same files, one net
    (b / "c0" / "000.png").write_bytes(png(9))
    cc = own_config(b)
    assert classifier.feature_weights(cc.eval, cc.identity()["data"], tmp_path) != weights[0]


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A finished tiny run on a folder of 72 labelled images, with influence on FID."""
    base = tmp_path_factory.mktemp("own_run")
    images = class_folder(base / "imgs")
    (images / "c0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (images / "notes.txt").write_text("not an image")
    cfg = own_config(images)
    run = train(cfg, base / "store")
    estimate(run, ["fid"])
    return run, images, cfg


def _copy(own_run, tmp_path):
    """A private copy of the run and its images (the test changes the images)."""
    run, images, cfg = own_run
    new_images = tmp_path / "imgs"
    shutil.copytree(images, new_images)
    root = tmp_path / "store"
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(new_images)))
    shutil.copytree(run.dir, root / cfg.run_id)
    store.write_json(root / cfg.run_id / "config.json", cfg.to_dict())  # the copy's own data.root
    copy = store.Run(root, cfg.run_id)
    with copy._manifest_update() as m:
        m["config.json"] = {"size": (root / cfg.run_id / "config.json").stat().st_size,
                            "sha256": store.sha256_file(root / cfg.run_id / "config.json")}
    return copy, new_images, cfg


def test_the_run_records_its_source(own_run):
    run, images, cfg = own_run
    record = run.read_json("source.json")
    assert record["fingerprint"] == cfg.data.fingerprint and record["n_images"] == 2 * N_PER_CLASS
    assert record["split_sizes"] == {"train": 2 * N_PER_CLASS - 40, "valid": 20, "test": 20}
    assert run.read_json("summary.json")["n_unreadable"] == 2
    assert [u["path"] for u in record["unreadable"]] == ["c0/broken.png", "notes.txt"]
    assert all(u["reason"] for u in record["unreadable"])
    assert sorted(record["held_out"]["valid"] + record["held_out"]["test"]) == sorted(
        RunContext.create(cfg, run.root).dataset.paths["valid"] + RunContext.create(cfg, run.root).dataset.paths["test"])


@pytest.mark.parametrize("change, says", [
    (lambda d: (d / "c1" / "zzz.png").write_bytes(png(1)), "1 file added (c1/zzz.png)"),
    (lambda d: (d / "c0" / "005.png").unlink(), "1 file removed (c0/005.png)"),
    (lambda d: (d / "c0" / "005.png").write_bytes(png(250)), "1 file changed (c0/005.png)"),
])
def test_every_command_refuses_a_changed_source(own_run, tmp_path, capsys, change, says):
    run, images, cfg = _copy(own_run, tmp_path)
    RunContext.create(cfg, run.root)  # unchanged: loads
    change(images)
    with pytest.raises(DataError, match="changed since this run was made"):
        RunContext.create(cfg, run.root)
    removal = tmp_path / "r.csv"
    removal.write_text("id\n0\n")
    base = ["--store", str(run.root)]
    for argv in (["estimate", "--run", run.run_id, "--metric", "dloss"],
                 ["cleanse", "--run", run.run_id, "--remove", str(removal)],
                 ["cleanse", "--run", run.run_id, "--top-harmful", "2", "--by", "fid"],
                 ["validate", "--run", run.run_id, "--metric", "fid", "--n", "2"],
                 ["export", "--run", run.run_id, "--removal", str(removal), "--to", str(tmp_path / "out")]):
        line = _one_error_line(capsys, base + argv)
        assert "changed since this run was made" in line and says in line, (argv, line)
        assert "IndexError" not in line
    assert not (tmp_path / "out").exists()


def test_moved_images_are_found_again_by_their_fingerprint(own_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(store.ENV_CACHE, str(tmp_path / "cache"))  # this test's own record of where images lie
    run, images, cfg = _copy(own_run, tmp_path)
    before = RunContext.create(cfg, run.root).dataset  # also puts the images' file list in the cache
    moved = tmp_path / "elsewhere" / "imgs"
    moved.parent.mkdir()
    images.rename(moved)
    base = ["--store", str(run.root)]
    for argv in (["estimate", "--run", run.run_id, "--metric", "dloss"],
                 ["validate", "--run", run.run_id, "--metric", "fid", "--n", "2"]):
        line = _one_error_line(capsys, base + argv)
        assert f"the images of this run are not at {images} (moved or deleted?)" in line, line
        assert "gan-influence relocate --images NEW_PATH" in line
    assert main(base + ["runs"]) == 0
    assert f"  its images are not at {images}; if they moved: gan-influence relocate" in capsys.readouterr().out
    # a place whose files differ is refused, naming the run and what differs; nothing is recorded
    changed = tmp_path / "changed"
    shutil.copytree(moved, changed)
    (changed / "c0" / "005.png").write_bytes(png(250))
    line = _one_error_line(capsys, base + ["relocate", "--images", str(changed)])
    assert f"no run in {run.root} was trained on the images in {changed}" in line and "nothing recorded" in line
    assert f"{run.run_id} (images were at {images}; against them: 1 file changed (c0/005.png))" in line
    assert not (tmp_path / "cache" / "image-locations.json").exists()
    line = _one_error_line(capsys, base + ["relocate", "--images", str(tmp_path / "nowhere")])
    assert line == f"error: there is nothing at {tmp_path / 'nowhere'}: give the folder or .zip where the images are now"
    assert main(base + ["relocate", "--images", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"images": str(moved), "fingerprint": cfg.data.fingerprint,
                                                   "runs": {run.run_id: str(images)}}
    assert main(base + ["relocate", "--images", str(moved)]) == 0  # again: the same record, said in words
    assert f"are the ones 1 run(s) were trained on; they are read from there from now on:\n  {run.run_id} (recorded " \
           f"at {images})" in capsys.readouterr().out
    assert main(base + ["runs", "--json"]) == 0
    assert [r["images_found"] for r in json.loads(capsys.readouterr().out)] == [True]
    after = RunContext.create(cfg, run.root).dataset  # the stored config, unchanged, reads the new place
    assert torch.equal(after.train.x, before.train.x) and after.paths == before.paths
    removal = tmp_path / "r.csv"
    removal.write_text("id\n0\n")
    assert main(base + ["export", "--run", run.run_id, "--removal", str(removal), "--to", str(tmp_path / "x")]) == 0
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["source_root"] == str(moved)
    exported = {p.relative_to(tmp_path / "x").as_posix() for p in (tmp_path / "x").rglob("*.png")}
    assert exported == set(after.train_paths) - {after.train_paths[0]}
    # the images changed at their new place: refused there, as at the old one
    (moved / "c0" / "005.png").write_bytes(png(250))
    with pytest.raises(DataError, match=f"the images in {moved} changed since this run was made: 1 file changed"):
        RunContext.create(cfg, run.root)
    # a folder back at the recorded place is read from there again (a relocation only stands in for a missing one)
    shutil.copytree(changed, images)
    with pytest.raises(DataError, match=f"the images in {images} changed"):
        RunContext.create(cfg, run.root)


def test_a_recorded_config_finds_its_images_elsewhere_by_fingerprint(own_run, tmp_path, capsys):
    """train --config on another machine: the images lie elsewhere (--set data.root), the run is the same."""
    run, images, cfg = own_run
    here = tmp_path / "my_copy"
    shutil.copytree(images, here)
    config = run.path("config.json")
    base = ["--store", str(tmp_path / "store"), "train", "--config", str(config), "--json"]
    assert main([*base, "--set", f"data.root={here}"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == run.run_id
    again = store.open_run(tmp_path / "store", run.run_id)
    assert np.array_equal(again.read_npy("weights/final.npy"), run.read_npy("weights/final.npy"))
    (here / "c0" / "005.png").write_bytes(png(250))
    line = _one_error_line(capsys, [*base, "--set", f"data.root={here}", "--seed", "1"])
    assert f"the images in {here} changed since this run was made: 1 file changed (c0/005.png)" in line
    missing = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(tmp_path / "gone")))
    (tmp_path / "gone.json").write_text(json.dumps(missing.to_dict()))
    line = _one_error_line(capsys, ["--store", str(tmp_path / "store"), "train", "--config", str(tmp_path / "gone.json")])
    assert line.endswith(f"not at {tmp_path / 'gone'} (moved or deleted?). Give their place here with --set "
                         f"data.root=PATH (the files must be the ones {tmp_path / 'gone.json'} was made with).")


def test_a_trained_run_given_its_images_elsewhere_keeps_that_place(own_run, tmp_path, monkeypatch, capsys):
    """train --config --set data.root=NEW for a run already in the store (its folder gone): NEW is recorded, as
    relocate would, so the run's other commands read from there; while its own folder exists, nothing is."""
    monkeypatch.setenv(store.ENV_CACHE, str(tmp_path / "cache"))
    run, images, cfg = _copy(own_run, tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(images, copy)
    argv = ["--store", str(run.root), "train", "--config", str(run.path("config.json")), "--set",
            f"data.root={copy}", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["images_recorded_at"] is None  # its own folder is still there
    assert not (tmp_path / "cache" / "image-locations.json").exists()
    images.rename(tmp_path / "gone")
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == run.run_id and out["images_recorded_at"] == str(copy)
    assert RunContext.create(cfg, run.root).dataset.notes.root == str(copy)  # the stored config reads the new place
    assert main(["--store", str(run.root), "estimate", "--run", run.run_id, "--metric", "dloss", "--check", "none"]) == 0


def test_the_refusal_counts_files_when_the_cache_forgot_them(own_run, tmp_path, monkeypatch):
    run, images, cfg = _copy(own_run, tmp_path)
    monkeypatch.setenv(store.ENV_CACHE, str(tmp_path / "fresh-cache"))
    (images / "c0" / "001.png").unlink()
    with pytest.raises(DataError, match=r"changed since this run was made: its files' paths, sizes or contents "
                                        r"differ \(now 73 files\)"):
        RunContext.create(cfg, run.root)


def test_unprepared_own_images_config_is_refused_for_training(tmp_path):
    images = class_folder(tmp_path / "imgs")
    raw = apply_overrides(preset("tiny"), ["data.source=folder", f"data.root={images}"])
    assert raw.data.color == "auto"  # the images decide (prepare reads them)
    with pytest.raises(ConfigError, match="was not prepared"):
        load_dataset(raw.data, 0, tmp_path / "cache")
    legacy = dataclasses.replace(raw, data=dataclasses.replace(prepare(raw).data, fingerprint=None))
    with pytest.raises(ConfigError, match="needs its images' fingerprint"):
        train(legacy, tmp_path / "store")


# ---------------------------------------------------------------- item 3: duplicate names in a zip
def labelled_zip(path: Path, extra: list[tuple[str, bytes]] = ()) -> Path:
    """Two class folders of small PNGs in a zip, plus `extra` members (names may repeat)."""
    with zipfile.ZipFile(path, "w") as z:
        for c in range(2):
            for i in range(N_PER_CLASS):
                z.writestr(f"c{c}/{i:03d}.png", png(40 + 100 * c + i))
        for name, blob in extra:
            z.writestr(name, blob)
    return path


@pytest.fixture(scope="module")
def dup_run(tmp_path_factory):
    """A finished tiny run on a zip whose two members named c0/dup.png hold different images, and that holds both
    c0/x.png and c0/x.png/y.png."""
    base = tmp_path_factory.mktemp("dup_run")
    with pytest.warns(UserWarning, match="Duplicate name"):
        archive = labelled_zip(base / "dups.zip", [("c0/dup.png", png(1)), ("c0/dup.png", png(254)),
                                                   ("c0/x.png", png(5)), ("c0/x.png/y.png", png(6))])
    # a seed whose split trains on all four (sorted paths: c0/000..035, then c0/dup~1, c0/dup~2, c0/x.png/y.png,
    # c0/x~1.png at 36..39)
    seed = next(s for s in range(1000) if set(range(36, 40)) <= set(hold_out(2 * N_PER_CLASS + 4, 20, 20, s)["train"]))
    cfg = own_config(archive, "data.n_valid=20", "data.n_test=20", f"seed={seed}")
    return train(cfg, base / "store"), cfg


def test_zip_members_sharing_a_name_get_unique_paths_and_are_reported(dup_run):
    run, cfg = dup_run
    ds = RunContext.create(cfg, run.root).dataset
    every = ds.paths["train"] + ds.paths["valid"] + ds.paths["test"]
    assert len(every) == len(set(every)) == 2 * N_PER_CLASS + 4 and "c0/dup.png" not in every
    assert {"c0/dup~1.png", "c0/dup~2.png"} <= set(every)
    assert ds.ambiguous_paths == {"c0/dup.png": ["c0/dup~1.png", "c0/dup~2.png"]}
    renamed = run.read_json("source.json")["renamed"]
    assert [r["path"] for r in renamed] == ["c0/dup~1.png", "c0/dup~2.png", "c0/x~1.png"]
    assert all("duplicate name: the archive holds 2 members named c0/dup.png" in r["reason"] for r in renamed[:2])
    assert renamed[2]["reason"] == "c0/x.png is also a folder of other members"
    # each path holds its own member's image: dup~1 is the dark one, dup~2 the light one
    for rel, value in (("c0/dup~1.png", 1), ("c0/dup~2.png", 254)):
        split = next(s for s in ("train", "valid", "test") if rel in ds.paths[s])
        x = getattr(ds, split).x[ds.paths[split].index(rel)]
        assert abs(float((x.mean() + 1) * 127.5) - value) < 0.5


def test_repeated_members_without_a_file_name_get_unique_paths():
    """Found by the zip fuzz: two members named '.' (a name with no file part) crashed the listing."""
    from influence.data.sources import unique_paths

    paths, renamed = unique_paths([".", ".", "a.png"])
    assert paths == ["unnamed~1", "unnamed~2", "a.png"]
    assert [r[0] for r in renamed] == [".", "."] and "2 members named ." in renamed[0][2]
    # alone, '.' would be written as its folder: renamed too
    assert unique_paths([".", "a.png"]) == (["unnamed~1", "a.png"], [(".", "unnamed~1", ". has no file name")])


def test_a_removal_csv_naming_an_ambiguous_path_is_an_error(dup_run, tmp_path, capsys):
    run, cfg = dup_run
    removal = tmp_path / "r.csv"
    removal.write_text("path\nc0/dup.png\n")
    line = _one_error_line(capsys, ["--store", str(run.root), "export", "--run", run.run_id, "--removal", str(removal),
                                    "--to", str(tmp_path / "out")])
    assert "'c0/dup.png' is ambiguous: the zip holds 2 members of that name, loaded as c0/dup~1.png, c0/dup~2.png" in line


def test_export_never_leaks_a_removed_duplicate_or_drops_a_kept_one(dup_run, tmp_path):
    from influence.export import export_cleaned

    run, cfg = dup_run
    ds = RunContext.create(cfg, run.root).dataset
    train_paths = ds.train_paths
    assert {"c0/dup~1.png", "c0/dup~2.png"} <= set(train_paths)
    removed = train_paths.index("c0/dup~2.png")  # the light one
    manifest = export_cleaned(run, [removed], tmp_path / "out")
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    images = [f for f in files if f.endswith(".png")]
    assert manifest["n_exported"] == len(images) == ds.n_train - 1
    assert "c0/dup~2.png" not in images and (tmp_path / "out" / "c0" / "dup~1.png").read_bytes() == png(1)
    assert all(png(254) != (tmp_path / "out" / f).read_bytes() for f in images)  # the removed image is nowhere


# ---------------------------------------------------------------- item 8: decode bombs, decoded sets cached
def test_a_source_over_the_pixel_cap_is_refused_naming_the_cap(tmp_path, monkeypatch):
    from influence.data import decode

    images = class_folder(tmp_path / "imgs", n=4)  # 8 images of 8x8 = 64 pixels each
    cfg = own_config(images, "data.n_valid=2", "data.n_test=2")
    monkeypatch.setattr(decode, "MAX_SOURCE_PIXELS", 7 * 64)
    decoded = []
    monkeypatch.setattr(decode.Image.Image, "convert", _counting(decode.Image.Image.convert, decoded))
    with pytest.raises(DataError, match=r"hold more than 448 pixels in all \(the cap, data.decode.MAX_SOURCE_PIXELS"):
        load_dataset(cfg.data, 0, tmp_path / "cache")
    assert len(decoded) == 7  # the eighth image's header stopped it, before its pixels were decoded
    with pytest.raises(DataError, match="448 pixels in all"):
        prepare(apply_overrides(preset("tiny"), ["data.source=folder", f"data.root={images}"]))


def _counting(method, calls: list):
    def wrapped(self, *args, **kwargs):
        calls.append(1)
        return method(self, *args, **kwargs)
    return wrapped


def test_a_folder_is_decoded_once_per_fingerprint(tmp_path, monkeypatch):
    from influence.data import images as images_module

    images = class_folder(tmp_path / "imgs", n=12)
    cfg = own_config(images, "data.n_valid=4", "data.n_test=4")
    cache = tmp_path / "cache"
    calls = []
    real = images_module.decode
    monkeypatch.setattr(images_module, "decode", lambda *a: calls.append(1) or real(*a))
    first = load_dataset(cfg.data, 0, cache)
    assert len(calls) == 24
    again = load_dataset(cfg.data, 0, cache)  # another command on the same run: read from the cache
    assert len(calls) == 24 and all(
        torch_equal(getattr(first, s).x, getattr(again, s).x) for s in ("train", "valid", "test"))
    assert again.paths == first.paths and again.skipped == first.skipped
    (images / "c0" / "000.png").write_bytes(png(3))
    load_dataset(prepare(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fingerprint=None))).data, 0, cache)
    assert len(calls) == 48  # another fingerprint: decoded again


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


# ---------------------------------------------------------------- item 9: 16-bit PNGs
def test_16_bit_grey_is_scaled_by_its_range(tmp_path):
    from influence.data.decode import to_mode

    folder = tmp_path / "deep"
    folder.mkdir()
    for i, value in enumerate((0, 32768, 65535, 16384, 49151, 1000)):
        Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(folder / f"{i}.png")
    assert Image.open(folder / "1.png").mode == "I;16"
    ds = load_dataset(own_config(folder, "data.n_valid=2", "data.n_test=2").data, 0, tmp_path / "cache")
    values = sorted(round(float((x.mean() + 1) * 127.5)) for split in (ds.train, ds.valid, ds.test) for x in split.x)
    assert values == [0, 4, 64, 128, 191, 255], values  # 50% grey is 128, not 255
    as_int = Image.fromarray(np.full((4, 4), 32768, dtype=np.int32), "I")  # how older Pillows open 16-bit PNGs
    assert np.asarray(to_mode(as_int, "L")).max() == 128 and np.asarray(to_mode(as_int, "RGB")).max() == 128


# ---------------------------------------------------------------- item 12: links that leave the folder
def test_links_leaving_the_folder_are_not_read_and_are_reported(tmp_path, capsys):
    images = class_folder(tmp_path / "imgs")
    outside = tmp_path / "secret.png"
    outside.write_bytes(png(77))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.png").write_bytes(png(78))
    os.symlink(outside, images / "c0" / "leak.png")
    os.symlink(tmp_path / "other", images / "c1" / "linked-folder")
    os.symlink(images / "c0", images / "c1" / "again")  # its images would count twice
    os.symlink(images / "c0" / "000.png", images / "c1" / "inside.png")  # inside the folder: an image like any
    cfg = own_config(images)
    ds = load_dataset(cfg.data, 0, tmp_path / "cache")
    every = ds.paths["train"] + ds.paths["valid"] + ds.paths["test"]
    assert "c0/leak.png" not in every and not any(p.startswith(("c1/linked-folder", "c1/again")) for p in every)
    assert "c1/inside.png" in every and len(every) == 2 * N_PER_CLASS + 1
    links = dict(ds.notes.links)
    assert links["c0/leak.png"] == f"a link to {outside}, outside the folder: not read"
    assert links["c1/linked-folder"] == f"a link to {tmp_path / 'other'}, outside the folder: not read"
    assert links["c1/again"] == "a link to a folder: not followed (its images would count twice)"
    run = train(cfg, tmp_path / "store")
    assert [x["path"] for x in run.read_json("source.json")["links_not_followed"]] == [
        "c0/leak.png", "c1/again", "c1/linked-folder"]
    assert main(["--store", str(run.root), "train", "--preset", "tiny", "--set", "data.source=folder",
                 "--set", f"data.root={images}", "--set", "train.batch_size=8"]) == 0
    assert f"3 links not followed: c0/leak.png, c1/again, c1/linked-folder (all in {run.dir / 'source.json'})" in \
        capsys.readouterr().out


# ---------------------------------------------------------------- item 11: damaged zips, huge trees
def test_a_zip_with_a_damaged_central_directory_is_a_data_error(tmp_path):
    good = labelled_zip(tmp_path / "good.zip")
    raw = bytearray(good.read_bytes())
    start = raw.rfind(b"PK\x01\x02")  # the last central-directory entry's signature
    raw[start : start + 4] = b"XXXX"
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    for call in (lambda: prepare(apply_overrides(preset("tiny"), ["data.source=folder", f"data.root={bad}"])),
                 lambda: load_dataset(dataclasses.replace(own_config(good).data, root=str(bad)), 0, tmp_path / "c")):
        with pytest.raises(DataError, match=r"bad.zip is not a readable zip file \(BadZipFile"):
            call()


def test_a_huge_tree_is_not_walked_to_the_end(tmp_path, monkeypatch):
    from influence.data import sources

    images = class_folder(tmp_path / "imgs", n=30)
    monkeypatch.setattr(sources, "MAX_SCAN_ENTRIES", 50)
    with pytest.raises(DataError, match=r"holds more than 50 entries \(stopped looking"):
        sources.list_source(images)
    monkeypatch.setattr(sources, "MAX_SCAN_ENTRIES", 10_000)
    monkeypatch.setattr(sources, "MAX_SCAN_SECONDS", 0.0)
    with pytest.raises(DataError, match="more entries than 0 s of listing reach"):
        sources.list_source(images)
    monkeypatch.setattr(sources, "MAX_SCAN_SECONDS", 10.0)
    deep = tmp_path / "deep"
    (deep / "/".join(["d"] * 40)).mkdir(parents=True)
    with pytest.raises(DataError, match="nests folders more than 32 deep"):
        sources.list_source(deep)


# ---------------------------------------------------------------- item 5: export errors
def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_zip_holding_x_png_and_x_png_slash_y_exports_both(dup_run, tmp_path):
    from influence.export import export_cleaned

    run, cfg = dup_run
    export_cleaned(run, [0], tmp_path / "out")
    assert (tmp_path / "out" / "c0" / "x~1.png").read_bytes() == png(5)
    assert (tmp_path / "out" / "c0" / "x.png" / "y.png").read_bytes() == png(6)


def test_an_unwritable_target_is_one_error_line(dup_run, tmp_path, capsys):
    run, cfg = dup_run
    removal = tmp_path / "r.csv"
    removal.write_text("id\n0\n")
    for target, says in (("/proc/x", "cannot export to /proc/x: "), (str(tmp_path / "file.txt" / "x"), "cannot export")):
        (tmp_path / "file.txt").write_text("a file, not a folder")
        line = _one_error_line(capsys, ["--store", str(run.root), "export", "--run", run.run_id, "--removal",
                                        str(removal), "--to", target])
        assert says in line and "nothing was exported" in line, line
    assert not list(Path("/proc").glob(".x.partial-*")) and _files(tmp_path) == ["file.txt", "r.csv"]


def test_a_full_disk_mid_copy_is_one_error_line_and_leaves_nothing(dup_run, tmp_path, monkeypatch, capsys):
    import errno

    from influence import export

    run, cfg = dup_run
    written = []

    def full_after_five(path, data):
        if len(written) == 5:
            with open(path, "xb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        export._write_file.__wrapped__(path, data)

    full_after_five.__wrapped__ = export._write_file
    monkeypatch.setattr(export, "_write_file", full_after_five)
    removal = tmp_path / "r.csv"
    removal.write_text("id\n0\n")
    (tmp_path / "parent").mkdir()
    line = _one_error_line(capsys, ["--store", str(run.root), "export", "--run", run.run_id, "--removal", str(removal),
                                    "--to", str(tmp_path / "parent" / "out")])
    assert f"cannot export to {tmp_path / 'parent' / 'out'}: No space left on device" in line
    assert "nothing was exported" in line
    assert list((tmp_path / "parent").iterdir()) == []  # no partial folder, no lock file


KILLED_EXPORT = """
import os, sys
from influence import export, store
from influence.export import export_cleaned
n = [0]
real = export._write_file
def write(path, data):
    n[0] += 1
    if n[0] == 6:
        os.kill(os.getpid(), 9)
    real(path, data)
export._write_file = write
export_cleaned(store.open_run(store.store_root(sys.argv[1]), sys.argv[2]), [0], sys.argv[3])
"""


def test_a_killed_export_leaves_a_partial_folder_the_next_export_removes(dup_run, tmp_path):
    import fcntl
    import subprocess
    import sys

    from influence.export import export_cleaned

    run, cfg = dup_run
    parent = tmp_path / "parent"
    parent.mkdir()
    proc = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(run.root), run.run_id, str(parent / "out")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.returncode == -9, proc.stderr
    left = sorted(p.name for p in parent.iterdir())
    assert len(left) == 2 and left[0].startswith(".out.partial-") and left[1] == left[0] + ".lock"
    (parent / ".out.partial-oldstyle").mkdir()  # an earlier version's partial folder, without a lock
    running = parent / ".out.partial-running"  # an export still running: its lock is held
    running.mkdir()
    with open(parent / ".out.partial-running.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        export_cleaned(run, [0], parent / "out")
        assert sorted(p.name for p in parent.iterdir()) == [".out.partial-running", ".out.partial-running.lock", "out"]
    assert len(_files(parent / "out")) == 2 * N_PER_CLASS + 4 - 40 - 1 + 2  # kept images, manifest, removed.csv
    stale = parent / ".out.partial-renamed.lock"  # an export killed right after its rename leaves its lock
    stale.touch()
    with pytest.raises(ConfigError, match="already exists"):  # the rerun of that export (bench/kills.py)
        export_cleaned(run, [0], parent / "out")
    assert sorted(p.name for p in parent.iterdir()) == ["out"]


# ---------------------------------------------------------------- issue 26: own images, an honest set-up
def shapes(root: Path, n: int, size: int = 32, mode: str = "RGB", classes: int = 0) -> Path:
    """n coloured (or grey) squares of `size` px, flat or in `classes` class folders."""
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8) + rng.integers(0, 256, 3, dtype=np.uint8)
        img[size // 4 : size // 2, size // 4 : size // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
        rel = Path(f"k{i % classes}" if classes else "") / f"s{i:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).convert(mode).save(root / rel)
    return root


def test_own_images_defaults_follow_the_images_not_mnist(tmp_path):
    rgb = shapes(tmp_path / "my_shapes", 300)
    cfg = prepare(apply_overrides(preset("mnist-adam"), ["data.source=folder", f"data.root={rgb}"]))
    d = cfg.data
    assert (d.color, d.image_size, d.n_train, d.n_valid, d.n_test) == ("rgb", 32, None, 30, 30)
    assert cfg.eval.feature == "autoencoder"  # no class folders: no labels
    assert cfg.run_id.startswith("my_shapes-mnist-adam-s0-") and d.name == "my_shapes"
    grey = shapes(tmp_path / "grey", 120, size=28, mode="L", classes=3)
    cfg = prepare(apply_overrides(preset("mnist-adam"), ["data.source=folder", f"data.root={grey}"]))
    assert (cfg.data.color, cfg.data.image_size, cfg.data.n_valid, cfg.eval.feature) == ("gray", 28, 20, "mnist-cnn")
    big = shapes(tmp_path / "big", 50, size=64)
    for name, size in (("mnist-adam", 32), ("dcgan32", 64), ("tiny", 28)):  # the nearest size the model makes
        assert prepare(apply_overrides(preset(name), ["data.source=folder", f"data.root={big}"])).data.image_size == size
    explicit = prepare(apply_overrides(preset("mnist-adam"), ["data.source=folder", f"data.root={rgb}",
                                                              "data.color=gray", "eval.feature=inception"]))
    assert explicit.data.color == "gray" and explicit.eval.feature == "inception"  # what the user sets stays


def test_split_sizes_are_honoured(tmp_path):
    root = shapes(tmp_path / "six_hundred", 600, size=8)
    cfg = prepare(apply_overrides(preset("tiny"), ["data.source=folder", f"data.root={root}", "data.n_valid=200",
                                                   "data.n_test=200"]))
    ds = load_dataset(cfg.data, 0, tmp_path / "cache")
    assert (ds.n_train, len(ds.valid.x), len(ds.test.x)) == (200, 200, 200)
    assert sorted(ds.paths["train"] + ds.paths["valid"] + ds.paths["test"]) == sorted(
        p.name for p in root.iterdir())
    too_many = dataclasses.replace(cfg.data, n_valid=400)
    with pytest.raises(DataError, match="hold out all of the 600 readable images"):
        load_dataset(too_many, 0, tmp_path / "cache")


def test_uninformative_reaches_the_table_the_json_and_the_export(own_run, tmp_path, capsys):
    import pandas as pd

    run, images, cfg = own_run
    report = run.read_json("metric_report.json")  # written by the estimate: 20 validation images are too few
    assert all(v["verdict"] == "metric uninformative" for v in report["verdicts"].values())
    table = pd.read_csv(run.path("influence/table.csv"))
    assert set(table["flag_fid"]) <= {f"{f}; metric uninformative" for f in ("reliable", "doubtful", "unreliable",
                                                                            "not in a traced batch")}
    meta = run.read_json("influence/table.json")
    assert meta["metrics"]["fid"]["metric_verdict"]["verdict"] == "metric uninformative"
    base = ["--store", str(run.root)]
    removal = tmp_path / "r.csv"
    removal.write_text("id\n0\n1\n")
    assert main(base + ["cleanse", "--run", run.run_id, "--remove", str(removal), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric_verdicts"]["fid"]["verdict"] == "metric uninformative"
    assert main(base + ["cleanse", "--run", run.run_id, "--remove", str(removal)]) == 0
    text = capsys.readouterr().out
    assert text.count("metric uninformative: neither better nor worse") == 3
    assert not re.search(r"\d (better|worse)", text)  # no metric is judged
    assert main(base + ["export", "--run", run.run_id, "--removal", str(removal), "--to", str(tmp_path / "x")]) == 0
    assert "metric uninformative for this run: D-loss, FID, IS" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["uninformative_metrics"] == ["dloss", "fid", "is"]
    assert manifest["metric_verdicts"]["fid"]["reasons"][0].startswith("the validation split has only 20 instances")
    # the files not written besides the removed ones, and why
    left = manifest["not_exported"]
    assert [u["path"] for u in left["unreadable"]] == ["c0/broken.png", "notes.txt"]
    ds = RunContext.create(cfg, run.root).dataset
    assert sorted(h["path"] for h in left["held_out"]) == sorted(ds.paths["valid"] + ds.paths["test"])
    assert {h["why"] for h in left["held_out"]} == {"held out for validation: influence is estimated on it",
                                                    "held out for testing: cleansing is judged on it"}
    exported = {p.relative_to(tmp_path / "x").as_posix() for p in (tmp_path / "x").rglob("*.png")}
    assert exported == set(ds.train_paths) - {ds.train_paths[0], ds.train_paths[1]}
    assert main(base + ["validate", "--run", run.run_id, "--metric", "fid", "--n", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fid"]["metric_verdict"]["verdict"] == "metric uninformative"


def test_training_reports_unreadable_files(own_run, capsys):
    run, images, cfg = own_run
    assert main(["--store", str(run.root), "train", "--preset", "tiny", "--set", "data.source=folder", "--set",
                 f"data.root={images}", "--set", "train.batch_size=8"]) == 0
    out, err = capsys.readouterr()
    assert f"2 unreadable files skipped: c0/broken.png, notes.txt (all in {run.dir / 'source.json'})" in out
    assert ("your images: 72 readable images (8x8 px, grey) in 74 files; 2 unreadable files skipped; grey at 28 px, "
            "20 validation + 20 test images held out, IS/FID features: a classifier trained on the class folders") in err
    assert main(["--store", str(run.root), "train", "--preset", "tiny", "--set", "data.source=folder", "--set",
                 f"data.root={images}", "--set", "train.batch_size=8", "--json"]) == 0
    source = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["source"]
    assert [u["path"] for u in source["unreadable"]] == ["c0/broken.png", "notes.txt"]
