"""Own images on the Train page (issue 26; issue 23 item 11): what the form reads from the images and states, the
config it starts, damaged zips and huge trees as one message (read once, not at every rerun), and "metric
uninformative" on the sidebar and the Cleanse page, which must not colour such a change good or bad."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image

from apphelpers import open_app, texts, tiny_run_id, use_store
from influence import honesty, store
from influence.config import RunConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def shapes(root: Path, n: int) -> Path:
    """n RGB 32x32 squares on coloured grounds, flat (no class folders), and two unreadable files."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        img = np.zeros((32, 32, 3), np.uint8) + rng.integers(0, 256, 3, dtype=np.uint8)
        img[8:16, 8:16] = rng.integers(0, 256, 3, dtype=np.uint8)
        Image.fromarray(img).save(root / f"s{i:04d}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "notes.txt").write_text("not an image")
    return root


def _choose_folder(at, path) -> None:
    at.radio(key="data_key").set_value("folder").run()
    at.text_input(key="img_folder").set_value(str(path)).run()


def test_the_form_reads_colour_size_splits_and_features_from_the_images(app_store, started_jobs, tmp_path):
    folder = shapes(tmp_path / "holiday_shapes", 300)
    at = open_app("train")
    _choose_folder(at, folder)
    assert not at.exception
    said = texts(at)
    assert ("300 readable images (32x32 px, in colour) in 302 files; 2 unreadable files skipped; RGB at 32 px, "
            "30 validation + 30 test images held out, IS/FID features: an autoencoder trained on the images") in said
    assert "Runs on them are named `holiday_shapes-mnist-adam-s<seed>-…`" in said
    assert "Held-out images" in said and "every image held out is one fewer to train on" in said
    assert ("mnist-adam's model and training recipe (dcgan, width 32, adam, 10 epochs) on your images; colour, size, "
            "held-out splits and IS/FID features follow your images, not MNIST") in said
    assert "10k MNIST images" not in said  # not the preset's MNIST description
    prefix = "f-folder-mnist-adam-"
    assert at.selectbox(key=prefix + "data.color").value == "auto"
    assert at.selectbox(key=prefix + "eval.feature").value == "auto"
    assert [at.text_input(key=prefix + k).value for k in ("data.image_size", "data.n_valid", "data.n_test")] == \
        ["auto"] * 3
    at.text_input(key=prefix + "data.n_valid").set_value("100")
    at.text_input(key=prefix + "data.n_test").set_value("50")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    cfg = RunConfig.from_dict(started_jobs[0]["params"]["config"])
    assert (cfg.data.color, cfg.data.image_size, cfg.data.n_valid, cfg.data.n_test, cfg.eval.feature) == (
        "rgb", 32, 100, 50, "autoencoder")
    assert cfg.data.fingerprint and cfg.data.root == str(folder)
    assert cfg.run_id.startswith("holiday_shapes-mnist-adam-s0-")


def test_a_damaged_zip_is_one_message_on_the_train_page(app_store, tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        for i in range(5):
            z.writestr(f"{i}.png", b"x")
    raw = bytearray(good.read_bytes())
    i = raw.rfind(b"PK\x01\x02")
    raw[i : i + 4] = b"XXXX"
    (tmp_path / "bad.zip").write_bytes(bytes(raw))
    at = open_app("train")
    _choose_folder(at, tmp_path / "bad.zip")
    assert not at.exception
    assert "bad.zip is not a readable zip file (BadZipFile" in " ".join(e.value for e in at.error)
    assert not [b for b in at.button if b.label == "Start training"]


def test_a_huge_tree_is_read_once_within_its_bounds(app_store, monkeypatch):
    from influence.data import resolve, sources

    st.cache_data.clear()
    monkeypatch.setattr(sources, "MAX_SCAN_ENTRIES", 200)
    calls = []
    real = resolve.list_source
    monkeypatch.setattr(resolve, "list_source", lambda root: calls.append(root) or real(root))
    at = open_app("train")
    _choose_folder(at, "/")
    for _ in range(2):  # reruns (any widget) do not walk the tree again
        at.run()
    assert not at.exception
    assert "holds more than 200 entries (stopped looking" in " ".join(e.value for e in at.error)
    assert calls == ["/"]


@pytest.fixture
def uninformative_fid(rich_store, tmp_path, monkeypatch) -> Path:
    """A copy of the rich store (the tiny run with a cleansing attempt) whose report calls FID uninformative."""
    root = tmp_path / "store"
    shutil.copytree(rich_store, root, ignore=shutil.ignore_patterns("_jobs"))
    run = store.open_run(root, tiny_run_id(root))
    report = honesty.metric_report(run)
    report["verdicts"]["fid"] = {"verdict": honesty.UNINFORMATIVE, "reasons": ["the test split has only 60 instances"]}
    run.write_json(honesty.REPORT, report)
    return use_store(monkeypatch, root)


def test_uninformative_shows_in_the_sidebar_and_on_the_cleanse_page(uninformative_fid):
    from streamlit.proto.Metric_pb2 import Metric

    at = open_app("cleanse", tiny_run_id(uninformative_fid))
    assert not at.exception
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "FID " in sidebar and "(uninformative)" in sidebar and "metric uninformative" in sidebar
    warning = " ".join(w.value for w in at.warning)
    assert "Metric uninformative for this run: FID" in warning and "only 60 instances" in warning
    fid = next(m for m in at.metric if m.label == "FID after cleansing")
    is_ = next(m for m in at.metric if m.label == "IS after cleansing")
    assert fid.proto.color == Metric.MetricColor.GRAY and "metric uninformative" in fid.proto.help
    assert is_.proto.color != Metric.MetricColor.GRAY  # an informative metric keeps its good/bad colour


def _own_tiny_run(tmp_path, monkeypatch) -> tuple[RunConfig, Path]:
    """A tiny run with influence on FID, on 72 grey images in two class folders; (config, images)."""
    from influence.config import apply_overrides, preset
    from influence.data import prepare
    from influence.estimator import estimate
    from influence.train import train

    images = tmp_path / "imgs"
    for c in range(2):
        (images / f"c{c}").mkdir(parents=True)
        for i in range(36):
            Image.new("L", (8, 8), 40 + 100 * c + i).save(images / f"c{c}" / f"{i:03d}.png")
    cfg = prepare(apply_overrides(preset("tiny"), ["data.source=folder", f"data.root={images}",
                                                   "train.batch_size=8"]))
    root = use_store(monkeypatch, tmp_path / "store")
    estimate(train(cfg, root), ["fid"])
    return cfg, images


def test_the_app_refuses_a_run_whose_images_changed(tmp_path, monkeypatch):
    """Every page that reads the run's data says so in one message (issue 23 item 1), no traceback."""
    cfg, images = _own_tiny_run(tmp_path, monkeypatch)
    (images / "c1" / "000.png").unlink()
    for page in ("influence", "curate"):  # the pages that read the data (a job started elsewhere fails the same way)
        at = open_app(page, cfg.run_id)
        assert not at.exception, page
        errors = " ".join(e.value for e in at.error)
        assert "changed since this run was made: 1 file removed (c1/000.png)" in errors, (page, errors)


def test_the_app_takes_the_new_place_of_moved_images(tmp_path, monkeypatch):
    """A moved folder: the page says where the images were and asks where they are now; a place holding other
    files is refused, the right one is recorded and the page shows the run again."""
    cfg, images = _own_tiny_run(tmp_path, monkeypatch)
    monkeypatch.setenv(store.ENV_CACHE, str(tmp_path / "cache"))  # this test's own record of where images lie
    moved = tmp_path / "moved"
    images.rename(moved)
    at = open_app("train", cfg.run_id)  # the cached runs' list says which run lost its images
    assert any(w.value.startswith(f"{cfg.run_id}: its images are not at `{images}`") for w in at.warning)
    for page in ("influence", "cleanse", "validate", "samples"):  # every page of the run asks, before any job
        at = open_app(page, cfg.run_id)
        assert not at.exception and [e.value for e in at.error] == [
            f"the images of this run are not at {images} (moved or deleted?). If you moved them, point the run to "
            "their new place (the files must be unchanged): gan-influence relocate --images NEW_PATH"], page
        assert at.text_input(key="relocate-path").value == ""
    at = open_app("curate", cfg.run_id)
    assert not at.exception
    assert f"the images of this run are not at {images} (moved or deleted?)" in at.error[0].value
    other = tmp_path / "other"
    shutil.copytree(moved, other)
    (other / "c0" / "000.png").unlink()
    at.text_input(key="relocate-path").set_value(str(other))
    next(b for b in at.button if b.label == "Point the runs there").click().run()
    assert any("nothing recorded" in e.value for e in at.error)
    at.text_input(key="relocate-path").set_value(str(moved))
    next(b for b in at.button if b.label == "Point the runs there").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert f"The images in `{moved}` are the training images of 1 run of this store" in at.success[0].value
    # the gallery: a card's file name, its path on hover
    assert any(c.value == "016.png" and c.proto.help == "c1/016.png" for c in at.caption)
    assert store.read_json(tmp_path / "cache" / "image-locations.json") == {cfg.data.fingerprint: str(moved)}


def test_a_config_json_on_own_images_takes_their_place_here(tmp_path, monkeypatch, started_jobs):
    """Train a config.json again where its images lie elsewhere: the recorded place is offered, a place with
    nothing at it is one message, the images' new place gives the same run (the place is not in the id) and is
    kept as their place, so the run's pages read them there."""
    cfg, images = _own_tiny_run(tmp_path, monkeypatch)
    monkeypatch.setenv(store.ENV_CACHE, str(tmp_path / "cache"))  # this test's own record of where images lie
    here = tmp_path / "here"
    images.rename(here)
    at = open_app("train")
    at.radio(key="start_from").set_value("recorded").run()
    config = (tmp_path / "store" / cfg.run_id / "config.json").read_bytes()
    at.file_uploader(key="rec_config").set_value(("config.json", config, "application/json")).run()
    assert at.text_input(key="rec_root").value == str(images)
    next(b for b in at.button if b.label == "Train it again").click().run()
    assert any(f"Not started: there is nothing at `{images}`" in e.value for e in at.error)
    at.text_input(key="rec_root").set_value(str(here)).run()
    next(b for b in at.button if b.label == "Train it again").click().run()
    assert not at.exception and not started_jobs
    assert (f"This configuration is already trained: run `{cfg.run_id}` is now the current run. Its images are read "
            f"from `{here}` from now on.") in texts(at)
    assert store.read_json(tmp_path / "cache" / "image-locations.json") == {cfg.data.fingerprint: str(here)}
