"""Issue 15 in the app (AppTest): what a newcomer was misled by, could not read, or missed as a curator."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from apphelpers import CLEANSED, open_app, removal_on_disk, texts, tiny_run_id, write_job
from influence import store
from influence.estimator import cached_results, harmful_order

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _chart(at, key: str):
    return next(c for c in at.get("plotly_chart") if c.proto.id.endswith(key) or key in c.proto.id)


# ---------------------------------------------------------------- Influence page
def _array(value) -> np.ndarray:
    """A plotly JSON array: a list, or numpy's bytes as {"dtype", "bdata"}."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).astype(float)
    return np.asarray([np.nan if v is None else v for v in value], dtype=float)


def test_the_verdict_and_its_plot_tell_one_story(rich):
    run_id = tiny_run_id(rich)
    at = open_app("influence", run_id)
    assert not at.exception
    said = texts(at)
    assert "perturbations grow at most" not in said  # the old sentence, which its plot contradicted
    assert "Stability: reliable - growth factor" in said and "starting size" in said
    assert "accumulation, not instability" in said  # why u_D rises from 0
    fid = cached_results(store.open_run(rich, run_id))["fid"]
    spec = json.loads(_chart(at, f"u-{run_id}-fid").proto.spec)
    whole = next(t for t in spec["data"] if t["name"].startswith("|u| whole"))
    assert np.nanmax(_array(whole["y"])) == pytest.approx(fid.meta["growth"], rel=1e-6)
    assert "|u| ÷ |u| at the start" in spec["layout"]["yaxis"]["title"]["text"]


def test_scale_timings_and_numbers_are_explained(rich):
    at = open_app("influence", tiny_run_id(rich))
    said = texts(at)
    assert "**Scale.**" in said and "lie on the harmful side" in said and "the ranking and the tails" in said
    assert "other seeds" in said  # a single seed: how to get a sense of seed-to-seed spread
    assert "of computation for this metric" in said and "start-up and waiting are not counted" in said
    values = [m.value for m in at.metric if m.label in ("mean", "std", "most harmful value")]
    assert values and all("e" in v and "e-0" not in v for v in values)  # one format: -7.66e-5


def test_every_instances_scores_download_as_csv_and_parquet(rich):
    from explorer import cache

    run_id = tiny_run_id(rich)
    at = open_app("influence", run_id)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["CSV", "Parquet"]
    stamp = cache.files_stamp(rich, run_id, "influence")
    table = pd.read_csv(io.BytesIO(cache.scores_file.__wrapped__(str(rich), run_id, stamp, "csv")), comment="#")
    parquet = pd.read_parquet(io.BytesIO(cache.scores_file.__wrapped__(str(rich), run_id, stamp, "parquet")))
    fid = cached_results(store.open_run(rich, run_id))["fid"]
    assert len(table) == len(parquet) == 1000
    assert np.allclose(parquet["influence_fid"], fid.scores) and np.allclose(table["influence_fid"], fid.scores)
    assert {"label", "harmful_rank_is", "flag_dloss"} <= set(parquet.columns)


def test_one_instance_in_detail(rich):
    run_id = tiny_run_id(rich)
    run = store.open_run(rich, run_id)
    fid = cached_results(run)["fid"]
    most = int(harmful_order(fid)[0])
    at = open_app("influence", run_id)
    assert at.number_input(key=f"detail-{run_id}").value == most  # starts at the most harmful by FID
    table = next(d.value for d in at.dataframe if "harmful rank" in d.value.columns)
    row = table.set_index("metric").loc["FID"]
    assert row["harmful rank"] == "1 of 1000" and row["side"] == "harmful"
    said = texts(at)
    assert f"**#{most}** · class" in said and "Seen first in traced step" in said
    assert "Removed in cleansing attempts: replay" in said  # the rich store's attempt removed the top 20 by FID
    at.number_input(key=f"detail-{run_id}").set_value(int(harmful_order(fid)[-1])).run()
    row = next(d.value for d in at.dataframe if "harmful rank" in d.value.columns).set_index("metric").loc["FID"]
    assert row["harmful rank"] in ("1000 of 1000", "-")


def test_scatter_selection_goes_to_the_removal_set_and_the_gallery(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("influence", run_id)
    picked = [11, 3, 7]
    at.session_state[f"scatter-{run_id}"] = {"selection": {
        "points": [{"curve_number": 0, "point_index": k, "customdata": i} for k, i in enumerate(picked)],
        "point_indices": [0, 1, 2], "box": [], "lasso": []}}
    at.run()
    assert not at.exception
    assert "3 instances selected" in texts(at)
    at.button(key="scatter-to-set").click().run()
    assert removal_on_disk(app_store, run_id) == sorted(picked)
    at.button(key="scatter-to-gallery").click().run()
    assert not at.exception
    shown = sorted(int(c.key.split("-")[-2]) for c in at.checkbox if c.key.startswith("pick-"))
    assert shown == sorted(picked)  # the gallery shows just the selection
    said = texts(at)  # it says where the selection was made (it said "selected on the map")
    assert "Showing only the 3 images selected in the IS-vs-FID scatter of the Influence page" in said
    assert "selected on the map" not in said


# ---------------------------------------------------------------- sidebar, Inspect page
def test_sidebar_counts_read_naturally(app_store):
    run_id = tiny_run_id(app_store)
    store.Run(app_store, run_id).write_json("app/removal.json", {"ids": [4]})
    at = open_app("influence", run_id)
    captions = [c.value for c in at.sidebar.caption]
    assert "Removal set: 1 instance" in captions and "1 instances" not in " ".join(captions)


def test_a_new_box_filter_opens_on_the_first_page(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    page = next(n for n in at.number_input if n.key.startswith(f"page-{run_id}"))
    page.set_value(3).run()
    fid = cached_results(store.open_run(app_store, run_id))["is"]
    at.session_state[f"filter:{run_id}"] = {"metric": "is", "range": (float(fid.scores.min()), float(np.median(fid.scores)))}
    at.run()
    assert not at.exception
    assert next(n for n in at.number_input if n.key.startswith(f"page-{run_id}")).value == 1


def test_removal_set_changes_undo_redo_and_named_sets(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    assert at.button(key="set-undo").disabled and at.button(key="set-redo").disabled
    next(b for b in at.button if b.label == "Add page to set").click().run()
    page = removal_on_disk(app_store, run_id)
    assert len(page) == 25
    at.text_input(key=f"set-name-{run_id}").set_value("first page").run()
    at.button(key="set-save").click().run()
    assert "Saved as 'first page'" in texts(at)
    at.button(key="set-undo").click().run()
    assert removal_on_disk(app_store, run_id) == []
    at.button(key="set-redo").click().run()
    assert removal_on_disk(app_store, run_id) == page
    next(b for b in at.button if b.label == "Clear").click().run()
    assert removal_on_disk(app_store, run_id) == []
    at.button(key="set-load").click().run()  # the saved set comes back
    assert removal_on_disk(app_store, run_id) == page
    assert store.read_json(app_store / run_id / "app" / "removal_sets.json") == {"sets": {"first page": page}}
    at.text_input(key=f"set-name-{run_id}").set_value("  ").run()
    at.button(key="set-save").click().run()
    assert "Not saved: give the removal set a name" in texts(at)


# ---------------------------------------------------------------- Cleanse page
def test_cleanse_results_are_worded_for_what_they_measure(rich):
    at = open_app("cleanse", tiny_run_id(rich))
    assert not at.exception
    colors = {m.label: str(m.proto).split("color: ")[1].split()[0] for m in at.metric if "after cleansing" in m.label}
    assert colors["D-loss after cleansing"] == "GRAY" and colors["FID after cleansing"] != "GRAY"  # no good/bad
    dloss = next(m for m in at.metric if m.label == "D-loss after cleansing")
    assert "not a measure of the GAN's quality" in dloss.help
    said = texts(at)
    assert "expect the sign more than the size" not in said
    assert "A replay changes exactly the steps the estimate covers" in said
    table = at.dataframe[-1].value
    assert {"metric", "test before", "test after", "actual, test", "actual, validation", "predicted",
            "signs agree"} <= set(table.columns)
    assert table["actual, validation"].notna().all()  # the rich store's attempt measured the estimate's split
    assert len(table) == len(cached_results(store.open_run(rich, tiny_run_id(rich))))  # one row per metric
    heat = next(c for c in at.get("plotly_chart") if "diff-" in c.proto.id)  # same-z |after - before| heat map
    assert "Where the samples changed" in said
    # Its colours end at the largest difference: on a 0..1 scale a replay's few thousandths were one flat colour.
    trace = json.loads(heat.proto.spec)["data"][0]
    z = trace["z"]  # plotly's typed-array encoding, or plain lists
    z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]) if isinstance(z, dict) else np.asarray(z)
    assert trace["zmin"] == 0 and trace["zmax"] == pytest.approx(float(z.max()))
    assert trace["zmax"] < 0.5


def test_the_scratch_attempt_just_computed_is_shown_and_its_prediction_qualified(app_store):
    from influence.cleanse import cleanse

    run_id = tiny_run_id(app_store)
    run = store.open_run(app_store, run_id)
    removal = sorted(harmful_order(cached_results(run)["fid"])[:CLEANSED].tolist())
    run.write_json("app/removal.json", {"ids": removal})
    replay = cleanse(run, removal).key
    at = open_app("cleanse", run_id)
    assert at.selectbox(key=f"attempt-{run_id}").value == replay
    at.toggle(key="scratch").set_value(True).run()
    assert at.selectbox(key=f"attempt-{run_id}").value == replay  # no scratch attempt yet
    scratch = cleanse(run, removal, mode="scratch").key  # what the background job writes
    at.run()
    assert at.selectbox(key=f"attempt-{run_id}").value == scratch
    said = texts(at)
    assert "its result is shown below" in said
    assert "From scratch vs the prediction" in said and "covers only the traced steps" in said
    compare = next(d.value for d in at.dataframe if replay in d.value.columns)
    assert scratch in compare.columns  # both attempts side by side
    signs = [c.value for c in at.caption if "signs disagree" in c.value]
    changes = run.read_json(f"cleanse/{scratch}/result.json")
    expected = [m for m in changes["change"] if changes["change"][m] * changes["predicted_change"].get(m, 0) < 0]
    assert len(signs) == len(expected)


# ---------------------------------------------------------------- jobs
def test_job_timings_say_what_they_cover(app_store):
    from influence.estimator import EstimateOptions
    import dataclasses

    run_id = tiny_run_id(app_store)
    spec = {"kind": "estimate", "params": {"run_id": run_id, "metrics": ["fid"],
                                           "options": dataclasses.asdict(EstimateOptions(last_steps=2))}}
    write_job(app_store, spec, state="done", queued_at=1000.0, started=1002.0, updated=1100.0, done=2, total=2,
              stages={"loading": 1.0, "feature-net": 3.0, "influence": 40.0})
    said = texts(open_app("influence", run_id))
    assert ("Finished in 1 min 40 s from start to end: waiting for a worker 2 s, start-up 40 s (worker, data set, "
            "feature network), influence 58 s.") in said


def test_a_runs_first_pass_is_timed_from_a_pass_of_the_same_nets(app_store):
    """Before a run's first pass the page says roughly how long it takes, from the stored passes of another run of
    the same nets, batch and precision (seed 0's FID, IS and D-loss here, for seed 1), per metric and traced step;
    nothing where the store has no such run."""
    from influence.train import train
    from _helpers import tiny_config

    seed0 = tiny_run_id(app_store)
    run = store.open_run(app_store, seed0)
    metas = [store.read_json(p) for p in (run.path("influence")).glob("*/meta.json")]
    per_step = max(m["seconds"] / m["traced_steps"] for m in metas)
    other = train(tiny_config(seed=1), app_store)
    traced = store.read_json(other.path("summary.json"))["traced_steps"]
    said = texts(open_app("influence", other.run_id))
    assert "No estimates for this run yet" in said
    forecast = re.search(r"Takes roughly (\d+) s here for 3 metrics over (\d+) traced steps \(from the passes of 1 "
                         r"other run of these nets, batch and precision in this store\)", said)
    assert forecast and int(forecast[2]) == traced
    assert abs(int(forecast[1]) - 3 * per_step * traced) <= 5  # "roughly": whole seconds in steps of 5 under 90 s
    next(run.path("influence").glob("dloss-*/meta.json")).write_text("{")  # a damaged result is skipped
    at = open_app("influence", other.run_id)
    assert not at.exception and "Takes roughly" in texts(at)
    shutil.rmtree(run.path("influence"))  # without seed 0's pass nothing is said
    assert "Takes roughly" not in texts(open_app("influence", other.run_id))


def test_start_up_shows_what_it_is_doing(app_store):
    from influence import jobs
    from influence.estimator import EstimateOptions
    import dataclasses

    run_id = tiny_run_id(app_store)
    spec = {"kind": "estimate", "params": {"run_id": run_id, "metrics": ["fid"],
                                           "options": dataclasses.asdict(EstimateOptions(last_steps=3))}}
    key = write_job(app_store, spec, state="running", stage="feature-net", done=7, total=50, seconds=14.0,
                    started=time.time() - 20)
    lock = jobs.JobLock(jobs.job_dir(app_store, key) / "lock")
    assert lock.acquire()
    try:
        at = open_app("influence", run_id)
        [bar] = [p for p in at.get("progress") if "feature network" in p.proto.text]
        assert "Start-up: training the IS/FID feature network (once per data set): epoch 7 of 50" in bar.proto.text
        # an autoencoder (images without labels) trains by steps, and its start-up says so
        write_job(app_store, spec, state="running", stage="feature-net", done=160, total=800, seconds=14.0,
                  started=time.time() - 20, info={"unit": "step"})
        [bar] = [p for p in open_app("influence", run_id).get("progress") if "feature network" in p.proto.text]
        assert "(once per data set): step 160 of 800" in bar.proto.text
    finally:
        lock.release()


def test_a_worker_reports_its_start_up_stages(app_store):
    """The engine side: loading and the feature net come first, as stages of their own, through run_job."""
    from influence import jobs
    from influence.estimator import EstimateOptions
    import dataclasses

    run_id = tiny_run_id(app_store)
    seen = []
    spec = {"kind": "estimate", "params": {"run_id": run_id, "metrics": ["fid"],
                                           "options": dataclasses.asdict(EstimateOptions(last_steps=2))}}
    jobs.run_job(app_store, spec, progress=lambda p: seen.append(p.stage))
    assert seen[0] == "loading" and seen[1] == "feature-net" and seen[-1] == "influence"
    status = jobs.read_status(app_store, jobs.job_key(spec))
    assert sorted(status["stages"], key=status["stages"].get) == ["loading", "feature-net", "influence"]


# ---------------------------------------------------------------- Train page
def test_lr_schedule_is_edited_as_a_table_and_optimizer_options_are_offered(app_store, started_jobs):
    at = open_app("train")
    at.selectbox(key="preset-mnist").set_value("tiny").run()
    editor = next(d for d in at.data_editor if d.key == "f-mnist-tiny-schedule")
    assert editor.value.to_dict("records") == [{"from epoch": 2, "lr_D": 0.001, "lr_G": 0.001}]
    at.selectbox(key="f-mnist-tiny-train.optimizer").set_value("adam")
    at.text_input(key="f-mnist-tiny-train.betas").set_value("0.5,0.999")
    at.session_state[editor.key] = {"edited_rows": {0: {"lr_D": 0.0005}},
                                    "added_rows": [{"from epoch": 1, "lr_D": 0.002, "lr_G": 0.002}], "deleted_rows": []}
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception and not at.error
    train = started_jobs[0]["params"]["config"]["train"]
    assert train["lr_schedule"] == [[1, 0.002, 0.002], [2, 0.0005, 0.001]]
    assert train["optimizer"] == "adam" and train["betas"] == [0.5, 0.999]


def test_a_half_filled_schedule_row_is_refused(app_store, started_jobs):
    at = open_app("train")
    at.selectbox(key="preset-mnist").set_value("tiny").run()
    editor = next(d for d in at.data_editor if d.key == "f-mnist-tiny-schedule")
    at.session_state[editor.key] = {"edited_rows": {}, "added_rows": [{"from epoch": 1}], "deleted_rows": []}
    next(b for b in at.button if b.label == "Start training").click().run()
    assert "lr_schedule row 2: fill in" in " ".join(e.value for e in at.error) and started_jobs == []


def test_jaccard_at_small_n_says_how_few_instances_it_compares(rich):
    at = open_app("validate", tiny_run_id(rich))  # the rich store's validation has n = 5
    said = texts(at)
    assert "the 1 most negative and 1 most positive of 5 instances" in said
    assert "one instance more or less swings it" in said
    # the growth verdict is named for what it is, not as the estimate's verdict (the trust card's is another)
    assert "Stability of the estimate over these steps: reliable, growth" in said and "Estimate verdict" not in said


def test_cleanse_captions_write_predicted_and_actual_changes_alike(rich):
    """The captions mixed '-9.22e-3' (predicted) with '-0.00814' (actual)."""
    import re

    at = open_app("cleanse", tiny_run_id(rich))
    assert not at.exception
    captions = [c.value for c in at.caption if c.value.startswith("predicted change:")]
    number = r"[+-]?\d\.\d\de[+-]\d+"
    assert captions and all(re.fullmatch(rf"predicted change: {number} · actual: {number} \(validation\) · "
                                         rf"{number} \(test\)", c) for c in captions)
