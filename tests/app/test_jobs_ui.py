"""Job panels: every job state is shown with its actions; start buttons send the documented specs."""

from __future__ import annotations

import dataclasses

import pytest

from apphelpers import open_app, texts, tiny_run_id, write_job
from influence import jobs
from influence.estimator import EstimateOptions

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _estimate_spec(run_id: str, **options) -> dict:
    return {"kind": "estimate", "params": {"run_id": run_id, "metrics": ["fid"],
                                           "options": dataclasses.asdict(EstimateOptions(**options))}}


def test_a_running_job_shows_steps_eta_losses_and_cancel(app_store):
    run_id = tiny_run_id(app_store)
    spec = _estimate_spec(run_id, last_steps=5)
    key = write_job(app_store, spec, state="running", stage="influence", done=3, total=10, seconds=6.0, eta=14.0,
                    info={"epoch": 2, "loss_d": 1.25, "loss_g": 0.75})
    lock = jobs.JobLock(jobs.job_dir(app_store, key) / "lock")
    assert lock.acquire()  # this test plays the worker
    try:
        at = open_app("influence", run_id)
        assert not at.exception
        [bar] = [p for p in at.get("progress") if "step 3 of 10" in p.proto.text]
        assert "about 15 s left" in bar.proto.text and "6 s elapsed" in bar.proto.text
        assert "D loss 1.250 · G loss 0.750" in texts(at)
        sidebar = [p.proto.text for p in at.sidebar.get("progress")]
        assert any("Influence on FID" in t for t in sidebar)  # the sidebar lists running jobs on every page
        next(b for b in at.button if b.label == "Cancel").click().run()
        assert (jobs.job_dir(app_store, key) / "cancel").exists()
        # a check counts its evaluations as steps: its bar says how far, not "step 30 of 120"
        (jobs.job_dir(app_store, key) / "cancel").unlink()
        write_job(app_store, spec, state="running", stage="spot check", done=30, total=120, seconds=6.0, eta=18.0)
        at = open_app("influence", run_id)
        assert [p for p in at.get("progress") if "spot check" in p.proto.text and "25% done" in p.proto.text]
        assert not [p for p in at.get("progress") if "of 120" in p.proto.text]
    finally:
        lock.release()


@pytest.mark.parametrize("state, extra, shown, action", [
    ("failed", {"message": "influence pass diverged at traced step 3"}, "Failed: influence pass diverged", "Try again"),
    ("cancelled", {}, "Cancelled", "Start again"),
    ("running", {}, "worker stopped before finishing", "Resume"),  # no lock held: the worker died
])
def test_an_ended_job_offers_to_run_it_again(app_store, started_jobs, state, extra, shown, action):
    run_id = tiny_run_id(app_store)
    spec = _estimate_spec(run_id, last_steps=4)
    write_job(app_store, spec, state=state, done=2, total=10, **extra)
    at = open_app("influence", run_id)
    assert not at.exception
    assert shown in texts(at)
    next(b for b in at.button if b.label == action).click().run()
    assert started_jobs == [spec]


def test_a_finished_job_can_be_dismissed_for_good(app_store):
    run_id = tiny_run_id(app_store)
    write_job(app_store, _estimate_spec(run_id, last_steps=3), state="done", started=1000.0, updated=1075.0,
              done=3, total=3)
    at = open_app("influence", run_id)
    assert "Finished in 1 min 15 s" in texts(at)
    next(b for b in at.button if b.label == "Dismiss").click().run()
    assert "Finished in" not in texts(at)
    assert "Finished in" not in texts(open_app("influence", run_id))  # remembered in the store


def test_influence_compute_button_sends_an_estimate_spec(app_store, started_jobs):
    run_id = tiny_run_id(app_store)
    at = open_app("influence", run_id)
    at.multiselect(key=f"est-metrics-{run_id}").set_value(["is", "fid"])
    at.number_input(key="est-last").set_value(4)
    next(b for b in at.button if b.label == "Compute in the background").click().run()
    assert not at.exception
    assert started_jobs == [{"kind": "estimate", "params": {  # with the CLI's default spot check
        "run_id": run_id, "metrics": ["is", "fid"],
        "options": dataclasses.asdict(EstimateOptions(last_steps=4)), "check": "auto"}}]


def test_cleanse_button_sends_the_removal_set(app_store, started_jobs):
    run_id = tiny_run_id(app_store)
    at = open_app("curate", run_id)
    at.number_input(key="qf-k").set_value(12)
    next(b for b in at.button if b.label == "Fill").click().run()
    at.switch_page("views/cleanse_page.py").run()
    at.toggle(key="scratch").set_value(True)
    next(b for b in at.button if b.label == "Cleanse in the background").click().run()
    assert not at.exception
    [spec] = started_jobs
    assert spec["kind"] == "cleanse" and spec["params"]["mode"] == "scratch"
    assert spec["params"]["run_id"] == run_id and len(spec["params"]["removal_ids"]) == 12


def test_validate_button_sends_a_small_validation(app_store, started_jobs):
    run_id = tiny_run_id(app_store)
    at = open_app("validate", run_id)
    at.number_input(key="val-n").set_value(20)
    next(b for b in at.button if b.label == "Start validation").click().run()
    assert not at.exception
    assert started_jobs == [{"kind": "validate", "params": {
        "run_id": run_id, "metrics": ["fid"], "n": 20, "selection": "first", "seed": 0,
        "options": dataclasses.asdict(EstimateOptions())}}]


def test_sweep_button_sends_the_seeds_of_this_runs_config(app_store, started_jobs):
    from influence.config import RunConfig
    from influence.context import load_run_config
    from influence import store

    run_id = tiny_run_id(app_store)
    at = open_app("validate", run_id)
    assert at.text_input(key="sw-counts").value == "100, 300, 500"  # 10/30/50% of the 1000 tiny images
    at.text_input(key="sw-seeds").set_value("3, 4")
    at.text_input(key="sw-counts").set_value("50 200")
    at.multiselect(key="sw-methods").set_value(["fid", "random"])
    at.run()  # what the sweep will do, and roughly how long, before it starts
    assert "Here: 2 runs to train (0 in the store already) and 8 cleanses, roughly " in texts(at)
    at.text_input(key="sw-seeds").set_value(f"3, 4, {load_run_config(store.open_run(app_store, run_id)).seed}").run()
    assert "Here: 2 runs to train (1 in the store already) and 12 cleanses" in texts(at)  # this run is not trained again
    at.text_input(key="sw-seeds").set_value("3, 4")
    at.button(key="sw-start").click().run()
    assert not at.exception and not at.error
    [spec] = started_jobs
    cfg = load_run_config(store.open_run(app_store, run_id))
    assert spec["kind"] == "sweep"
    assert [RunConfig.from_dict(c) for c in spec["params"]["configs"]] == [
        dataclasses.replace(cfg, seed=s) for s in (3, 4)]
    assert (spec["params"]["methods"], spec["params"]["counts"], spec["params"]["metric"]) == (["fid", "random"], [50, 200], "fid")


@pytest.mark.parametrize("seeds, counts, message", [
    ("3", "50", "needs 2..50 seeds"),
    ("1 x", "50", "not a list of whole numbers"),
    ("1 2", "1000", "removal count 1000 must lie in 1..999"),
    ("1 2", "", "at least one number for the removal counts"),
])
def test_a_bad_sweep_form_says_why_and_starts_nothing(app_store, started_jobs, seeds, counts, message):
    at = open_app("validate", tiny_run_id(app_store))
    at.text_input(key="sw-seeds").set_value(seeds)
    at.text_input(key="sw-counts").set_value(counts)
    at.button(key="sw-start").click().run()
    assert not at.exception and started_jobs == []
    assert any(message in e.value for e in at.error)


def test_job_descriptions_name_the_check_and_the_group_validation():
    from explorer import jobpanel

    from influence.specs import estimate_spec

    assert jobpanel.describe(estimate_spec("r", ["fid"], EstimateOptions(), "auto")) == \
        "Influence on FID, then its spot check (auto)"
    spec = {"kind": "validate", "params": {"run_id": "r", "metrics": ["fid", "is"],
                                           "groups": {"groups": 32, "fractions": [0.05], "seed": 0, "curve": []}}}
    assert jobpanel.describe(spec) == "Group validation of FID, IS: 32 random groups per fraction"
