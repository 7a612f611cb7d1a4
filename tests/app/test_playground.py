"""2D playground and run switching (with a store holding the tiny MNIST run and the small 2D run)."""

from __future__ import annotations

import json

import pytest

from apphelpers import open_app, removal_on_disk, texts, tiny_run_id
from influence import store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _toy_id(root) -> str:
    return next(r["run_id"] for r in store.list_runs(root) if r["run_id"].startswith("toytest-"))


def test_the_playground_colours_points_and_builds_the_set_from_a_selection(two_runs):
    toy = _toy_id(two_runs)
    at = open_app("playground", toy)
    assert not at.exception
    chart = at.get("plotly_chart")[0]  # the curate tab's chart comes first; the lessons' charts follow
    assert "influence on ALL" in chart.proto.spec and "training points" in chart.proto.spec
    # a visible neutral: near-zero influence is grey, not white on white (issue 15)
    marker = json.loads(chart.proto.spec)["data"][0]["marker"]
    assert marker["colorscale"][1] == [0.5, "#b8b8b8"] and marker["line"]["width"] > 0
    # A lasso selection reaches the page as point indices of trace 0 (see test_components for the parsing).
    at.session_state["pg-selected"] = [4, 8, 15]
    at.run()
    next(b for b in at.button if b.label == "Add them to the removal set").click().run()
    assert removal_on_disk(two_runs, toy) == [4, 8, 15]
    at.session_state["pg-selected"] = [16, 23]
    at.run()
    next(b for b in at.button if b.label == "Replace the removal set with them").click().run()
    assert removal_on_disk(two_runs, toy) == [16, 23]
    assert "in the removal set" in at.get("plotly_chart")[0].proto.spec
    assert any(b.label == "Cleanse without the set" for b in at.button)
    next(b for b in at.button if b.label == "Clear the removal set").click().run()
    assert removal_on_disk(two_runs, toy) == []


def test_the_playground_trains_a_toy2d_run(two_runs, started_jobs):
    at = open_app("playground", tiny_run_id(two_runs))
    assert "not a 2D run" in texts(at)
    at.number_input(key="pg-epochs").set_value(5)
    next(b for b in at.button if b.label == "Train in the background").click().run()
    config = started_jobs[0]["params"]["config"]
    assert config["preset"] == "toy2d" and config["data"]["source"] == "normal2d"
    assert config["train"]["epochs"] == 5


def test_switching_runs_in_the_sidebar_survives_a_refresh(two_runs):
    toy, tiny = _toy_id(two_runs), tiny_run_id(two_runs)
    at = open_app("influence")
    assert at.session_state["run_id"] == toy  # the newest run by default
    at.sidebar.selectbox(key="run_picker").set_value(tiny).run()
    assert not at.exception
    assert "FID" in [s.value for s in at.subheader]
    fresh = open_app("influence")  # a refresh: a new session, nothing in session state
    assert fresh.session_state["run_id"] == tiny
    assert fresh.sidebar.selectbox(key="run_picker").value == tiny


def test_2d_runs_show_points_instead_of_images(two_runs):
    toy = _toy_id(two_runs)
    at = open_app("curate", toy)
    assert not at.exception
    assert at.data_editor[0].value.columns.tolist()[:4] == ["remove", "id", "x₁", "x₂"]
    at = open_app("train", toy)
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2  # the generated points of the chosen epoch, and the curves
