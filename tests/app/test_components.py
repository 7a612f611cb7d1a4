"""The app's helpers without Streamlit: chart selections, the config form, gallery order, labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from apphelpers import APP  # noqa: F401  (puts the app's `explorer` package on the path)
from explorer import cards, curation, figures, finetuneform, tables, trainform
from influence.config import preset
from influence.errors import ConfigError
from influence.estimator import FLAG_NEVER_TRACED, FLAG_RELIABLE, InfluenceResult


def _result(metric: str, scores, flags=None) -> InfluenceResult:
    scores = np.asarray(scores, dtype=float)
    flags = np.full(len(scores), FLAG_RELIABLE, dtype=np.int8) if flags is None else np.asarray(flags, dtype=np.int8)
    sign = -1 if metric in ("fid", "dloss") else 1
    return InfluenceResult(metric, scores, flags, np.ones((3, 2)), {"harmful_sign": sign})


def test_a_box_selection_gives_its_x_range():
    event = {"selection": {"points": [{"x": 0.1}], "point_indices": [0],
                           "box": [{"type": "box", "xref": "x", "yref": "y", "x": [0.5, -0.25], "y": [0, 9]}],
                           "lasso": []}}
    assert figures.selected_x_range(event) == (-0.25, 0.5)
    assert figures.selected_x_range({"selection": {"points": [], "box": [], "lasso": []}}) is None
    assert figures.selected_x_range(None) is None


def test_selected_points_are_taken_from_the_training_trace_only():
    event = {"selection": {"points": [
        {"curve_number": 0, "point_index": 7}, {"curve_number": 1, "point_index": 2},
        {"curve_number": 0, "point_index": 3}, {"curve_number": 0, "point_index": 7}]}}
    assert figures.selected_point_indices(event) == [3, 7]
    assert figures.selected_point_indices(event, curve=1) == [2]


@pytest.mark.parametrize("metric, side", [("fid", "negative"), ("is", "positive"), ("all", "positive"),
                                          ("dloss", "negative")])
def test_every_influence_axis_names_the_harmful_side(metric, side):
    assert figures.axis_label(metric).endswith(f"if removed; {side} = harmful")
    fig = figures.influence_histogram(np.array([-2.0, -1.0, 0.5, 3.0]), metric)
    assert fig.layout.xaxis.title.text == figures.axis_label(metric, lines=2)
    assert figures.axis_label(metric, lines=2).endswith(f"if removed<br>{side} = harmful")
    assert figures.axis_label(metric, lines=3).endswith(f"<br>if removed<br>{side} = harmful")
    other = "positive" if side == "negative" else "negative"
    assert {t.name for t in fig.data} == {f"{side} (harmful)", f"{other} (helpful)"}


def test_gallery_order_harmful_or_helpful_first_untraced_last():
    fid = _result("fid", [0.3, -0.2, -0.9, 0.0, 0.1], [1, 1, 1, FLAG_NEVER_TRACED, 1])
    results = {"fid": fid}
    assert curation.ordered_ids(results, "fid", helpful_first=False).tolist() == [2, 1, 4, 0, 3]
    assert curation.ordered_ids(results, "fid", helpful_first=True).tolist() == [0, 4, 1, 2, 3]
    labels = np.array([1, 0, 1, 0, 1])
    assert curation.ordered_ids(results, "fid", False, labels, [1]).tolist() == [2, 4, 0]
    in_range = {"metric": "fid", "range": (-0.5, 0.2)}
    assert curation.ordered_ids(results, "fid", False, score_filter=in_range).tolist() == [1, 4]


def test_summary_counts_harmful_on_the_right_side():
    numbers = tables.influence_summary(_result("fid", [0.3, -0.2, -0.9, 0.1]))
    assert numbers["harmful"] == 2 and numbers["most_harmful"] == -0.9 and numbers["n"] == 4
    assert tables.influence_summary(_result("is", [0.3, -0.2, -0.9, 0.1]))["most_harmful"] == 0.3


def test_the_form_applies_only_changed_fields_and_reports_engine_reasons():
    base = preset("tiny")
    values = {key: text for key, text, _, _ in trainform.fields(base)}
    assert values["train.lr_schedule"] == "2:0.001:0.001" and values["data.n_train"] == "1000"
    assert "data.source" not in values and "preset" not in values  # chosen above the form
    assert trainform.apply_edits(base, values) == base
    changed = trainform.apply_edits(base, {**values, "train.epochs": "3", "data.n_train": ""})
    assert changed.train.epochs == 3 and changed.data.n_train is None
    with pytest.raises(ConfigError, match="lr_schedule epochs must lie in 1..epochs"):
        trainform.apply_edits(base, {**values, "train.epochs": "1"})


def test_data_set_choices_map_to_data_configs(tmp_path):
    assert trainform.base_config("quick", "mnist", None).data.source == "mnist"
    tv = trainform.base_config("quick", "fashion-mnist", " /data/tv ")
    assert (tv.data.source, tv.data.root, tv.data.n_train) == ("fashion-mnist", "/data/tv", 10_000)
    own = trainform.base_config("quick", "folder", str(tmp_path))
    assert (own.data.source, own.data.n_train) == ("folder", None)
    assert trainform.base_config("toy2d", "normal2d", None).is_2d
    assert trainform.presets_for("normal2d") == ["toy2d", "toy2d-smooth", "toy2d-adam"]
    assert not {"toy2d", "toy2d-smooth", "toy2d-adam"} & set(trainform.presets_for("mnist"))
    with pytest.raises(ConfigError, match="enter the folder path"):
        trainform.base_config("quick", "torchvision-mnist", "")


def test_an_oversized_upload_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(trainform, "MAX_UPLOAD_MB", 0)
    with pytest.raises(ConfigError, match="larger than 0 MB"):
        trainform.save_upload(tmp_path, "big.zip", b"PK\x05\x06" + bytes(18))


def test_durations_read_naturally():
    assert [tables.duration(s) for s in (4.4, 75, 3725, None)] == ["4 s", "1 min 15 s", "1 h 02 min", "?"]
    # a forecast does not claim seconds it cannot know
    assert [tables.duration(s, rough=True) for s in (1.2, 43, 1676, 3725, None)] == [
        "5 s", "45 s", "28 min", "1 h 02 min", "?"]


def test_a_long_file_name_keeps_its_start_and_its_number_on_a_cards_line():
    name = "very_long_descriptive_file_name_for_image_number_0436.png"
    assert [cards.fit(name, n) for n in (13, 20)] == ["very…0436.png", "very_l…mber_0436.png"]
    assert cards.fit("s17.png", 13) == "s17.png"
    assert cards.plain("*a*_$1$_:x:.png") == r"\*a\*\_\$1\$\_\:x\:.png"


def test_a_metric_that_did_not_move_is_drawn_flat_not_over_twelve_digit_ticks():
    history = [{"epoch": 1, "loss_d": 1.0, "loss_g": 1.1, "is": 1.0000000000228, "fid": 9.0},
               {"epoch": 2, "loss_d": 0.9, "loss_g": 1.3, "is": 1.0000000000263, "fid": 7.5}]
    fig = figures.history_figure(history, uninformative=("is",))
    is_axis, fid_axis = fig.layout.yaxis2, fig.layout.yaxis3  # the losses' row first, then IS and FID
    assert is_axis.range == pytest.approx((1 - 1e-3, 1 + 1e-3), abs=1e-9)
    assert fid_axis.range is None  # a metric that moved keeps Plotly's range
    assert [a.text for a in fig.layout.annotations][1] == "test IS<br>(uninformative)"


def test_the_training_curves_tick_whole_epochs():
    one = figures.history_figure([{"epoch": 1, "loss_d": 1.0, "loss_g": 1.1, "fid": 9.0}])  # a one-epoch fine-tune
    assert {(a.tick0, a.dtick) for a in (one.layout.xaxis, one.layout.xaxis2)} == {(0, 1)}
    many = figures.history_figure([{"epoch": e, "loss_d": 1.0, "loss_g": 1.1} for e in range(1, 101)])
    assert many.layout.xaxis.dtick == 20


def test_the_live_chart_of_an_alternating_run_draws_both_players_losses():
    """An alternating step reports one player's loss and None for the other; the live view kept only samples with
    a D loss, so the chart of an alternating run (mnist-adam, the default) drew no G loss while training."""
    from explorer import jobpanel

    statuses = [{"done": 10, "info": {"epoch": 1, "loss_d": 0.9, "loss_g": None}},
                {"done": 20, "info": {"epoch": 1, "loss_d": None, "loss_g": 1.4}},
                {"done": 30, "info": {"epoch": 1}},  # an epoch's end: no loss to draw
                {"done": 40, "info": {"epoch": 1, "loss_d": None, "loss_g": 1.2}}]
    samples = [s for s in map(jobpanel.loss_sample, statuses) if s is not None]
    assert samples == [(10, 0.9, None), (20, None, 1.4), (40, None, 1.2)]
    history = [{"epoch": 1, "loss_d": 1.0, "loss_g": 1.1}]
    live_d, live_g = figures.history_figure(history, samples, steps_per_epoch=100).data[:2]
    assert [y for y in live_g.y if y is not None] == [1.4, 1.2] and live_g.connectgaps
    assert [y for y in live_d.y if y is not None] == [0.9] and live_d.connectgaps


def test_gallery_scores_mark_the_harmful_side_red():
    results = {"fid": _result("fid", [-0.5, 0.5]), "is": _result("is", [-0.5, 0.5])}
    assert tables.score_lines(results, 0) == ":red[FID -5.00e-1]  \nIS -5.00e-1"  # tables.sci, as everywhere
    assert tables.score_lines(results, 1) == "FID +5.00e-1  \n:red[IS +5.00e-1]"


def test_gallery_scores_of_an_uninformative_metric_are_grey_and_say_so():
    results = {"fid": _result("fid", [-0.5, 0.5]), "is": _result("is", [-0.5, 0.5])}
    fid_means_nothing = {"fid": {"verdict": "metric uninformative", "reasons": ["r"]},
                         "is": {"verdict": "informative", "reasons": []}}
    assert tables.score_lines(results, 0, fid_means_nothing) == (
        ":gray[FID -5.00e-1]  \nIS -5.00e-1  \n:orange[FID: metric uninformative]")
    nothing = {m: {"verdict": "metric uninformative", "reasons": ["r"]} for m in ("fid", "is")}
    assert tables.score_lines(results, 1, nothing) == (
        ":gray[FID +5.00e-1]  \n:gray[IS +5.00e-1]  \n:orange[metric uninformative]")


def test_uploaded_removal_csv_is_read_with_the_cli_rules():
    assert curation.read_removal_upload(b"id\n2\n0\n", 5) == [2, 0]
    with pytest.raises(ConfigError, match="not UTF-8"):
        curation.read_removal_upload(b"\xff\xfeid", 5)
    with pytest.raises(ConfigError, match="outside the training set"):
        curation.read_removal_upload(b"7\n", 5)


def test_a_cameras_names_on_one_gallery_page_keep_the_part_that_tells_them_apart():
    paths = [f"trip/IMG20240817183045{i:06d}HDRportraitmodeenhanced.png" for i in (0, 3, 6)]
    paths += ["trip/s1.png", "scans/s1.png", "very_long_descriptive_file_name_for_image_number_0436.png"]
    shown = cards.shown_names(paths, 160)  # a gallery card: 13 characters beside the help icon
    assert shown == ["IM…00000…png", "IM…00003…png", "IM…00006…png",
                     "s1.png", "s1.png", "very…0436.png"]  # alike only where the names are (the hover tells)
    assert cards.shown_names(paths[:1] + paths[3:], 160)[0] == "IMG2…nced.png"  # alone: shortened as before
    # whatever the line, the part kept is there, in order, and the line is full
    text = "abcdefghijkl"
    assert [cards.fit_around(text, 8, a, b) for a, b in ((10, 11), (0, 2), (3, 12))] == [
        "a…ghijkl", "ab…hijkl", "…defghi…"]


def test_a_cleansing_curve_ticks_whole_instances():
    """One k removed drew ticks at 499.5 and 500.5: half an instance removed."""
    rows = [{"kind": kind, "size": 500, "predicted": -0.05, "actual_valid": -0.053} for kind in ("top", "random-k")]
    axis = figures.cleansing_curve(rows, "fid").layout.xaxis
    assert list(axis.tickvals) == [500] and axis.tickformat == ",d"
    table = pd.DataFrame({"method": ["influence"], "count": [1000], "mean_change_fid": [-0.1], "std_change_fid": [0.02],
                          "seeds": [3], "p_value": [0.04]})
    axis = figures.sweep_figure(table, "fid").layout.xaxis
    assert list(axis.tickvals) == [1000] and axis.tickformat == ",d"


def test_the_probe_sentence_says_when_the_runs_influence_came_from_its_walk():
    probe = {"mode": "auto", "chosen": [1e-3, 1e-3], "user_lr": None, "reason": "the largest of 2 rates probed",
             "cost": {"sentence": "the probe took 62.4 s, 12.48x the 5.0 s of training the traced epochs"}}
    plain = finetuneform.probe_sentence(probe)
    assert plain.startswith("Traced at lr_D 0.001, lr_G 0.001, chosen by the probe: the largest of 2 rates probed. ")
    assert plain.endswith("The probe took 62.4 s, 12.48x the 5.0 s of training the traced epochs.")
    adopted = finetuneform.probe_sentence({**probe, "influence": {"metrics": ["fid", "dloss"], "seconds": 33.89}})
    assert adopted == plain + (" Influence on FID and D-loss stored from the probe's walk of these very steps (33.9 s):"
                               " an estimate of them needs no pass.")
