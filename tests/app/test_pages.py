"""Every page renders against the tiny cached run and against an empty store, without exceptions."""

from __future__ import annotations

import pytest

from apphelpers import CLEANSED, PAGES, open_app, texts, tiny_run_id
from explorer import tables

from influence import store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_train_page_shows_the_form_the_runs_and_the_current_run(rich):
    at = open_app("train", tiny_run_id(rich))
    assert not at.exception
    assert at.title[0].value == "Train or load a GAN"
    assert at.radio(key="data_key").value == "mnist"  # the embedded MNIST is preselected
    assert at.selectbox(key="preset-mnist").value == "mnist-adam"  # config.DEFAULT_PRESET
    assert [b.label for b in at.button if b.label == "Start training"]
    assert at.text_input(key="f-mnist-mnist-adam-train.epochs").value == "10"
    assert "training epochs" in at.text_input(key="f-mnist-mnist-adam-train.epochs").help  # describe_fields help
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)  # (the form's lr table comes first)
    assert tiny_run_id(rich) in set(table["run"]) and {"test IS", "test FID", "date"} <= set(table.columns)
    assert at.slider(key=f"epoch-{tiny_run_id(rich)}").value == 2  # one grid per epoch, last shown
    assert [img.captions for img in at.image] == [["epoch 2"]]  # that epoch's sample grid


def test_influence_page_shows_histograms_verdicts_and_plots(rich):
    at = open_app("influence", tiny_run_id(rich))
    assert not at.exception
    said = texts(at)
    for label in ("IS", "FID", "D-loss"):
        assert label in [s.value for s in at.subheader]
    assert "negative = harmful (removal improves FID)" in said  # the sign convention, in one sentence
    assert "Stability: reliable" in said and "Trust: not checked" in said
    assert "Here the pass in use (" in said  # what the last pass cost, beside the form for another
    assert {m.label for m in at.metric} == {"mean", "std", "harmful (of 1000)", "most harmful value"}
    charts = at.get("plotly_chart")
    assert len(charts) == 3 * 2 + 2  # histogram and |u| per metric, IS-vs-FID scatter, per-class box
    assert any("predicted change of FID if removed; negative = harmful" in c.proto.spec for c in charts)


def test_curate_page_shows_a_gallery_with_scores_and_checkboxes(rich):
    at = open_app("curate", tiny_run_id(rich))
    assert not at.exception
    boxes = [c for c in at.checkbox if c.key.startswith("pick-")]
    assert len(boxes) == len(at.image) == 25  # one thumbnail and one checkbox per card
    assert sum(c.value for c in boxes) >= 1  # the stored removal set holds the most harmful by FID
    assert at.metric[0].value == str(CLEANSED)
    assert "FID" in texts(at)
    assert {b.label for b in at.button} >= {"Fill", "Clear", "Add page to set", "Take page out"}
    assert len(at.get("download_button")) == 1


def test_cleanse_page_shows_before_after_and_attempts(rich):
    at = open_app("cleanse", tiny_run_id(rich))
    assert not at.exception
    said = texts(at)
    assert f"**Removal set:** {CLEANSED} of 1000" in said
    assert "This set was already cleansed" in said
    labels = [m.label for m in at.metric]
    assert {"IS after cleansing", "FID after cleansing"} <= set(labels)
    assert "predicted change:" in said and "validation split" in said
    assert [img.captions[0] for img in at.image][:2] == ["original run (last epoch)",
                                                          f"after removing {CLEANSED} instances (replay)"]
    table = at.dataframe[-1].value  # one row per metric of the one attempt
    assert len(table) == len(set(table["metric"])) and (table["removed"] == CLEANSED).all()
    at.toggle(key="scratch").set_value(True).run()  # not cleansed from scratch yet: how long it would take
    seconds = store.read_json(rich / tiny_run_id(rich) / "summary.json")["seconds"]
    assert (f"Takes roughly {tables.duration(seconds, rough=True)} here (all 2 epochs again; from this run's "
            "measured speed). It runs in the background.") in texts(at)


def test_validate_page_shows_scatter_and_numbers(rich):
    at = open_app("validate", tiny_run_id(rich))
    assert not at.exception
    assert [m.label for m in at.metric] == ["Kendall τ", "Pearson r", "Jaccard, top 10%"]
    assert "its 95% interval is" in texts(at)  # Kendall tau over a few replays is rough, and the page says how rough
    assert "Takes roughly" in texts(at)
    assert at.number_input(key="val-n").value == 50
    spec = at.get("plotly_chart")[0].proto.spec
    assert "leave-one-out" in spec and "estimated" in spec


def test_validate_page_shows_a_sweep_with_its_t_tests_even_unfinished(app_store):
    import numpy as np
    import pandas as pd
    from scipy import stats

    from influence import store

    base = app_store / "_sweeps" / "0123456789ab"
    store.write_json(base / "spec.json", {"run_ids": ["q-s0", "q-s1", "q-s2"], "seeds": [0, 1, 2], "presets": ["quick"],
                                          "methods": ["fid", "random"], "counts": [10, 20], "metric": "fid"})
    changes = {"fid": [-0.4, -0.6, -0.1], "random": [0.2, -0.1, 0.4]}
    rows = [{"seed": s, "run_id": f"q-s{s}", "method": m, "count": 10, "before": 2.0, "after": 2.0 + c, "change": c}
            for m, cs in changes.items() for s, c in enumerate(cs)]
    store.write_bytes(base / "per_run.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    at = open_app("validate", tiny_run_id(app_store))
    assert not at.exception
    assert at.selectbox(key="val-sweep").format_func("0123456789ab") == "quick, seeds 0, 1, 2, FID (6/12 cleanses)"
    assert any("Unfinished: 6 of 12 cleanses" in w.value for w in at.warning)
    table = at.dataframe[-1].value.set_index("selection")
    for method, label in (("fid", "influence on FID"), ("random", "random")):
        row = table.loc[label]
        assert row["removed"] == 10 and row["seeds"] == 3
        assert row["mean change of test FID"] == pytest.approx(np.mean(changes[method]))
        assert row["p-value (t-test, change = 0)"] == pytest.approx(stats.ttest_1samp(changes[method], 0).pvalue)
    assert table.loc["influence on FID", "improved in (seeds)"] == 3
    spec = at.get("plotly_chart")[-1].proto.spec
    assert "training instances removed" in spec and "lower = better" in spec
    at.multiselect(key="sweep-seeds-0123456789ab").set_value([0, 1]).run()  # leave seed 2 out
    table = at.dataframe[-1].value.set_index("selection")
    assert table.loc["influence on FID", "mean change of test FID"] == pytest.approx(-0.5)
    assert table.loc["random", "seeds"] == 2


def test_playground_asks_for_a_2d_run_when_the_current_one_is_not(rich):
    at = open_app("playground", tiny_run_id(rich))
    assert not at.exception
    assert "No 2D run yet" in texts(at)
    assert any(b.label == "Train in the background" for b in at.button)


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_on_an_empty_store_says_what_to_do_first(empty_store, page):
    at = open_app(page)
    assert not at.exception
    assert not at.error
    guidance = " ".join(i.value for i in at.info)
    assert "train" in guidance.lower() or "No 2D run yet" in guidance
