"""Validate page: accuracy against the number of traced epochs (issue 14)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from apphelpers import open_app, use_store
from influence.train import train
from influence.validation import validate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _helpers import toy_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_chart_of_accuracy_against_traced_epochs(tmp_path, monkeypatch, started_jobs):
    root = use_store(monkeypatch, tmp_path / "store")
    run = train(toy_config(trace_epochs=2), root)
    acc = {k: validate(run, ["all"], n=6, trace_epochs=k)["all"] for k in (1, 2)}
    at = open_app("validate", run.run_id)
    assert not at.exception
    (chart,) = [c for c in at.get("plotly_chart") if "traced epochs the estimate covers" in c.proto.spec]
    traces = {t["name"]: t for t in json.loads(chart.proto.spec)["data"]}
    tau = traces["Kendall τ (ALL, n = 6)"]
    assert list(tau["x"]) == [1, 2] and list(tau["y"]) == pytest.approx([acc[1].kendall_tau, acc[2].kendall_tau])
    growth = traces["growth (ALL, n = 6)"]
    assert list(growth["y"]) == pytest.approx([acc[1].growth, acc[2].growth])
    assert "paper: Kendall τ, FID on MNIST" in traces
    # The form offers K up to the run's traced epochs, and only a smaller K goes into the job.
    at.slider(key="val-k").set_value(1).run()
    next(b for b in at.button if b.label == "Start validation").click().run()
    assert started_jobs[-1]["params"]["trace_epochs"] == 1


def test_a_run_traced_over_one_epoch_says_how_to_get_the_chart(tiny_store, monkeypatch):
    """The chart appeared only for runs traced over more than one epoch, with no hint otherwise."""
    from apphelpers import texts, tiny_run_id

    use_store(monkeypatch, tiny_store)
    at = open_app("validate", tiny_run_id(tiny_store))
    assert not at.exception
    assert not [c for c in at.get("plotly_chart") if "traced epochs the estimate covers" in c.proto.spec]
    said = texts(at)
    assert "needs a run traced over more than one epoch; this run traces 1" in said and "train.trace_epochs" in said
