"""The trust a user can check, in the app: the spot check's verdict on the Influence page (and 'not checked'
before one), the estimate form's method and check choices as the CLI's job spec, and group validation (LDS
table, scatter, cleansing curve) on the Validate page, each read against the engine's stored numbers."""

from __future__ import annotations

import json
import shutil

import pytest

from apphelpers import open_app, texts, tiny_run_id, use_store
from explorer.numbers import sci
from explorer.trust_view import NARROW_HINT
from influence import store
from influence.estimator import EstimateOptions, cached_results, chosen_name
from influence.specs import estimate_spec
from influence.validation.groups import GroupSpec, validate_groups
from influence.validation.intervals import interval_text, rank_interval
from influence.validation.spotcheck import spot_check
from influence.train import Trace
from influence.validation.trust import verdict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run_steps(run) -> int:
    return Trace.load(run).steps


@pytest.fixture(scope="module")
def checked_store(tiny_store, tmp_path_factory):
    """The tiny run with a quick spot check of its FID estimate and a small group validation."""
    root = tmp_path_factory.mktemp("checked") / "store"
    shutil.copytree(tiny_store, root, ignore=shutil.ignore_patterns("_jobs"))
    run = store.open_run(root, tiny_run_id(root))
    spot_check(run, ["fid"], EstimateOptions(), "quick")
    validate_groups(run, ["fid"], GroupSpec(groups=5, fractions=(0.05,), seed=0, curve=(0.05,)))
    return root


def test_influence_page_states_the_measured_verdict(checked_store, monkeypatch):
    root = use_store(monkeypatch, checked_store)
    run = store.open_run(root, tiny_run_id(root))
    expected = verdict(cached_results(run)["fid"], spot_check(run, ["fid"]))  # the stored check, read back
    at = open_app("influence", run.run_id)
    assert not at.exception
    said = texts(at)
    assert f"Trust — {expected['summary']}." in said
    assert "Measured: " + expected["measured"] in said
    assert expected["measured"].startswith("replays over the last")
    assert (NARROW_HINT in said) == (len(expected["groups_range"]) > 1 or len(expected["singles_range"]) > 1)
    # what the verdict rests on, replay by replay: the stored lanes, each point of the chart a row of the table
    lanes = spot_check(run, ["fid"])["per_metric"]["fid"]["lanes"]
    table = next(d.value for d in at.dataframe if "steps replayed" in d.value.columns)
    assert len(table) == len(lanes) and list(table["images"]) == [lane["size"] for lane in lanes]
    assert list(table["actual"]) == [sci(lane["actual"]) for lane in lanes]
    assert set(table["removed"]) == {"random groups", "most harmful 5%", "most helpful 5%", "random images",
                                     "largest |score|"}
    assert set(table.loc[table["removed"] == "most harmful 5%", "steps replayed"]) == {f"all {run_steps(run)}"}
    window = spot_check(run, ["fid"])["window_first_step"]  # each lane's first step, as stored with it
    assert [lane["first_step"] for lane in lanes] == [0 if lane["kind"] == "low" else window for lane in lanes]
    assert set(table.loc[table["removed"] != "most harmful 5%", "steps replayed"]) == {
        f"last {run_steps(run) - window} of {run_steps(run)}"}
    chart = json.loads(next(c for c in at.get("plotly_chart") if "check-replays" in c.proto.id).proto.spec)
    points = [y for trace in chart["data"] if trace["mode"] == "markers" for y in trace["y"]]
    assert sorted(points) == sorted(lane["actual"] for lane in lanes)
    # one instance in detail: the check's single-image level beside the growth verdict, in the table shown
    detail = next(d for d in at.dataframe if "single images (check)" in d.value.columns)
    fid = detail.value[detail.value["metric"] == "FID"].iloc[0]
    shown = fid["single images (check)"]
    assert shown.startswith(expected["singles"]) and expected["singles"] != "not checked"
    # with the levels its few images cannot rule out (8 images: rarely none)
    assert all(level in shown for level in expected["singles_range"])
    assert fid["stability"].startswith(cached_results(run)["fid"].verdict)


def test_an_unchecked_estimate_says_not_checked_and_offers_the_check(rich, started_jobs):
    at = open_app("influence", tiny_run_id(rich))
    assert not at.exception
    assert "Trust: not checked" in texts(at)
    detail = next(d for d in at.dataframe if "single images (check)" in d.value.columns)
    assert set(detail.value["single images (check)"]) == {"not checked"}
    at.button(key=f"check-{tiny_run_id(rich)}").click().run()
    run = store.open_run(rich, tiny_run_id(rich))
    results = cached_results(run)
    same = EstimateOptions(dtype=results["fid"].meta["options"]["dtype"])  # the options that made the result
    assert started_jobs == [estimate_spec(run.run_id, list(results), same, "auto")]
    assert chosen_name(run)  # nothing else changed


def test_the_estimate_form_sends_method_and_check_as_the_cli_does(rich, started_jobs):
    at = open_app("influence", tiny_run_id(rich))
    at.radio(key="est-method").set_value("tracin")
    at.radio(key="est-check").set_value("none")
    at.multiselect(key=f"est-metrics-{tiny_run_id(rich)}").set_value(["fid"])
    next(b for b in at.button if b.label == "Compute in the background").click().run()
    assert not at.exception
    assert started_jobs == [estimate_spec(tiny_run_id(rich), ["fid"], EstimateOptions(method="tracin"), "none")]


def test_validate_page_shows_lds_scatter_and_curve(checked_store, monkeypatch):
    from explorer import tables

    root = use_store(monkeypatch, checked_store)
    run = store.open_run(root, tiny_run_id(root))
    result = validate_groups(run, ["fid"], GroupSpec(groups=5, fractions=(0.05,), seed=0, curve=(0.05,)))  # stored
    at = open_app("validate", run.run_id)
    assert not at.exception
    table = next(d.value for d in at.dataframe if "LDS" in d.value.columns)
    row = result["scores"][result["result_in_use"]]["fid"][0]
    assert list(table["method"]) == ["exact"] and "estimate" not in table  # one result: its name in the selector
    mine = table.iloc[0]
    assert mine["LDS"] == round(row["spearman_valid"], 3) and mine["LDS (test)"] == round(row["spearman_test"], 3)
    assert "M = 5 random groups per fraction" in texts(at)
    # the replays' time summed over their tasks and on the clock
    assert (f"{tables.duration(result['replay_seconds'])} of replay summed over its tasks, "
            f"{tables.duration(result['wall_seconds'])} on the clock") in texts(at)
    # 5 groups tell little: the interval beside the LDS says how little (a perfect 1.000: 0.32 to 1.00)
    assert mine["95% interval"] == interval_text(rank_interval("spearman", row["spearman_valid"], 5))
    assert float(mine["95% interval"].split(" to ")[0]) < 0.5
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("sum over the group" in s for s in specs)  # the LDS scatter, its axis in words
    assert any("most harmful first: actual" in s for s in specs)  # the cleansing curve
    # its top 5% ranked among the 5 random groups of 5%: how many it beat, and the chance a random set does as well
    top = next(r for r in result["curve"]["fid"] if r["kind"] == "top")
    a = top["against_random"]
    beaten = 5 - a["as_good_valid"]
    assert (f"Removing the {top['size']} most harmful did better than random sets of {top['size']}: {beaten} of 5 on "
            f"the validation split (p = {a['p_valid']:.2g})") in texts(at)


def test_a_cleansed_set_is_ranked_among_random_sets_of_its_size(app_store, started_jobs):
    """Cleanse page: without random sets of the attempt's size, a button starts the group validation that replays 32
    (the job the CLI's --against-random runs); with them stored, the attempt's change is ranked among theirs per
    metric, counted here from the stored table in the metric's own direction."""
    import dataclasses

    from influence.cleanse import cleanse
    from influence.estimator import harmful_order
    from influence.validation.groups import size_spec

    run_id = tiny_run_id(app_store)
    run = store.open_run(app_store, run_id)
    removal = sorted(harmful_order(cached_results(run)["fid"])[:12].tolist())
    run.write_json("app/removal.json", {"ids": removal})
    attempt = cleanse(run, removal).as_dict()
    traced = Trace.load(run).step_of_instance(len(cached_results(run)["fid"].scores)) >= 0
    size = int(traced[removal].sum())
    at = open_app("cleanse", run_id)
    assert not at.exception
    next(b for b in at.button if b.label == f"Compare with 32 random sets of {size}").click().run()
    assert started_jobs == [json.loads(json.dumps({"kind": "validate", "params": {
        "run_id": run_id, "metrics": list(cached_results(run)), "lanes": None,
        "groups": dataclasses.asdict(size_spec(int(traced.sum()), size)),
        "options": dataclasses.asdict(EstimateOptions())}}))]  # as the worker reads it back
    table = validate_groups(run, ["fid"], size_spec(int(traced.sum()), size, groups=5))["groups_table"]  # stored
    at.run()
    said = texts(at)
    for m, label in (("fid", "FID"), ("is", "IS")):  # IS is scored beside FID at no cost
        beaten = []
        for split, change in (("validation", attempt["validation"]["change"][m]), ("test", attempt["change"][m])):
            random = table[f"actual_{'valid' if split == 'validation' else 'test'}_{m}"].to_numpy()
            as_good = int((random <= change).sum() if m == "fid" else (random >= change).sum())  # FID: lower = better
            beaten.append(f"{5 - as_good} of 5 on the {split} split (p = {(1 + as_good) / 6:.2g})")
        assert (f"**{label}**: removing this set did better than random sets of {size}: {', '.join(beaten)}; p: the "
                f"chance a random set does as well (random sets of group validation ") in said
    assert not any(b.label.startswith("Compare with") for b in at.button)


def test_the_lds_table_names_results_only_where_the_method_leaves_rows_alike():
    """At 1024 px the table has about 520 px: the result's name takes a column only where two rows would read the
    same without it (two exact estimates in other dtypes), not beside a baseline that its method names."""
    from explorer.trust_view import lds_table

    row = {"fraction": 0.05, "groups": 32, "spearman_valid": 0.9, "spearman_test": 0.8, "pearson_valid": 0.95,
           "slope_valid": 1.1}
    with_baseline = lds_table({"scores": {"float32-v1": {"fid": [row]}, "float32-tracin-v1": {"fid": [row]}}}, "fid")
    assert list(with_baseline["method"]) == ["exact", "TracIn-style"] and "estimate" not in with_baseline
    two_exact = lds_table({"scores": {"float32-v1": {"fid": [row]}, "float64-v1": {"fid": [row]}}}, "fid")
    assert list(two_exact["estimate"]) == ["float32-v1", "float64-v1"]


def test_the_group_form_says_how_many_sets_it_replays_and_how_long(checked_store, monkeypatch):
    """Before a group validation starts: the sets it replays (a stored validation's read back) and the time, from
    this run's measured replays."""
    from explorer import tables

    root = use_store(monkeypatch, checked_store)
    run = store.open_run(root, tiny_run_id(root))
    stored = validate_groups(run, ["fid"], GroupSpec(groups=5, fractions=(0.05,), seed=0, curve=(0.05,)))
    per_set = stored["replay_seconds"] / 7  # 5 random sets and the curve's top-k and random k
    at = open_app("validate", run.run_id)
    timers = [w.value for w in at.warning if w.value.startswith("Replays")]
    assert timers == [f"Replays 102 removal sets over the traced steps: takes roughly "  # 32 x 3 + 3 x 2: the defaults
                      f"{tables.duration(102 * per_set, rough=True)} on this machine (estimated from this run's "
                      "measured speed). It runs in the background: you can switch pages meanwhile."]
    at.number_input(key=f"grp-m-{run.run_id}").set_value(5).run()
    at.text_input(key=f"grp-f-{run.run_id}").set_value("0.05").run()
    at.text_input(key=f"grp-c-{run.run_id}").set_value("0.05").run()
    assert "These sets are already replayed: the result is read back at once." in texts(at)
    at.text_input(key=f"grp-c-{run.run_id}").set_value("0.05, 0.1").run()
    assert any(w.value.startswith("Replays 2 removal sets") for w in at.warning)  # the new fraction's top-k, random k
    at.text_input(key=f"grp-c-{run.run_id}").set_value("0.05").run()
    at.multiselect(key=f"grp-metrics-{run.run_id}").set_value(["is"]).run()  # FID's random sets were scored on IS too
    assert any(w.value.startswith("Replays 2 removal sets") for w in at.warning)  # only IS's curve: top-k, random k


def test_an_older_checks_singles_are_named_as_the_mix_they_were():
    """Checks stored before 2026-12-05 took half their singles from the largest |scores|: the replays' table and
    chart do not call them random; the quick check's window and whole-trace harmful set are told apart."""
    from explorer.figures import check_replays
    from explorer.tables import check_lanes_table

    lanes = [{"kind": "random", "size": 5, "predicted": 0.1, "actual": 0.2},
             {"kind": "low", "size": 5, "predicted": -0.3, "actual": -0.2},  # FID: low scores are the harmful set
             {"kind": "single", "size": 1, "predicted": 0.01, "actual": -0.02}]
    check = {"level": "quick", "traced_steps": 80, "window_steps": 10, "sets_over_whole_trace": True,
             "per_metric": {"fid": {"lanes": lanes}}}
    table = check_lanes_table(check, "fid")
    assert list(table["removed"]) == ["random groups", "most harmful 5%", "random and largest |score|"]
    assert list(table["steps replayed"]) == ["last 10 of 80", "all 80", "last 10 of 80"]
    assert list(table["same sign"]) == ["yes", "yes", "no"]
    names = {t.name for t in check_replays(lanes, "fid", mixed=True).data}
    assert "random and largest |score|" in names and "random images" not in names
    check["per_metric"]["fid"]["top_singles"] = {"n": 0}
    assert check_lanes_table(check, "fid")["removed"].iloc[2] == "random images"
    check["probe_lanes"] = ["fid"]  # its harmful set measured by the trace-lr probe's replay
    assert list(check_lanes_table(check, "fid")["steps replayed"])[1] == "all 80 (the probe's replay)"


def test_a_removal_set_says_its_predicted_change_and_how_far_groups_are_trusted(checked_store, monkeypatch):
    root = use_store(monkeypatch, checked_store)
    run = store.open_run(root, tiny_run_id(root))
    fid = cached_results(run)["fid"]
    ids = [int(i) for i in fid.scores.argsort()[:7]]  # FID's 7 most negative: removing them should lower FID
    run.write_json("app/removal.json", {"ids": sorted(ids)})
    change = float(fid.scores[ids].sum())  # the group's prediction: the sum of its members' scores
    assert change < 0
    level = verdict(fid, spot_check(run, ["fid"]))["groups"]
    for page in ("curate", "cleanse"):
        at = open_app(page, run.run_id)
        assert not at.exception
        line = next(t for t in texts(at).splitlines() if t.startswith("Predicted if removed"))
        assert f"FID {sci(change)} (improves it); groups: {level}" in line
