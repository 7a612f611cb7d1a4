"""Group validation (LDS), the spot check and the trust verdict, against actual replays."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import stats

from influence import cli
from influence.config import preset
from influence.context import RunContext, load_run_config
from influence.estimator import cached_results, estimate
from influence.models import has_kinks
from influence.train import Trace, replay_state
from influence.validation.groups import GroupSpec, lds, validate_groups
from influence.validation.spotcheck import spot_check, stored_check
from influence.validation.intervals import interval_phrase
from influence.validation.trust import judged, levels, verdict

from _helpers import copy_run


def _metric(ctx, trace, state, split, m):
    return ctx.evaluator(split).evaluate(state.theta_d, state.eval_generator(trace.ema_eval), (m,))[m]


def test_lds_by_hand():
    p = np.array([1.0, 2.0, 3.0, 4.0])
    a = np.array([2.1, 3.9, 6.2, 7.8])
    out = lds(p, a)
    assert out["spearman"] == 1.0 and out["pearson"] == pytest.approx(stats.pearsonr(p, a)[0])
    assert out["slope"] == pytest.approx(np.polyfit(p, a, 1)[0]) and out["intercept"] == pytest.approx(np.polyfit(p, a, 1)[1])
    assert np.isnan(lds(p, np.ones(4))["spearman"])


def test_group_validation_equals_independent_replays(toy_run, tmp_path, monkeypatch):
    run = copy_run(toy_run, tmp_path)
    spec = GroupSpec(groups=6, fractions=(0.02, 0.1), seed=3, curve=(0.05,))
    reports = []
    out = validate_groups(run, ["all", "dloss"], spec, progress=reports.append)
    groups, curve = out["groups_table"], out["curve_table"]
    done = [p.done for p in reports if p.stage == "group replays"]  # lanes replayed, also inside a task
    assert done == sorted(done) and done[-1] == len(groups) + len(curve)
    assert len(groups) == 12 and sorted(zip(curve["kind"], curve["metric"])) == [
        ("random-k", ""), ("top", "all"), ("top", "dloss")]  # each metric's own most harmful
    ctx, trace = RunContext.create(load_run_config(run), run.root), Trace.load(run)
    final = trace.layout.split(torch.from_numpy(np.array(trace.final_state)))
    results = cached_results(run)
    for _, row in groups.iloc[[0, 7]].iterrows():  # an independent sequential replay without the group
        after = replay_state(ctx, trace, row["ids"])
        for m in ("all", "dloss"):
            for split in ("valid", "test"):
                expected = _metric(ctx, trace, after, split, m) - _metric(ctx, trace, final, split, m)
                assert row[f"actual_{split}_{m}"] == pytest.approx(expected, rel=1e-8, abs=1e-14)
    # the scores are the numbers of these pairs, for the result in use
    name = out["result_in_use"]
    for m in ("all", "dloss"):
        for row in out["scores"][name][m]:
            g = groups[groups["fraction"] == row["fraction"]]
            predicted = [results[m].scores[ids].sum() for ids in g["ids"]]
            assert row["spearman_valid"] == pytest.approx(stats.spearmanr(predicted, g[f"actual_valid_{m}"])[0])
            assert row["spearman_valid"] > 0.8  # the toy is close to linear at these removals
    top = next(r for r in out["curve"]["dloss"] if r["kind"] == "top")
    k, scores = len(curve["ids"][0]), results["dloss"].scores
    traced = np.flatnonzero(trace.step_of_instance(len(scores)) >= 0)
    assert top["predicted"] == pytest.approx(np.sort(scores[traced])[:k].sum())  # D-loss: harmful = most negative
    assert np.sign(top["actual_valid"]) == np.sign(top["predicted"]) == -1  # harmful for D-loss = negative
    # a rerun replays nothing: the groups are read back
    import influence.validation.groups as g

    monkeypatch.setattr(g, "_replay", lambda *a, **k: pytest.fail("replayed again"))
    again = validate_groups(run, ["all", "dloss"], spec)
    assert again["scores"] == out["scores"]


def test_a_curve_fraction_asked_for_later_is_replayed_and_added(toy_run, tmp_path, monkeypatch):
    """The same groups with another curve: the stored curve is topped up with the new fraction only (before, the
    old curve came back under the new spec), the result holds exactly the fractions asked for, and the added sets
    equal those a fresh validation with both fractions draws and replays."""
    import influence.validation.groups as g

    first, fresh = copy_run(toy_run, tmp_path / "a"), copy_run(toy_run, tmp_path / "b")
    spec = GroupSpec(groups=5, fractions=(0.05,), seed=1, curve=(0.02,))
    validate_groups(first, ["dloss"], spec)
    replayed = []
    real = g._replay
    monkeypatch.setattr(g, "_replay", lambda run, cfg, trace, table, *a: replayed.append(table) or real(
        run, cfg, trace, table, *a))
    both = validate_groups(first, ["dloss"], dataclasses.replace(spec, curve=(0.02, 0.1)))
    assert len(replayed) == 1 and set(replayed[0]["fraction"]) == {0.1}  # the groups and 2% read back
    assert [(r["kind"], r["fraction"]) for r in both["curve"]["dloss"]] == [
        ("top", 0.02), ("random-k", 0.02), ("top", 0.1), ("random-k", 0.1)]
    assert [r["fraction"] for r in validate_groups(first, ["dloss"], dataclasses.replace(spec, curve=(0.1,)))[
        "curve"]["dloss"]] == [0.1, 0.1]
    assert both["curve"] == validate_groups(fresh, ["dloss"], dataclasses.replace(spec, curve=(0.02, 0.1)))["curve"]


def test_the_curves_top_k_is_ranked_among_the_random_groups_of_its_size(toy_run, tmp_path, capsys):
    """At a curve fraction that is also a group fraction, each metric's top-k is ranked among the M random sets of
    its size, on both splits, in the metric's own direction (ALL: higher is better; D-loss: lower), with the
    randomization p-value (1 + as good) / (M + 1); a curve fraction without random groups of its size gets none."""
    run = copy_run(toy_run, tmp_path)
    spec = GroupSpec(groups=7, fractions=(0.05,), seed=4, curve=(0.05, 0.1))
    out = validate_groups(run, ["all", "dloss"], spec)
    groups = out["groups_table"]
    better = {"all": lambda random, top: random >= top, "dloss": lambda random, top: random <= top}
    for m in ("all", "dloss"):
        top5, top10 = (r for r in out["curve"][m] if r["kind"] == "top")
        assert "against_random" not in top10 and all("against_random" not in r for r in out["curve"][m]
                                                      if r["kind"] == "random-k")
        a = top5["against_random"]
        assert a["groups"] == 7 and set(groups["size"]) == {top5["size"]}
        for split in ("valid", "test"):
            as_good = sum(better[m](x, top5[f"actual_{split}"]) for x in groups[f"actual_{split}_{m}"])
            assert a[f"as_good_{split}"] == as_good and a[f"p_{split}"] == pytest.approx((1 + as_good) / 8)
        assert a["as_good_valid"] == 0  # the toy's most harmful 5% beat every random 5% where the estimate aims
    assert cli.main(["--store", str(run.root), "validate", "--run", run.run_id, "--metric", "dloss", "--metric", "all",
                     "--groups", "7", "--fraction", "0.05", "--seed", "4", "--curve", "0.05", "0.1"]) == 0
    text = capsys.readouterr().out
    top5 = out["curve"]["dloss"][0]
    assert (f"removing the {top5['size']} most harmful did better than random sets of {top5['size']}: 7 of 7 on the "
            f"validation split (p = 0.12)") in text


def test_group_validation_of_another_metric_reads_the_same_sets_back(toy_run, tmp_path, monkeypatch):
    """The random sets are scored on every metric the run computes: validating D-loss after ALL with the same
    spec replays only its curve, and its LDS equals a fresh validation's."""
    import influence.validation.groups as g

    run = copy_run(toy_run, tmp_path / "a")
    spec = GroupSpec(groups=5, fractions=(0.05,), seed=2, curve=(0.02,))
    first = validate_groups(run, ["all"], spec)
    replayed = []
    real = g._replay
    monkeypatch.setattr(g, "_replay", lambda run_, cfg, trace, table, *a: replayed.append(table) or real(
        run_, cfg, trace, table, *a))
    later = validate_groups(run, ["dloss"], spec)
    assert len(replayed) == 1 and set(replayed[0]["kind"]) == {"top", "random-k"}  # the curve only
    assert later["baseline"] == first["baseline"] and later["replay_seconds"] > first["replay_seconds"]  # sets + curve
    # in this process the clock runs over the tasks' own time; a later round adds its clock to the first's
    assert first["wall_seconds"] >= first["replay_seconds"] > 0 and later["wall_seconds"] > first["wall_seconds"]
    monkeypatch.setattr(g, "_replay", real)
    fresh = validate_groups(copy_run(toy_run, tmp_path / "b"), ["dloss"], spec)
    name = later["result_in_use"]
    assert later["scores"][name] == fresh["scores"][name] and later["curve"] == fresh["curve"]
    assert len(g.group_points(run, later["key"].rsplit("/", 1)[1], np.zeros(2000), "dloss")) == 5  # its own folder


def test_checking_another_metric_keeps_the_stored_check(toy_run, tmp_path, monkeypatch):
    """A check of IS after one of FID used to replace the stored check, so FID read 'not checked' again: the
    missing metric is checked and added, the stored one keeps its replays, and asking for both replays nothing."""
    import influence.validation.spotcheck as spotcheck

    run = copy_run(toy_run, tmp_path / "a")
    first = spot_check(run, ["all"], level="quick")
    both = spot_check(run, ["dloss"], level="quick")
    assert both["metrics"] == ["all", "dloss"] and both["per_metric"]["all"] == first["per_metric"]["all"]
    alone = spot_check(copy_run(toy_run, tmp_path / "b"), ["dloss"], level="quick")
    assert both["per_metric"]["dloss"] == alone["per_metric"]["dloss"]  # as if checked on its own
    assert both["seconds"] > first["seconds"] and both["replay_seconds"] > first["replay_seconds"]  # costs added
    monkeypatch.setattr(spotcheck, "_check", lambda *a, **k: pytest.fail("checked again"))
    assert spot_check(run, ["all", "dloss"], level="quick") == both
    name = first["result"]
    assert stored_check(run, name)["metrics"] == ["all", "dloss"]


def test_replays_added_later_keep_the_record_of_the_earlier_ones(toy_run, tmp_path):
    """Sets replayed one after another at another thread count than training's (lane 0 replayed, a warning), then
    topped up under training's (lane 0 the recorded trajectory): the result still says so, for a group validation's curve and a
    spot check of another metric. Before, the later replays' record replaced the earlier's."""
    run = copy_run(toy_run, tmp_path)
    spec = GroupSpec(groups=5, fractions=(0.05,), seed=1, curve=(0.02,))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads % 2 + 1)
        first = validate_groups(run, ["dloss"], spec, lanes=1)
        check = spot_check(run, ["all"], level="quick", lanes=1)
    finally:
        torch.set_num_threads(threads)
    for result in (first, check):
        (line,) = result["conditions"]["warnings"]
        assert f"at {threads % 2 + 1} torch threads" in line and result["baseline"] == "replayed"
    later = validate_groups(run, ["dloss"], dataclasses.replace(spec, curve=(0.02, 0.1)), lanes=1)
    both = spot_check(run, ["dloss"], level="quick", lanes=1)
    for earlier, result in ((first, later), (check, both)):
        assert result["conditions"]["warnings"] == earlier["conditions"]["warnings"]
        assert result["baseline"] == "replayed"
    assert later["replay_seconds"] > first["replay_seconds"] and both["replay_seconds"] > check["replay_seconds"]
    fresh = validate_groups(copy_run(toy_run, tmp_path / "b"), ["dloss"], spec, lanes=1)  # lane 0 read from the trace
    assert fresh["conditions"]["warnings"] == [] and fresh["baseline"] == "recorded trajectory"


def test_cli_validate_groups_prints_lds(toy_run, tmp_path, capsys):
    run = copy_run(toy_run, tmp_path)
    code = cli.main(["--store", str(run.root), "validate", "--run", run.run_id, "--metric", "dloss", "--groups", "5",
                     "--fraction", "0.05", "--curve", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["scores"][out["result_in_use"]]["dloss"]
    assert row["groups"] == 5 and -1 <= row["spearman_valid"] <= 1 and out["curve"]["dloss"] == []
    # the text output gives each LDS its 95% interval (the stored validation, read back)
    assert cli.main(["--store", str(run.root), "validate", "--run", run.run_id, "--metric", "dloss", "--groups", "5",
                     "--fraction", "0.05", "--curve"]) == 0
    assert (f"LDS (Spearman) {row['spearman_valid']:.3f}{interval_phrase('spearman', row['spearman_valid'], 5)}, "
            in capsys.readouterr().out)


def test_spot_check_trusts_the_estimate_and_not_shuffled_scores(toy_run, tmp_path):
    """The quick check replays the last eighth of the trace; its verdict is measured: true scores read trustworthy,
    the same scores shuffled across instances read not supported / noise. The toy's net has ReLU units, which cap
    a quick check (docs/trust.md); the measurement is judged as for a smooth net first, then as the run's."""
    run = copy_run(toy_run, tmp_path, keep_results=False)
    res = estimate(run, ["dloss"])["dloss"]
    recorded = spot_check(run, ["dloss"], level="quick")
    assert recorded["level"] == "quick" and recorded["window_steps"] == 3 and recorded["traced_steps"] == 20
    assert stored_check(run, recorded["result"]) == recorded
    check = {**recorded, "kinked": False}  # the same replays, as a smooth net's check
    v = verdict(res, check)
    assert (v["groups"], v["singles"]) == ("trustworthy", "trustworthy"), v
    assert "single images tau=" in v["measured"] and "most harmful changed D-loss" in v["measured"]
    # each measure with its 95% interval, and the levels that interval allows (the level itself among them)
    agreement = check["per_metric"]["dloss"]
    singles, groups = agreement["singles"], agreement["random_groups"]
    assert interval_phrase("kendall", singles["kendall_tau"], singles["n"]) in v["measured"]
    assert interval_phrase("spearman", groups["spearman"], groups["n"]) in v["measured"]
    assert v["groups"] in v["groups_range"] and v["singles"] in v["singles_range"]
    # the same measurement from 8 images at tau 0.86 cannot tell trustworthy from rough, and says so
    rough = {**agreement, "singles": {**singles, "kendall_tau": 0.86, "n": 8}}
    v = verdict(res, {**check, "per_metric": {"dloss": rough}})
    assert v["singles"] == "trustworthy" and v["singles_range"] == ["trustworthy", "rough"]
    assert "single-image ranks: trustworthy (8 single images cannot rule out rough)" in v["summary"]
    assert "tau=0.86 (95% interval 0.54 to 0.98)" in v["measured"]
    # a check stored before the singles were random says that its tau mixed in the largest |scores|
    older = {k: x for k, x in rough.items() if k != "top_singles"}
    assert "a mix that reads high" in verdict(res, {**check, "per_metric": {"dloss": older}})["measured"]
    assert "a mix that reads high" not in v["measured"]
    # ReLU units (in float64 as in float32) cap the run's own quick check, its groups judged by the harmful set
    assert recorded["kinked"] is True
    assert [has_kinks(preset(p).model) for p in ("toy2d", "dcgan32", "quick", "mnist-adam")] == [True, True, False, False]
    capped = verdict(res, recorded)
    assert (capped["groups"], capped["singles"]) == ("indicative", "rough") and "full check" in capped["summary"]
    # a check stored before 2026-12-05 recorded kinks only in float32: this float64 run's read uncapped
    before = verdict(res, {k: x for k, x in recorded.items() if k != "kinked"} | {"kinked_float32": False})
    assert (before["groups"], before["singles"]) == ("trustworthy", "trustworthy")
    grown = verdict(dataclasses.replace(res, meta={**res.meta, "growth": 1e3}), check)  # |u| grew before the window
    assert (grown["groups"], grown["singles"]) == ("indicative", "rough") and "levels capped" in grown["summary"]
    # shuffled scores: the same replays judge them
    folder = next(p for p in run.path("influence").iterdir() if p.name.startswith("dloss-"))
    for name in ("scores.npy", "window_scores.npy"):
        scores = run.read_npy(f"influence/{folder.name}/{name}")
        run.write_npy(f"influence/{folder.name}/{name}", np.random.default_rng(0).permutation(scores))
    run.forget("influence/_checks/")
    for p in run.path("influence/_checks").iterdir():
        p.unlink()
    shuffled = estimate(run, ["dloss"])["dloss"]
    v = verdict(shuffled, {**spot_check(run, ["dloss"], level="quick"), "kinked": False})
    assert v["groups"] == "not supported" and v["singles"] in ("noise", "rough"), v


def test_the_default_check_replays_the_whole_trace_where_lanes_run_batched(toy_run, tmp_path):
    """auto: a small net's lanes run batched, so the check covers all traced steps with 16 random groups (its
    LDS is the Spearman of their summed scores against the replays), 16 random singles (their tau, as
    leave-one-out of random images) and apart from them the 8 largest |scores|; a rerun reads it back."""
    run = copy_run(toy_run, tmp_path, keep_results=False)
    res = estimate(run, ["all"])["all"]
    check = spot_check(run, ["all"], level="auto")
    assert check["level"] == "full" and check["level_reason"].startswith("auto: full, the lanes run batched")
    assert check["window_steps"] == check["traced_steps"] == 20 and check["lanes"]["mode"] == "batched"
    lanes = check["per_metric"]["all"]["lanes"]
    kinds = [k["kind"] for k in lanes]
    assert (kinds.count("random"), kinds.count("single"), kinds.count("top-single")) == (16, 16, 8)
    singles = [(lane["predicted"], lane["actual"]) for lane in lanes if lane["kind"] == "single"]
    tau = stats.kendalltau(*zip(*singles)).statistic
    assert check["per_metric"]["all"]["singles"]["kendall_tau"] == pytest.approx(tau)
    top = [abs(lane["predicted"]) for lane in lanes if lane["kind"] == "top-single"]
    assert min(top) >= max(abs(p) for p, _ in singles)  # the largest |scores| are not among the random singles
    measured = verdict(res, check)["measured"]
    assert f"on 16 random single images tau={tau:.2f}" in measured and "the 8 largest |scores| moved" in measured
    random = [(lane["predicted"], lane["actual"]) for lane in lanes if lane["kind"] == "random"]
    lds = stats.spearmanr(*zip(*random)).statistic
    assert check["per_metric"]["all"]["random_groups"]["spearman"] == pytest.approx(lds)
    assert f"LDS (Spearman) {lds:.2f}" in verdict(res, check)["measured"]
    assert spot_check(run, ["all"], level="auto") == check  # stored: not replayed again


def test_a_level_comes_with_the_levels_its_interval_cannot_rule_out():
    """12 random groups at LDS 0.95 reach below the 0.9 of 'trustworthy' (interval 0.81 to 1.00); 60 groups at
    the same LDS do not. A cap applies to every level allowed."""
    agreement = {"random_groups": {"spearman": 0.95, "n": 12}, "singles": {"kendall_tau": 0.1, "n": 8},
                 "harmful_set": {"predicted": -1.0, "actual": -0.8}}
    (group, groups), (single, singles) = levels(agreement)
    assert (group, groups) == ("trustworthy", ["trustworthy", "indicative"])
    assert (single, singles) == ("noise", ["rough", "noise"])  # 8 images at tau 0.1: -0.44 to 0.58
    many = {**agreement, "random_groups": {"spearman": 0.95, "n": 60}, "singles": {"kendall_tau": 0.1, "n": 200}}
    assert levels(many) == (("trustworthy", ["trustworthy"]), ("noise", ["noise"]))
    assert levels(agreement, capped=True) == (("indicative", ["indicative"]), ("noise", ["rough", "noise"]))
    wrong_way = {**many, "harmful_set": {"predicted": -1.0, "actual": 0.5}}  # the harmful set moved the other way
    assert levels(wrong_way)[0] == ("not supported", ["not supported"])


def test_a_quick_check_of_a_relu_net_judges_groups_by_the_harmful_set():
    """On ReLU nets the window's random groups misread the whole trace both ways (docs/trust.md), so a quick check
    takes the group level from the most harmful set (replayed over all steps) alone: indicative where it moved the
    predicted way, however the window's groups ranked. A full check replays everything and is judged as usual."""
    window_low = {"random_groups": {"spearman": 0.18, "n": 12}, "singles": {"kendall_tau": 0.9, "n": 8},
                  "harmful_set": {"predicted": 0.048, "actual": 0.046}}
    assert judged(window_low, "quick", 1.6, False)[0][0] == "not supported"
    groups, singles, caps = judged(window_low, "quick", 1.6, True)
    assert groups == ("indicative", ["indicative"]) and singles[0] == "rough" and "most harmful set" in caps[0]
    window_high = {**window_low, "random_groups": {"spearman": 0.99, "n": 12}}
    assert judged(window_high, "quick", 1.6, True)[0] == ("indicative", ["indicative"])
    assert judged(window_high, "full", 1.6, True) == (*levels(window_high), [])
    wrong_way = {**window_high, "harmful_set": {"predicted": 0.048, "actual": -0.01}}
    assert judged(wrong_way, "quick", 1.6, True)[0] == ("not supported", ["not supported"])


def test_an_estimate_without_a_check_reads_not_checked(toy_run):
    v = verdict(cached_results(toy_run)["all"], None)
    assert (v["groups"], v["singles"]) == ("not checked", "not checked") and v["summary"].startswith("not checked")


def test_each_metric_is_checked_on_its_own_most_harmful_set(toy_run, tmp_path):
    """With two metrics the check removes each metric's own 5% most harmful (before: the first metric's, so
    D-loss was said to be 'most harmful' on a set whose predicted D-loss change was positive)."""
    run = copy_run(toy_run, tmp_path, keep_results=False)
    results = estimate(run, ["all", "dloss"])
    check = spot_check(run, ["all", "dloss"], level="full")
    trace = Trace.load(run)
    for m, sign in (("all", 1), ("dloss", -1)):
        harmful = check["per_metric"][m]["harmful_set"]
        scores = results[m].scores
        traced = np.flatnonzero(trace.step_of_instance(len(scores)) >= 0)
        expected = np.sort(scores[traced] * sign)[::-1][: harmful["size"]].sum() * sign
        assert harmful["predicted"] == pytest.approx(expected) and np.sign(harmful["predicted"]) == sign


def test_a_quick_check_replays_the_harmful_sets_over_the_whole_trace(toy_run, tmp_path):
    """The window's random groups and singles start at the window; each metric's most harmful and helpful 5% are
    replayed from the first traced step and predicted by the whole estimate (the window could not see quick
    seed 1's IS set reverse over the earlier steps)."""
    run = copy_run(toy_run, tmp_path, keep_results=False)
    res = estimate(run, ["dloss"])["dloss"]
    check = spot_check(run, ["dloss"], level="quick")
    assert check["sets_over_whole_trace"] and check["window_steps"] < check["traced_steps"]
    harmful = check["per_metric"]["dloss"]["harmful_set"]
    trace = Trace.load(run)
    traced = np.flatnonzero(trace.step_of_instance(len(res.scores)) >= 0)  # of the whole trace
    ids = traced[np.argsort(res.scores[traced], kind="stable")][: harmful["size"]]
    assert harmful["predicted"] == pytest.approx(res.scores[ids].sum())
    ctx = RunContext.create(load_run_config(run), run.root)
    final = trace.layout.split(torch.from_numpy(np.array(trace.final_state)))
    after = replay_state(ctx, trace, ids)  # an independent replay of all traced steps without the set
    expected = _metric(ctx, trace, after, "valid", "dloss") - _metric(ctx, trace, final, "valid", "dloss")
    assert harmful["actual"] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert "over all 20 traced steps, removing the" in verdict(res, check)["measured"]


def test_a_checks_progress_is_one_bar_over_all_its_replays(toy_run, tmp_path, monkeypatch):
    """Each task of a check (10 lanes; the whole trace's sets) reported its own bar, which started again with every
    task, and the CLI drew it against the first task's total with its time left (mnist-adam: "1/200, 7 h left")."""
    from influence.counterfactual import lanes as lanes_module

    run = copy_run(toy_run, tmp_path, keep_results=False)
    estimate(run, ["dloss"])
    replayed = []  # every lane-step the replays take, counted where they are taken
    tick = lanes_module._Progress.__call__
    monkeypatch.setattr(lanes_module._Progress, "__call__", lambda self, steps=1: (replayed.append(steps),
                                                                                    tick(self, steps))[1])
    reports = []
    spot_check(run, ["dloss"], level="quick", lanes=1, progress=reports.append)
    bar = [p for p in reports if p.stage == "spot check"]
    assert not [p for p in reports if p.stage == "replay"]  # the tasks' own bars go into the check's
    assert [p.done for p in bar] == sorted(p.done for p in bar)
    assert bar[-1].done == bar[-1].total == sum(replayed) > 0
    assert all(p.eta is not None and p.eta >= 0 for p in bar if p.done)


def test_a_set_the_check_draws_twice_is_replayed_once(toy_run, tmp_path, monkeypatch):
    """Where 5% of the checked instances is one image (the concurrency bench's 96 images), the check's random groups
    and extreme sets repeat its singles, and each was replayed again (seven lanes twice a check). A set is now
    replayed once, and every lane that drew it reads that replay's change, which an independent replay confirms."""
    import influence.validation.spotcheck as spotcheck
    from influence.validation import replays

    run = copy_run(toy_run, tmp_path, keep_results=False)
    res = estimate(run, ["dloss"])["dloss"]
    monkeypatch.setitem(spotcheck.SETUP, "full", {**spotcheck.SETUP["full"], "fraction": 1e-4})  # one image a group
    replayed, measure = [], replays.measure_lanes
    monkeypatch.setattr(replays, "measure_lanes", lambda ctx, trace, lanes, *a, **k: (
        replayed.extend(tuple(lane.removed.tolist()) for lane in lanes), measure(ctx, trace, lanes, *a, **k))[1])
    check = spot_check(run, ["dloss"], level="full")
    lanes = check["per_metric"]["dloss"]["lanes"]
    assert len(replayed) == len(set(replayed)) < len(lanes)  # no set twice, and some were drawn twice
    by_set: dict = {}
    for lane in lanes:
        by_set.setdefault(lane["predicted"], set()).add(lane["actual"])
    assert all(len(actual) == 1 for actual in by_set.values())
    top = int(np.argmax(np.abs(res.scores)))  # a top single, and also its side's extreme set
    assert sum(lane["predicted"] == res.scores[top] for lane in lanes) >= 2
    trace = Trace.load(run)
    ctx = RunContext.create(load_run_config(run), run.root)
    final = trace.layout.split(torch.from_numpy(np.array(trace.final_state)))
    after = replay_state(ctx, trace, np.array([top]))
    expected = _metric(ctx, trace, after, "valid", "dloss") - _metric(ctx, trace, final, "valid", "dloss")
    (actual,) = {lane["actual"] for lane in lanes if lane["predicted"] == res.scores[top]}
    assert actual == pytest.approx(expected, rel=1e-6, abs=1e-12)
