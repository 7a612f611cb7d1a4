"""The Generated samples page (Streamlit AppTest, no browser): the pool grid sorted as asked, the job spec that
Explain and Check send (the CLI's), the responsible images added to the removal set as the engine ranks them,
the near-copy table, own images' cards with class and file, and the 2D run sent to the playground."""

from __future__ import annotations

import re
from unittest import mock

import numpy as np
from apphelpers import open_app, removal_on_disk, shown_as, texts, tiny_run_id, use_store
from PIL import Image

from influence import classifier, jobs, store
from influence.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from influence.data import prepare
from influence.estimator import EstimateOptions, estimate
from influence.samples import find
from influence.samples.pool import sample_pool
from influence.specs import explain_spec
from influence.train import train


def test_the_grid_is_sorted_and_explain_sends_the_clis_job(app_store, started_jobs):
    run_id = tiny_run_id(app_store)
    at = open_app("samples", run_id, timeout=300)
    assert not at.exception
    pool = sample_pool(store.open_run(app_store, run_id))
    lowest = pool.table.sort_values("clarity", kind="stable")["sample"].to_numpy()[:30]
    shown = [int(c.value.split("**")[1]) for c in at.caption if c.value.startswith("**")]
    assert shown == lowest.tolist()  # the grid opens with the least clear samples first
    at.checkbox[0].check().run()
    at.checkbox[1].check().run()
    picked = sorted(lowest[:2].tolist())
    assert at.session_state[f"samples-picked:{run_id}"] == picked
    assert "press Explain" in texts(at)
    assert re.search(r"Takes roughly \d+ (s|min) here for 2 samples \(a pass each on this CPU, from this run's "
                     r"passes\)", texts(at))  # before pressing Explain
    next(b for b in at.button if b.label == "Explain").click().run()
    assert started_jobs[-1] == explain_spec(run_id, {"pool": picked}, "clarity", EstimateOptions())


def test_explain_shows_the_engines_ranking_and_adds_it_to_the_removal_set(app_store, started_jobs):
    run_id = tiny_run_id(app_store)
    run = store.open_run(app_store, run_id)
    picked = [3, 40]
    spec = explain_spec(run_id, {"pool": picked}, "realism", EstimateOptions(last_steps=3))
    jobs.run_job(app_store, spec)
    pool = sample_pool(run)
    explanation = find(run, "realism", pool.z[picked])
    at = open_app(None, run_id, timeout=300)
    at.session_state[f"samples-picked:{run_id}"] = picked
    at.switch_page("views/samples_page.py").run()
    at.segmented_control[0].set_value("realism").run()
    assert not at.exception
    page = texts(at)
    assert "realism of 2 samples" in page and "Responsible" in page
    harmful = [int(j) for j in explanation.responsible(0, 12) if explanation.strength(0)[j] > 0]
    assert len(harmful) >= 2  # only images whose removal would raise the realism are shown as responsible
    ranked = [float(c.value) for c in at.caption if re.fullmatch(r"[+-]\d\.\d\de-\d+", c.value)]
    assert np.allclose(ranked[:len(harmful)], explanation.matrix[0, harmful], rtol=5e-3)
    next(b for b in at.button if b.label == f"Add these {len(harmful)} to the removal set").click().run()
    assert set(removal_on_disk(app_store, run_id)) == set(harmful)
    table = at.dataframe[0].value
    assert table["nearest_id"].tolist() == explanation.nearcopy["nearest_id"].tolist()
    next(b for b in at.button if b.label == "Check by replay").click().run()
    assert started_jobs[-1]["params"]["check"] == {"samples": [0, 1], "k": 10, "seed": 0}


def test_a_2d_run_is_sent_to_the_playground(two_runs):
    toy_id = next(r["run_id"] for r in store.list_runs(two_runs) if r["run_id"].startswith("toytest"))
    at = open_app("samples", toy_id, timeout=120)
    assert not at.exception and "2D playground" in texts(at)


def test_own_images_responsible_cards_name_their_class_and_their_file(tmp_path, monkeypatch):
    """The responsible images' cards of a run on own images in class folders: each card's heading names the class
    folder and its caption the file (the gallery's file names once took the class names' place)."""
    images, rng = tmp_path / "images", np.random.default_rng(0)
    for i in range(90):
        path = images / ("circles", "squares")[i % 2] / f"photo_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img = np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        img[8:24, 8:24] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(path)
    cfg = prepare(RunConfig(
        preset="cardstest", data=DataConfig(source="folder", root=str(images), image_size=32, color="rgb",
                                            n_valid=20, n_test=20),
        model=ModelConfig(arch="dcgan", width=4, z_dim=8), train=TrainConfig(epochs=1, batch_size=30),
        eval=EvalConfig(n_valid_z=30, n_test_z=30, n_grid=16, feature="autoencoder")))
    root = use_store(monkeypatch, tmp_path / "store")
    with mock.patch.object(classifier, "AE_STEPS", 10):
        run = train(cfg, root)
        estimate(run, ["dloss"])
        jobs.run_job(root, explain_spec(run.run_id, {"pool": [1]}, "realism", EstimateOptions()))
    at = open_app(None, run.run_id, timeout=300)
    at.session_state[f"samples-picked:{run.run_id}"] = [1]
    at.switch_page("views/samples_page.py").run()
    at.segmented_control[0].set_value("realism").run()
    assert not at.exception and "Responsible" in texts(at)
    headings = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert headings and all(h.endswith((" · circles", " · squares")) for h in headings), headings
    files = [c for c in at.caption if c.proto.help]  # a file's caption carries its path on hover
    assert len(files) == len(headings)
    assert all(shown_as(c.value, [c.proto.help]) for c in files), [c.value for c in files]
