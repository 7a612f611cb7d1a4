"""Curation actions: select/deselect, quick fills, import/export of the removal set, persistence."""

from __future__ import annotations

import json

import pytest

from apphelpers import open_app, removal_on_disk, texts, tiny_run_id
from influence import store
from influence.estimator import cached_results, harmful_order

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _most_harmful(root, metric: str, k: int) -> list[int]:
    run = store.open_run(root, tiny_run_id(root))
    return sorted(int(i) for i in harmful_order(cached_results(run)[metric])[:k])


def _picks(at) -> dict[int, bool]:
    return {int(c.key.split("-")[-2]): c.value for c in at.checkbox if c.key.startswith("pick-")}


def test_ticking_and_unticking_a_gallery_image_changes_the_saved_set(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    first = next(iter(_picks(at)))  # the most harmful by the default sort metric (IS)
    next(c for c in at.checkbox if c.key.startswith(f"pick-{run_id}-{first}-")).check().run()
    assert not at.exception
    assert removal_on_disk(app_store, run_id) == [first]
    assert _picks(at)[first] is True and at.metric[0].value == "1"

    next(c for c in at.checkbox if c.key.startswith(f"pick-{run_id}-{first}-")).uncheck().run()
    assert removal_on_disk(app_store, run_id) == []
    assert _picks(at)[first] is False


def test_table_view_edits_select_and_deselect(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    at.segmented_control(key="view").set_value("Table").run()
    editor = at.data_editor[0]
    assert {"remove", "image", "id", "IS", "FID", "D-loss"} <= set(editor.value.columns)
    columns = json.loads(editor.proto.columns)  # the gallery's -2.53e-4, not -0.000253
    assert all(columns[m]["type_config"]["format"] == "%.2e" for m in ("IS", "FID", "D-loss"))
    assert editor.value["image"].iloc[0].startswith("data:image/png;base64,")
    ids = editor.value["id"].tolist()
    at.session_state[editor.key] = {"edited_rows": {0: {"remove": True}, 2: {"remove": True}},
                                    "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception
    assert removal_on_disk(app_store, run_id) == sorted([ids[0], ids[2]])

    editor = at.data_editor[0]  # a fresh editor (its key follows the set), showing the new state
    assert editor.value["remove"].tolist()[:3] == [True, False, True]
    at.session_state[editor.key] = {"edited_rows": {0: {"remove": False}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert removal_on_disk(app_store, run_id) == [ids[2]]


def test_map_view_selection_goes_to_the_gallery_and_the_removal_set(app_store):
    from influence import datamap

    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    at.segmented_control(key="view").set_value("Map").run()
    assert not at.exception
    run = store.open_run(app_store, run_id)
    assert run.exists("map/pca.npy") and run.exists("map/features.npy")  # cached in the run
    chosen = int(at.number_input(key=f"similar-{run_id}").value)
    ids, _ = datamap.nearest(run.read_npy("map/features.npy"), chosen, 8)
    shown = [int(m.value.split("**#")[1].split("**")[0]) for m in at.markdown if m.value.startswith("**#")]
    assert shown == [chosen, *ids.tolist()]  # the instance, then its 8 nearest neighbours
    # a lasso over three points: the app receives their indices (= training ids)
    picked = [5, 17, 40]
    chart = f"map-{run_id}-pca-{at.selectbox(key=f'sort-{run_id}').value}"

    def lasso():
        at.session_state[chart] = {
            "selection": {"points": [{"point_index": i, "curve_number": 0} for i in picked], "box": [], "lasso": []}}
        at.run()

    lasso()
    next(b for b in at.button if b.label.startswith("Add the 3 selected")).click().run()
    assert removal_on_disk(app_store, run_id) == picked
    lasso()  # the map redraws with the removal set marked, which clears a selection: pick again
    next(b for b in at.button if b.label.startswith("Show the 3 selected")).click().run()
    assert not at.exception and sorted(_picks(at)) == picked  # the gallery shows just those


def test_similar_images_say_what_d_is_and_go_to_the_removal_set(app_store):
    from influence import datamap

    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    at.segmented_control(key="view").set_value("Map").run()
    assert not at.exception
    chosen = int(at.number_input(key=f"similar-{run_id}").value)
    ids, dist = datamap.nearest(store.open_run(app_store, run_id).read_npy("map/features.npy"), chosen, 8)
    said = texts(at)
    assert f"**#{ids[0]}** · d = {dist[0]:.2g}" in [m.value for m in at.markdown]
    assert "d = the neighbour's distance to the chosen image in that feature space" in said
    at.checkbox(key=f"similar-pick-{run_id}-{ids[1]}-0").check().run()
    assert removal_on_disk(app_store, run_id) == [int(ids[1])]
    next(b for b in at.button if b.label == "Add the 8 neighbours to the removal set").click().run()
    assert removal_on_disk(app_store, run_id) == sorted(ids.tolist())


def test_an_import_error_stays_with_its_run(two_runs):
    """A malformed CSV imported on one run ("ids 0..9999") stayed on screen after switching runs."""
    tiny = tiny_run_id(two_runs)
    toy = next(r["run_id"] for r in store.list_runs(two_runs) if r["run_id"].startswith("toytest-"))
    at = open_app("curate", tiny)
    at.file_uploader(key=f"import-{tiny}").set_value(("bad.csv", b"id\n999999\n", "text/csv")).run()
    assert "outside the training set" in " ".join(e.value for e in at.error)
    at.sidebar.selectbox(key="run_picker").set_value(toy).run()
    assert not at.exception
    assert not [e for e in at.error if "Not imported" in e.value]


@pytest.mark.parametrize("method", ["fid", "iforest", "random"])
def test_quick_fill_replaces_the_set_with_k_instances(app_store, method):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    at.selectbox(key="qf-method").set_value(method)
    at.number_input(key="qf-k").set_value(30)
    next(b for b in at.button if b.label == "Fill").click().run()
    assert not at.exception
    saved = removal_on_disk(app_store, run_id)
    assert len(saved) == 30
    if method == "fid":
        assert saved == _most_harmful(app_store, "fid", 30)


def test_page_buttons_add_and_remove_the_shown_page(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    shown = sorted(_picks(at))
    next(b for b in at.button if b.label == "Add page to set").click().run()
    assert removal_on_disk(app_store, run_id) == shown
    next(b for b in at.button if b.label == "Take page out").click().run()
    assert removal_on_disk(app_store, run_id) == []


def test_class_filter_shows_only_that_class(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    at.multiselect(key=f"classes-{run_id}").set_value([3]).run()
    labels = [m.value for m in at.markdown if m.value.startswith("**#")]
    assert labels and all(v.endswith("· 3") for v in labels)


def test_import_csv_replaces_the_set_and_export_offers_it(app_store):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    at.file_uploader(key=f"import-{run_id}").set_value(("ids.csv", b"id,label\n5,3\n7,1\n11,0\n", "text/csv")).run()
    assert not at.exception
    assert removal_on_disk(app_store, run_id) == [5, 7, 11]
    assert "Imported 3 ids" in texts(at)
    assert at.metric[0].value == "3"
    assert len(at.get("download_button")) == 1


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"name,score\n1,2\n", "needs an 'id' or a 'path' column"),
    (b"id\n3\nabc\n", "'abc' is not an integer id"),
    (b"id\n", "no ids"),
    (b"id\n999999\n", "outside the training set"),
    (b"id\n4\n4\n", "more than once"),
    (b"\xff\xfe\x00bad", "not UTF-8"),
])
def test_a_malformed_csv_leaves_the_set_unchanged_with_a_clear_message(app_store, content, reason):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    next(c for c in at.checkbox if c.key.startswith("pick-")).check().run()
    before = removal_on_disk(app_store, run_id)
    assert len(before) == 1
    at.file_uploader(key=f"import-{run_id}").set_value(("bad.csv", content, "text/csv")).run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert reason in errors and "unchanged" in errors
    assert removal_on_disk(app_store, run_id) == before
    assert at.metric[0].value == "1"


def test_export_csv_reads_back_through_the_cli_reader():
    import numpy as np
    import torch

    from influence.cli import read_removal_csv
    from influence.data import Dataset, Split
    from influence.removal import removal_csv

    # each row says where the instance is found outside this tool (MNIST: its place in MNIST's training set; the
    # 2D toy: the point); read back by id all the same
    split = Split(torch.zeros(20, 1, 28, 28), torch.arange(20) % 10)
    mnist = Dataset("mnist", split, split, split, np.arange(100, 120), None, [])
    lines = removal_csv([3, 9, 14], mnist).decode().splitlines()
    assert lines[:2] == ["id,source_index,label", "3,103,3"]
    assert read_removal_csv("\n".join(lines), 20) == [3, 9, 14]
    points = Split(torch.arange(40, dtype=torch.float32).view(20, 2) / 4, None)
    toy = Dataset("normal2d", points, points, points, np.arange(20), None, [])
    lines = removal_csv([3, 9, 14], toy).decode().splitlines()
    assert lines[:2] == ["id,x1,x2,label", "3,1.5,1.75,-1"]
    assert read_removal_csv("\n".join(lines), 20) == [3, 9, 14]
