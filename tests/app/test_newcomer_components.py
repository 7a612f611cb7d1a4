"""Issue 15, without Streamlit: the |u| plot tells the verdict's story, one number format, readable class
colours and labels, the lr_schedule table, cleanse attempt choice, predicted-vs-actual wording."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from apphelpers import APP  # noqa: F401  (puts the app's `explorer` package on the path)
from explorer import attempt_choice, figures, jobpanel, numbers, tables, trainform
from influence.config import preset
from influence.errors import ConfigError
from influence.estimator import GROWTH_UNRELIABLE, verdict_for


def _norms(u_d, u_g) -> np.ndarray:
    """u_norms as the engine stores them: index = traced step, the last row = where the pass starts."""
    return np.stack([np.asarray(u_d, float), np.asarray(u_g, float)], axis=1)


def _engine_growth(u_norms: np.ndarray) -> float:
    whole = np.hypot(u_norms[:, 0], u_norms[:, 1])
    return float(np.nanmax(whole / whole[-1]))


def _trace(fig, start: str):
    return next(t for t in fig.data if t.name.startswith(start))


def test_accumulating_u_d_reads_as_stable_in_plot_and_verdict():
    # u_D starts at 0 and grows 70x from its first non-zero value (the toy2d seed 5); u_G stays near 1.
    steps = 50
    u_d = np.concatenate([0.01 * np.linspace(70, 1, steps - 1), [0.0]])
    u_g = np.linspace(1.1, 1.0, steps)
    u = _norms(u_d, u_g)
    growth = _engine_growth(u)
    verdict, message = verdict_for(growth)
    assert verdict == "reliable" and "growth factor" in message and "starting size" in message
    fig = figures.u_norm_figure(u)
    whole, d, g = (np.asarray(_trace(fig, p).y, float) for p in ("|u| whole", "|u_D|", "|u_G|"))
    assert np.nanmax(whole) == pytest.approx(growth)  # the black line's peak is the verdict's number
    assert np.nanmax(d) < 10 and np.all(d[np.isfinite(d)] <= whole[np.isfinite(d)] + 1e-12)  # under it, no alarm
    lo, hi = fig.layout.yaxis.range
    assert 10 ** lo <= np.nanmin(g) and np.nanmax(g) <= 10 ** hi  # |u_G| inside the axis
    assert all("e" not in t for t in fig.layout.yaxis.ticktext if t not in ("1e-4",))  # 0.001 ... 1000 written out


def test_an_exploding_pass_reads_as_one_in_plot_and_verdict():
    steps = 100
    u_g = 10.0 ** np.linspace(9, 0, steps)  # |u| grows 1e9-fold backwards, like quick at lr 1e-2
    u = _norms(0.5 * u_g, u_g)
    growth = _engine_growth(u)
    assert verdict_for(growth)[0] == "unreliable"
    fig = figures.u_norm_figure(u)
    whole = np.asarray(_trace(fig, "|u| whole").y, float)
    lo, hi = fig.layout.yaxis.range
    assert np.nanmax(whole) > GROWTH_UNRELIABLE and np.nanmax(whole) <= 10 ** hi  # drawn, above the red line
    assert len(fig.layout.yaxis.tickvals) <= 9  # readable: at most about 8 decade labels
    assert {shape.y0 for shape in fig.layout.shapes} >= {10.0, 100.0}  # the verdict's thresholds are drawn


def test_the_whole_state_norm_is_used_when_the_engine_stores_it():
    u = _norms([0.0, 0.5, 0.0], [1.0, 1.0, 1.0])
    fig = figures.u_norm_figure(u, whole=np.array([4.0, 2.0, 1.0]))  # optimizer buffers make |u| larger
    assert list(_trace(fig, "|u| whole").y) == [4.0, 2.0, 1.0]


@pytest.mark.parametrize("value, text", [(-7.66e-5, "-7.66e-5"), (0.00012345, "1.23e-4"), (2.5, "2.50e+0"),
                                         (0.0, "0.00e+0"), (float("nan"), "?")])
def test_one_number_format_for_influence_values(value, text):
    assert numbers.sci(value) == tables.sci(value) == text
    assert "%.2e" == numbers.SCI_FORMAT  # the tables' NumberColumn writes the same digits (sprintf-js)


def test_influence_axes_tick_as_5e_minus_5_and_zero_as_0():
    fig = figures.influence_histogram(np.array([-2e-4, -5e-5, 1e-5, 1e-4]), "fid")
    assert fig.layout.xaxis.tickformat == ".2~e" and fig.layout.xaxis.labelalias == {"0e+0": "0"}
    assert fig.layout.xaxis.exponentformat is None  # plotly's own 'e' format wrote 0.5e-4
    legend = fig.layout.legend  # below the plot, at the figure's bottom edge: the toolbar sits top right
    assert (legend.yref, legend.y, legend.yanchor) == ("container", 0.0, "bottom")


def test_gallery_cards_use_the_same_format_as_tables():
    from influence.estimator import InfluenceResult

    r = InfluenceResult("fid", np.array([-7.66e-5]), np.ones(1, np.int8), np.ones((2, 2)), {"harmful_sign": -1})
    assert tables.score_lines({"fid": r}, 0) == ":red[FID -7.66e-5]"


def test_class_colours_are_visible_on_white_and_every_class_is_labelled():
    def luminance(hex_color: str) -> float:
        r, g, b = (int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    assert all(luminance(figures.class_color(c)) < 0.75 for c in range(10))
    frame = pd.DataFrame({"id": np.arange(40), "label": np.arange(40) % 10,
                          "influence_is": np.linspace(-1, 1, 40), "influence_fid": np.linspace(1, -1, 40)})
    scatter = figures.influence_scatter(frame, "is", "fid", None)
    assert [t.marker.color for t in scatter.data] == [figures.class_color(c) for c in range(10)]
    box = figures.class_box(frame, "fid", None)
    assert box.layout.xaxis.type == "category" and box.layout.xaxis.dtick == 1  # 0..9, not only even classes


def test_scatter_selection_gives_training_ids():
    event = {"selection": {"points": [{"curve_number": 3, "point_index": 0, "customdata": 17},
                                      {"curve_number": 1, "point_index": 4, "customdata": [5]}]}}
    assert figures.selected_ids(event) == [5, 17]
    assert figures.selected_ids(None) == []


def test_plural():
    assert tables.plural(1, "instance") == "1 instance" and tables.plural(3, "instance") == "3 instances"


def test_lr_schedule_table_round_trips_through_the_engine_parser():
    base = preset("tiny")
    rows = trainform.schedule_rows(base)
    assert rows == [{"from epoch": 2, "lr_D": 0.001, "lr_G": 0.001}]
    assert trainform.schedule_text(rows) == "2:0.001:0.001"
    values = {key: text for key, text, _, _ in trainform.fields(base)}
    edited = trainform.apply_edits(base, {**values, "train.lr_schedule": trainform.schedule_text(
        rows + [{"from epoch": 1.0, "lr_D": 0.01, "lr_G": 0.02}, {"from epoch": None, "lr_D": None, "lr_G": None}])})
    assert edited.train.lr_schedule == ((1, 0.01, 0.02), (2, 0.001, 0.001))
    with pytest.raises(ConfigError, match="row 1: fill in"):
        trainform.schedule_text([{"from epoch": 3, "lr_D": math.nan, "lr_G": 0.1}])
    with pytest.raises(ConfigError, match="whole number"):
        trainform.schedule_text([{"from epoch": 1.5, "lr_D": 0.1, "lr_G": 0.1}])


def test_optimizer_options_have_their_own_column_choices_and_help():
    fields = {key: (text, help_text, choices) for key, text, help_text, choices in trainform.fields(preset("tiny"))}
    for key in trainform.OPTIMIZER_KEYS:
        assert key in fields and fields[key][1], key  # shown, with the engine's help text
        assert trainform.section_of(key) == "optimizer"
    assert fields["train.optimizer"][2] == ("sgd", "momentum", "adam")
    assert fields["train.scheme"][2] == ("simultaneous", "alternating")
    assert fields["train.nesterov"][2] == fields["train.decoupled_wd"][2] == ("True", "False")
    assert fields["train.betas"][0] == "0.9,0.999"
    assert not [k for k in fields if k.endswith("_sha256")]  # recorded by the engine, not typed
    adam = trainform.apply_edits(preset("tiny"), {**{k: v[0] for k, v in fields.items()}, "train.optimizer": "adam",
                                                  "train.betas": "0.5,0.99", "train.ema_decay": "0.999"})
    assert (adam.train.optimizer, tuple(adam.train.betas), adam.train.ema_decay) == ("adam", (0.5, 0.99), 0.999)


def test_the_attempt_just_computed_is_the_one_shown():
    session: dict = {}
    keys = ["replay-20-a"]
    assert attempt_choice.pick(session, "r", keys, "replay-20-a", "replay") == "replay-20-a"
    assert attempt_choice.pick(session, "r", keys, "replay-20-a", "replay") is None  # the user's pick stays
    session["attempt-r"] = "replay-20-a"
    # the user switches to scratch and starts it: no attempt for it yet, the replay stays shown
    assert attempt_choice.pick(session, "r", keys, "scratch-20-b", "scratch") is None
    keys = ["replay-20-a", "scratch-20-b"]  # the scratch job finished
    assert attempt_choice.pick(session, "r", keys, "scratch-20-b", "scratch") == "scratch-20-b"
    assert session["attempt-r"] == "scratch-20-b"
    # toggling back to replay shows the replay attempt the page says is "shown below"
    assert attempt_choice.pick(session, "r", keys, "replay-20-a", "replay") == "replay-20-a"


def test_scratch_results_are_not_judged_by_the_traced_epochs_prediction():
    summary = {"steps": 20, "traced_steps": 10}
    scratch = tables.prediction_note({"mode": "scratch"}, summary, 2, None)
    assert "covers only the traced steps (the last 1 of 2 epochs" in scratch
    assert "sign needs to agree" in scratch and "expect the sign" not in scratch
    assert "exactly the steps the estimate covers" in tables.prediction_note({"mode": "replay"}, summary, 2, None)
    assert tables.signs_disagree(-0.0023, 1.05) and not tables.signs_disagree(0.0004, 0.2)


def test_attempts_table_is_narrow_and_flags_sign_disagreement():
    a = {"key": "scratch-3-x", "mode": "scratch", "n_removed": 3, "before": {"fid": 2.0, "is": 8.0},
         "after": {"fid": 3.05, "is": 7.56}, "change": {"fid": 1.05, "is": -0.44},
         "predicted_change": {"fid": -0.0023, "is": 0.0004}, "seconds": 12.0}
    table = tables.attempts_table([a])
    assert len(table.columns) <= 10 and len(table) == 2
    assert table["signs agree"].tolist() == [False, False]
    assert table["actual, validation"].isna().all()  # stored before the validation split was measured
    compare = tables.compare_table([a, {**a, "key": "replay-3-y", "mode": "replay",
                                        "change": {"fid": -0.1, "is": 0.2}}])
    assert list(compare.columns) == ["", "scratch-3-x", "replay-3-y"]
    row = compare.set_index("").loc["FID predicted"]
    assert row["scratch-3-x"] == "-2.30e-3 · signs disagree" and row["replay-3-y"] == "-2.30e-3"
    assert compare.set_index("").loc["FID actual on validation"].tolist() == ["not measured"] * 2
    # what a change means is said beside it (sign confusion)
    assert compare.set_index("").loc["FID change on test (lower is better)"].tolist() == ["+1.05e+0", "-1.00e-1"]
    assert "IS change on test (higher is better)" in compare[""].tolist()


def test_job_workers_wait_passively(tmp_path, monkeypatch):
    """Spinning OpenMP threads made a toy2d training job several times slower next to the app
    (bench/job_speed.py): workers start with OMP_WAIT_POLICY=PASSIVE unless the user set a policy."""
    from influence import jobs

    seen = []
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    # no worker starts: its environment is what is checked (a stand-in gives the id start_background keeps)
    monkeypatch.setattr(jobs.subprocess, "Popen", lambda *a, **k: seen.append(k.get("env")) or SimpleNamespace(pid=1))
    jobs.start_background(tmp_path, {"kind": "train", "params": {"config": preset("toy2d").to_dict()}})
    assert seen and seen[0]["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    jobs.start_background(tmp_path, {"kind": "train", "params": {"config": preset("tiny").to_dict()}})
    assert seen[1]["OMP_WAIT_POLICY"] == "ACTIVE"


def test_shares_keep_two_significant_digits():
    """'Most harmful value is 0.00% of IS' when it was 0.003%."""
    assert numbers.percent(3.1e-5) == "0.0031%" and numbers.percent(0.25) == "25%" and numbers.percent(0.0) == "0%"
    note = tables.scale_note("is", {"n": 10, "harmful": 4, "mean": 1e-6, "most_harmful": 8.5e-5}, 2.76, None)
    assert "The most harmful value is 0.0031% of IS (2.76 on the validation split)" in note


def test_colour_bars_and_hovers_write_influence_as_the_tables_do():
    """The map's colour bar read '100μ' (Plotly's SI default) and its hover 3 plain digits."""
    from explorer import datamap_view

    fig = datamap_view.map_figure(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([-1e-4, 2e-4]), "fid")
    bar = fig.data[0].marker.colorbar
    assert bar.tickformat == ".2~e" and bar.labelalias == {"0e+0": "0"}
    assert "%{marker.color:.2e}" in fig.data[0].hovertemplate
    fig = figures.points_figure(np.zeros((2, 2)), np.array([-1e-4, 2e-4]), "all")
    assert fig.data[0].marker.colorbar.tickformat == ".2~e" and "%{marker.color:.2e}" in fig.data[0].hovertemplate


def test_the_same_z_heat_map_runs_from_white_to_dark():
    """Zero was lavender and small changes black: a scale must get darker as the difference grows."""
    fig = figures.difference_heatmap(np.array([[0.0, 1e-3], [2e-3, 4e-3]]))
    scale = fig.data[0].colorscale

    def lightness(hex_color: str) -> float:
        r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    assert scale[0][1] == "#ffffff"
    assert all(lightness(a[1]) > lightness(b[1]) for a, b in zip(scale, scale[1:]))
    assert fig.layout.title.text.startswith("same-z difference |after − before|")
    assert fig.data[0].colorbar.title.text == "|after − before|"


def test_shift_arrows_are_longer_than_their_heads_and_the_points_sit_above_them():
    """The Cleanse lesson drew 150 arrows of about their heads' size over the generated points: an orange blob
    that hid both the points and which way they moved."""
    from explorer import classroom_figures
    from influence import classroom

    rng = np.random.default_rng(0)
    before = rng.normal(1.0, 0.5, (150, 2))
    shift = np.array([-1.2e-3, -0.8e-3]) * rng.uniform(0.5, 1.5, (150, 1))  # coherent, as after a cleanse
    factor = classroom.magnification(shift, classroom.ARROW_LENGTH)
    fig = classroom_figures.curate_figure(rng.normal(size=(500, 2)), None, "all", before, before + shift, factor,
                                          np.zeros(500, dtype=bool))
    names = [t.name for t in fig.data]
    dots, lines = names.index("generated points (before)"), names.index(_trace(fig, "shift of").name)
    assert dots > lines  # WebGL traces draw in order: the dots on top of the arrows
    drawn = np.percentile(np.linalg.norm(factor * shift, axis=1), 90)
    assert 0.4 <= drawn <= 1.0  # on axes about 10 wide: several heads (size 7 px) long


def test_the_datas_contours_show_through_a_generator_that_covers_them():
    """The Mode collapse lesson's opaque samples hid every contour but the outer two where the generator covers."""
    from explorer import classroom_figures

    fig = classroom_figures.density_figure(np.zeros((10, 2)), np.ones((10, 2)))
    samples = _trace(fig, "generated samples")
    assert fig.data.index(samples) > 0 and samples.marker.opacity <= 0.5
    assert fig.data[0].contours.coloring == "fill" and fig.data[0].line.width >= 1  # the levels outlined


def test_the_time_estimate_names_its_basis_and_the_start_up():
    from explorer import timing

    text = timing.estimate_text("mnist-adam", [], [])
    assert "training about 45 s" in text and "start-up about 75 s" in text
    assert "issue 26's walk-through" in text and "`gan-influence train --seed 3`" in text
    run = {"run_id": "mnist-adam-s0-x", "modified": 1.0, "config": {"preset": "mnist-adam"},
           "summary": {"seconds": 250.0}}
    text = timing.estimate_text("mnist-adam", [run], [])
    assert "training took 4 min 10 s here (run `mnist-adam-s0-x`)" in text and "start-up about 75 s" in text
    job = {"spec": {"params": {"config": {"preset": "mnist-adam"}}}, "queued_at": 100.0, "started": 104.0,
           "updated": 104.0 + 70.0 + 300.0, "stages": {"loading": 0.2, "feature-net": 5.0, "train": 70.0}}
    text = timing.estimate_text("mnist-adam", [run], [job])  # the job box's own split: the same figures
    assert "training took 5 min 00 s here" in text and "start-up took 1 min 10 s here" in text
    assert "walk-through" not in text
    assert jobpanel.finished_text(job).endswith("start-up 1 min 10 s (worker, data set, feature network), "
                                                "training 5 min 00 s.")
    assert timing.estimate_text("dcgan32", [], []) is None


def test_explain_seconds_follow_the_measured_cost_of_rows():
    """Each sample carries its own adjoint: about a pass per sample on a CPU conv net (tiny: 64 samples 51x one),
    about a twelfth of a pass per extra sample where all rows go in one product (toy2d: 64 samples 6.0x one); one
    row's cost from this run's explanations (the slowest), else from one metric's share of its influence pass."""
    class Result:
        def __init__(self, seconds):
            self.meta = {"seconds": seconds}

    results = {"fid": Result(9.0), "is": Result(7.0)}
    assert tables.explain_seconds([], {}, 5, stacked=False) is None  # nothing timed: no guess
    assert tables.explain_seconds([], results, 64, stacked=False) == 64 * 9.0
    assert tables.explain_seconds([], results, 64, stacked=True) == pytest.approx(9.0 * (1 + 63 / 12))
    earlier = [{"seconds": 30.0, "row_sample": [0, 0, 1, 1, 2, 2]},  # 3 samples of two rows (the 2D position)
               {"seconds": 4.0, "row_sample": [0]}]
    assert tables.explain_seconds(earlier, results, 8, stacked=False) == 8 * 10.0  # 30 s / 3 samples, the slowest


def test_group_validation_seconds_from_the_runs_measured_replays():
    """Sets per validation: M per fraction, and per curve fraction each metric's top k and one random k; their time
    from this run's group validations (the slowest per set), else leave-one-out (a replay there covers about half
    the trace), else a step's cost over every traced step."""
    asked = {"spec": {"groups": 32, "fractions": [0.01, 0.05, 0.2], "seed": 0, "curve": [0.01, 0.05, 0.1]},
             "metrics": ["fid", "is"]}
    assert tables.group_lanes(asked) == 96 + 3 * 3
    summary = {"seconds": 100.0, "steps": 1000, "traced_steps": 200}
    earlier = [{**asked, "replay_seconds": 1050.0}, {"spec": {"groups": 4, "fractions": [0.05], "seed": 0,
                                                              "curve": []}, "metrics": ["fid"], "replay_seconds": 48.0}]
    assert tables.group_validation_seconds(summary, {}, [], earlier, 10) == 10 * 12.0  # the slowest: 48 s / 4 sets
    loo = [{"seconds_loo": 50.0, "n": 10}]
    assert tables.group_validation_seconds(summary, {}, loo, [], 10) == 10 * 2 * 5.0
    assert tables.group_validation_seconds(summary, {}, [], [], 10) == pytest.approx(10 * 201 * 0.1)


def test_cleanse_seconds_from_earlier_cleanses_else_the_runs_speed():
    summary = {"seconds": 100.0, "steps": 1000, "traced_steps": 200}
    attempts = [{"mode": "replay", "seconds": 12.0}, {"mode": "replay", "seconds": 15.0}, {"mode": "scratch",
                                                                                          "seconds": 90.0}]
    assert tables.cleanse_seconds(summary, {}, attempts, "replay") == 15.0  # the slowest of this mode
    assert tables.cleanse_seconds(summary, {}, attempts, "scratch") == 90.0
    assert tables.cleanse_seconds(summary, {}, [], "scratch") == 100.0  # the training's own time
    assert tables.cleanse_seconds(summary, {}, [], "replay") == pytest.approx(201 * 0.1)  # every traced step


def test_sweep_seconds_train_the_new_runs_and_replay_every_cleanse():
    class Result:
        meta = {"seconds": 20.0}

    summary = {"seconds": 200.0, "steps": 1000, "traced_steps": 200}
    attempts = [{"mode": "replay", "seconds": 15.0}]
    # 3 new runs trained and estimated as this one (200 s + a 20 s pass each), 2 x 3 x 5 cleanses at 15 s
    assert tables.sweep_seconds(summary, {"fid": Result()}, attempts, 3, 30) == 3 * 220.0 + 30 * 15.0


def test_the_last_pass_is_told_with_its_check():
    class Result:
        def __init__(self, seconds):
            self.meta = {"seconds": seconds}

    results = {"fid": Result(9.3), "is": Result(9.3), "dloss": Result(9.2)}
    assert tables.last_pass_text(results, {"level": "quick", "seconds": 146.1}) == (
        "Here the pass in use (FID, IS and D-loss) took 28 s; its quick spot check 2 min 26 s.")
    assert tables.last_pass_text({"fid": Result(9.3)}, None) == "Here the pass in use (FID) took 9 s."
    assert tables.last_pass_text({"fid": Result(None)}, None) is None  # a result that did not record its time


def test_a_replays_prediction_is_judged_on_the_split_it_was_taken_on():
    """Predicted (validation split) against actual: where the attempt measured the validation split, its change
    is what agrees or not with the prediction; the test split's change is shown beside it."""
    a = {"key": "replay-3-x", "mode": "replay", "n_removed": 3, "before": {"fid": 2.0}, "after": {"fid": 2.01},
         "change": {"fid": 0.01}, "predicted_change": {"fid": -0.02}, "seconds": 5.0,
         "validation": {"before": {"fid": 1.9}, "after": {"fid": 1.88}, "change": {"fid": -0.02 + 1e-3}}}
    row = tables.attempts_table([a]).iloc[0]
    assert row["actual, validation"] == pytest.approx(-0.019) and row["actual, test"] == 0.01
    assert bool(row["signs agree"])  # the validation split's change agrees; the test split's does not carry over
    assert tables.prediction_caption(a, "fid") == "predicted change: -2.00e-2 · actual: -1.90e-2 (validation) · +1.00e-2 (test)"
    assert tables.prediction_caption({**a, "validation": None}, "fid") == (
        "predicted change: -2.00e-2 · actual: +1.00e-2 (test split)")
    summary = {"steps": 20, "traced_steps": 10}
    assert "does not carry over" in tables.prediction_note(a, summary, 2, None)
    compare = tables.compare_table([a]).set_index("")
    assert compare.loc["FID actual on validation", "replay-3-x"] == "-1.90e-2"
    assert "signs disagree" not in compare.loc["FID predicted", "replay-3-x"]
