"""The playground's classroom lessons in the app (AppTest), with the seconds each click takes."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from scipy import stats

from apphelpers import open_app, texts, write_job
from influence import classroom, jobs, store
from influence.context import RunContext, load_run_config
from influence.estimator import cached_results
from influence.train import Trace, replay
from explorer import tables

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _toy(root):
    run_id = next(r["run_id"] for r in store.list_runs(root) if r["run_id"].startswith("toytest-"))
    return run_id, store.open_run(root, run_id)


def test_one_point_shows_the_estimate_beside_the_replay(two_runs, capsys):
    run_id, run = _toy(two_runs)
    at = open_app("playground", run_id, timeout=600)
    assert not at.exception
    at.session_state["pg-point"] = 11  # what a click on point 11 sets
    started = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - started
    assert not at.exception
    ctx = RunContext.create(load_run_config(run), run.root)
    trace = Trace.load(run)
    valid = ctx.evaluator("valid")
    base = valid.evaluate(*[torch.from_numpy(np.array(p)) for p in trace.final_eval()])
    after = valid.evaluate(*replay(ctx, trace, [11], start=int(trace.step_of_instance(2000)[11])))
    shown = {m.label: m.value for m in at.metric}
    assert shown["ALL: actual change without #11"] == tables.sci(after["all"] - base["all"])
    assert shown["D-loss: actual change without #11"] == tables.sci(after["dloss"] - base["dloss"])
    said = texts(at)
    assert f"estimated: {tables.sci(cached_results(run)['all'].scores[11])}" in said
    assert "longer than the real shift" in said
    names = [t.get("name", "") for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]]
    assert any(n.startswith("shift of the generated points,<br>drawn") for n in names)
    # the chart to click marks the chosen point too (a typed id has no click selection to show it)
    click = json.loads(next(c for c in at.get("plotly_chart") if c.proto.id.endswith(f"pg-click-{run_id}")
                            or f"pg-click-{run_id}" in c.proto.id).proto.spec)
    [marked] = [t for t in click["data"] if t.get("name") == "chosen: #11"]
    assert (marked["x"][0], marked["y"][0]) == tuple(float(v) for v in ctx.dataset.train.x[11])
    with capsys.disabled():
        print(f"\n[classroom] one point, predicted vs actual: {seconds:.2f} s per click (AppTest, toy test run)")


def test_loss_is_not_the_metric_states_the_rank_correlation(two_runs):
    run_id, run = _toy(two_runs)
    at = open_app("playground", run_id, timeout=600)
    results = cached_results(run)
    tau = stats.kendalltau(-results["dloss"].scores, results["all"].scores)[0]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Kendall τ between the two harmful-first rankings"] == f"{tau:.2f}"
    specs = "".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "coloured by influence on D-loss" in specs and "coloured by influence on ALL" in specs


def test_the_learning_rate_lesson_retrains_the_epoch_and_compares(two_runs, capsys):
    run_id, run = _toy(two_runs)
    at = open_app("playground", run_id, timeout=600)
    at.select_slider(key="pg-lr").set_value(0.3)
    started = time.perf_counter()
    next(b for b in at.button if b.label == "Retrain the epoch and check").click().run()
    seconds = time.perf_counter() - started
    assert not at.exception
    ctx = RunContext.create(load_run_config(run), run.root)
    lesson = classroom.lr_lesson(ctx, Trace.load(run), 0.3)
    shown = {m.label: m.value for m in at.metric}
    assert shown["growth factor"] == f"{lesson.growth:.3g}x" and shown["verdict (growth factor)"] == lesson.verdict
    assert shown[f"Kendall τ, {len(lesson.ids)} replays"] == f"{lesson.kendall_tau:.2f}"
    story = classroom.conclusion(lesson)
    said = texts(at)
    assert f"{story.headline}." in said and story.text in said  # the verdict and the replays in one sentence
    lo, hi = lesson.random_range
    assert f"between {lo:.2f} and {hi:.2f} in 95% of cases" in said  # the noise of tau at this many replays
    assert "ranges from 0.46 to 0.99" in said  # the seed scatter of tau
    table = at.dataframe[0].value
    assert table["learning rate"].tolist() == ["0.3"] and table["conclusion"].tolist() == [story.kind]
    with capsys.disabled():
        print(f"\n[classroom] learning-rate lesson: {seconds:.2f} s per click (AppTest, toy test run, 20 steps)")


def test_the_learning_rate_lesson_says_when_the_run_diverged(two_runs):
    """At lr 10 the toy's losses explode (1e67) and its ReLUs die with finite parameters: the page says
    'diverged' instead of a growth factor, a verdict and a Kendall tau over meaningless changes."""
    run_id, _ = _toy(two_runs)
    at = open_app("playground", run_id, timeout=600)
    at.select_slider(key="pg-lr").set_value(10.0)
    next(b for b in at.button if b.label == "Retrain the epoch and check").click().run()
    assert not at.exception
    assert any(e.value.startswith("**Diverged at lr 10.** Training diverged: the D loss reached") for e in at.error)
    labels = [m.label for m in at.metric]
    assert "growth factor" not in labels and not any(label.startswith("Kendall τ,") for label in labels)
    assert at.dataframe[0].value["conclusion"].tolist() == ["diverged"]


def _in_order(node):
    """Every element and block under `node`, in the order the page shows them."""
    for key in sorted(getattr(node, "children", {}) or {}):
        child = node.children[key]
        yield child
        yield from _in_order(child)


def test_finished_jobs_sit_below_the_lessons_and_each_lesson_names_its_toy(two_runs):
    """A finished job's box above the tabs pushed the lessons below the fold; the curate tab says to lasso;
    each lesson names the toy it uses, and mode collapse offers a toy whose generator covers the data."""
    run_id, _ = _toy(two_runs)
    write_job(two_runs, {"kind": "estimate", "params": {"run_id": run_id, "metrics": ["all"], "options": {}}},
              state="done", started=time.time() - 5, stages={"influence": 1.0})
    at = open_app("playground", run_id, timeout=600)
    assert not at.exception
    order = list(_in_order(at.main))
    tabs = next(i for i, e in enumerate(order) if getattr(e, "type", None) == "tab")
    finished = next(i for i, e in enumerate(order) if getattr(e, "type", None) == "success"
                    and str(e.value).startswith("Finished in"))
    assert tabs < finished
    said = texts(at)
    assert "Draw a lasso around training points" in said
    assert f"Every lesson below uses the current run, `{run_id}`" in said
    assert f"**{classroom.COVERING_PRESET}**" in said and "covers the data" in said
    button = next(b for b in at.button if b.label.startswith(f"Train {classroom.COVERING_PRESET}"))
    assert button.label == f"Train {classroom.COVERING_PRESET} (seed 0) in the background"


def test_mode_collapse_names_what_the_generator_does(two_runs):
    run_id, run = _toy(two_runs)
    at = open_app("playground", run_id, timeout=600)
    real = run  # the page compares the training points with the last epoch's samples
    ctx = RunContext.create(load_run_config(real), real.root)
    samples = run.read_npy("grids/epoch_003.npy")
    cov = classroom.coverage(ctx.dataset.train.x.numpy(), samples)
    shown = {m.label: m.value for m in at.metric}
    assert shown["the generator"] == cov.verdict and shown["centre offset"] == f"{cov.offset:.2f} σ"


def test_no_compute_button_while_an_estimate_runs(two_runs):
    run_id, run = _toy(two_runs)
    for d in run.path("influence").iterdir():  # a run without influence yet
        if d.is_dir():
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    at = open_app("playground", run_id, timeout=600)
    assert any(b.label.startswith("Compute influence on") for b in at.button)
    spec = {"kind": "estimate", "params": {"run_id": run_id, "metrics": ["all", "dloss"], "options": {}}}
    key = write_job(two_runs, spec, state="running", stage="influence", done=3, total=20)
    lock = jobs.JobLock(jobs.job_dir(two_runs, key) / "lock")
    assert lock.acquire()  # held: the job counts as running, not interrupted
    try:
        at = open_app("playground", run_id, timeout=600)
        assert not at.exception
        assert not any(b.label.startswith("Compute influence on") for b in at.button)
    finally:
        lock.release()

