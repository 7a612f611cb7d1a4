"""train.trace_lr (issue 24): the traced epochs' learning rate chosen by measurement, or checked beside a user's.

The probe's growth is checked against an actual estimate over the same steps (a run traced at the chosen rate,
whose first traced steps are the probe's segment), its extrapolation against a growth known in closed form."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from influence import store, tracelr
from influence.cli import main
from influence.cli.training import print_probe
from influence.context import RunContext
from influence.counterfactual import Lane, LanePlan, replay_lanes
from influence.estimator import GROWTH_DOUBTFUL, EstimateOptions, estimate
from influence.train import TRACE_LR_RECORD, Trace, chosen_traced_lr, initial_train_state, train, train_without
from influence.validation.spotcheck import spot_check
from influence.validation.trust import measured_sentence

from _helpers import toy_config


def _toy(**train_fields):
    """The 2D toy at lr 1.0 throughout: the probe's first rung is unreliable there, the second is not."""
    cfg = toy_config()
    fields = {"lr_d": 1.0, "lr_g": 1.0, "lr_schedule": (), "trace_lr": "auto", "trace_lr_probe_steps": 20,
              **train_fields}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **fields))


def test_extrapolation_follows_a_steady_growth_per_step():
    r, S, T = 1.3, 12, 200
    total = np.array([r ** (S - t) for t in range(S + 1)])  # index = step; the pass starts at the end (|u| = 1)
    growth, rate, far = tracelr.extrapolate(total, T)
    assert (growth, rate, far) == pytest.approx((r**S, r, r**T), rel=1e-9)
    # an adjoint that starts (near) zero fills up in one step, then grows steadily: the rate is fitted after it
    filled = np.concatenate([total[:-1] / r, [1e-3]])
    assert tracelr.extrapolate(filled, T) == pytest.approx((1e3 * r ** (S - 1), r, 1e3 * r ** (T - 1)), rel=1e-9)
    # steps not walked (a walk stopped early) are nan and left out; a shrinking |u| extrapolates to no growth
    stopped = np.concatenate([[np.nan] * 5, total[5:]])
    assert tracelr.extrapolate(stopped, T) == pytest.approx((r ** (S - 5), r, r ** (T - 0)), rel=1e-9)
    shrinking = 1 / total
    assert tracelr.extrapolate(shrinking, T) == (1.0, 1.0, 1.0)


def test_the_probe_measures_the_growth_an_estimate_reports_on_the_same_steps(tmp_path):
    cfg = _toy()  # probe segments as long as the traced epoch: the chosen rung's segment is the trace itself
    run = train(cfg, tmp_path)
    probe = run.read_json("summary.json")["trace_lr"]
    assert probe == run.read_json(TRACE_LR_RECORD) and probe["mode"] == "auto" and probe["warning"] is None
    first, stable, chosen = probe["rungs"]
    assert first["lr_d"] == 1.0 and first["stopped_early"] and first["verdict"] != "reliable"
    # 1/sqrt(10) keeps |u| under the bar, but its most harmful 5% moved ALL the other way: refused on the replay
    assert stable["extrapolated"] < GROWTH_DOUBTFUL and not stable["replayed"]["agrees"]
    assert stable["replayed"]["predicted"] > 0 > stable["replayed"]["actual"]
    assert "1 larger stable rate refused on the replay: at 0.316 the most harmful 100 moved ALL" in probe["reason"]
    assert probe["chosen"] == [chosen["lr_d"], chosen["lr_g"]] == pytest.approx([0.1] * 2)
    assert chosen["extrapolated"] == chosen["growth"] < GROWTH_DOUBTFUL and probe["reliable"]
    trace = Trace.load(run)
    assert np.all(trace.lrs == chosen["lr_d"])  # the traced epoch ran at the pick
    results = estimate(run, ["all", "dloss"], EstimateOptions())
    assert chosen["growth"] == pytest.approx(max(r.meta["growth"] for r in results.values()), rel=1e-9)
    # the pick's replay is what the estimate of the run and a replay of its trace give: the same 5%, the same change
    replayed, scores = chosen["replayed"], results["all"].scores
    harmful = np.argsort(-scores, kind="stable")[: replayed["size"]]
    assert replayed["predicted"] == pytest.approx(scores[harmful].sum(), rel=1e-9)
    ctx = RunContext.create(cfg, tmp_path)
    valid = ctx.evaluator("valid")
    outcome = replay_lanes(ctx, trace, [Lane.of(harmful)],
                           lambda s: valid.evaluate(s.theta_d, s.eval_generator(False), ("all",))["all"],
                           LanePlan("sequential", 1, "test"))
    # the probe took lane 0 from its segment's trajectory, this replay replays it: the same change, bit for bit
    assert replayed["actual"] == outcome.values[0] - outcome.baselines[0]
    assert replayed["agrees"] and 1 / 3 <= replayed["actual"] / replayed["predicted"] <= 3
    assert probe["cost"]["ratio"] == pytest.approx(probe["seconds"] / probe["traced_seconds"])
    replays = [r["replayed"]["seconds"] for r in probe["rungs"] if "replayed" in r]  # the refused rung's and the pick's
    assert len(replays) == 2 and probe["cost"]["replay_seconds"] == sum(replays)
    assert (f"its 2 replays of the epoch, each without a rung's most harmful 5%, took {sum(replays):.1f} s"
            in probe["cost"]["sentence"])
    assert probe["traced_seconds"] == pytest.approx(run.read_json("history.json")[-1]["seconds"])
    # a retraining (cleanse's) keeps the pick: with nothing removed it is the run, bit for bit
    theta_d, _ = train_without(ctx, [], traced_lr=chosen_traced_lr(cfg, trace))
    assert np.array_equal(theta_d.numpy(), trace.final[: trace.n_d])
    assert not np.array_equal(train_without(ctx, [])[0].numpy(), trace.final[: trace.n_d])


def test_the_picks_walk_is_stored_as_the_runs_influence_pass_when_its_segment_is_the_trace(tmp_path, capsys):
    cfg = _toy()  # one traced epoch, walked whole by the pick's segment: training keeps it as the traced epoch
    run = train(cfg, tmp_path / "a")
    probe = run.read_json("summary.json")["trace_lr"]
    assert probe["influence"]["metrics"] == ["all", "dloss"] and run.read_json(TRACE_LR_RECORD) == probe
    print_probe(probe)
    assert "influence on ALL and D-loss stored from the probe's walk of these very steps" in capsys.readouterr().out
    adopted = {m: run.read_json(f"influence/{m}-float64-v1/meta.json") for m in ("all", "dloss")}
    assert all(meta["source"].startswith("the trace-lr probe's walk") for meta in adopted.values())
    replayed = probe["rungs"][-1]["replayed"]  # the pick's: ALL's most harmful 5% replayed over the same steps
    assert (f"the probe's replay of the epoch without this estimate's most harmful 5%: the most harmful "
            f"{replayed['size']} moved ALL by {replayed['actual']:+.3g}") in adopted["all"]["source"]
    assert "replay" not in adopted["dloss"]["source"]
    # against an estimate of a copy of the run without them: the same pass, bit for bit
    shutil.copytree(run.dir, tmp_path / "b" / run.run_id, ignore=shutil.ignore_patterns("influence"))
    copy = store.open_run(tmp_path / "b", run.run_id)
    fresh = estimate(copy, ["all", "dloss"], EstimateOptions())
    for m, result in fresh.items():
        folder = f"influence/{m}-float64-v1"
        assert "source" not in result.meta
        for name in ("scores", "window_scores", "flags", "u_norms", "state_norms"):
            assert np.array_equal(run.read_npy(f"{folder}/{name}.npy"), copy.read_npy(f"{folder}/{name}.npy")), name
        same = {k: v for k, v in result.meta.items() if k != "seconds"}
        assert {k: v for k, v in adopted[m].items() if k not in ("seconds", "source", "probe_replay")} == same
    assert estimate(run, ["all", "dloss"], EstimateOptions())["all"].meta["source"] == adopted["all"]["source"]
    assert adopted["all"]["probe_replay"] == replayed and "probe_replay" not in adopted["dloss"]
    # its spot check takes that replay for ALL's most harmful set over the whole trace; the copy's replays it
    taken, again = (spot_check(r, ["all"], level="quick") for r in (run, copy))
    assert taken["probe_lanes"] == ["all"] and again["probe_lanes"] == []
    lanes = [a["per_metric"]["all"]["lanes"] for a in (taken, again)]
    harmful = [next(lane for lane in a if lane["kind"] == "high") for a in lanes]
    assert harmful[0] == {"kind": "high", "size": replayed["size"], "predicted": replayed["predicted"],
                          "actual": replayed["actual"], "first_step": 0}
    assert [lane["actual"] for lane in lanes[0]] == pytest.approx([lane["actual"] for lane in lanes[1]], rel=1e-9)
    assert spot_check(run, ["all", "dloss"], level="quick")["probe_lanes"] == ["all"]  # D-loss's added to the file
    assert "the trace-lr probe replayed it in training" in measured_sentence("all", taken, taken["per_metric"]["all"])


def test_the_picks_segment_is_kept_as_the_traced_epoch_and_equals_training_it_again(tmp_path, monkeypatch, capsys):
    kept = train(_toy(), tmp_path / "a")
    probe = kept.read_json(TRACE_LR_RECORD)
    assert probe["epoch_kept"] and probe["cost"]["added_seconds"] == pytest.approx(
        probe["seconds"] - probe["traced_seconds"])
    print_probe(probe)
    assert "its segment at the pick is the traced epoch (trained once, inside the probe)" in capsys.readouterr().out
    monkeypatch.setattr("influence.train.run._probe_segment", lambda *args: None)  # train the epoch again
    again = train(_toy(), tmp_path / "b")
    assert not again.read_json(TRACE_LR_RECORD)["epoch_kept"]
    for name in ("trace/states", "trace/batches", "trace/z", "trace/lrs", "trace/kinds", "trace/counts",
                 "trace/stored_steps", "trace/final_state", "weights/final", "influence/all-float64-v1/scores"):
        assert np.array_equal(kept.read_npy(f"{name}.npy"), again.read_npy(f"{name}.npy")), name
    history = kept.read_json("history.json")
    assert history[-1]["probe_segment"] and not any("probe_segment" in e for e in history[:-1])
    drop = lambda h: [{k: v for k, v in e.items() if k not in ("seconds", "probe_segment")} for e in h]  # noqa: E731
    assert drop(history) == drop(again.read_json("history.json"))
    assert kept.read_json("summary.json")["test"] == again.read_json("summary.json")["test"]


def test_a_trace_that_starts_inside_the_epoch_trains_the_whole_epoch_after_the_probe(tmp_path):
    run = train(_toy(trace_steps=5, trace_lr_probe_steps=None), tmp_path)  # the last 5 of the epoch's 20 steps
    probe, history = run.read_json(TRACE_LR_RECORD), run.read_json("history.json")
    # the probe's segments were the epoch's first 5 steps: the epoch trained whole after it, its last 5 traced
    assert not probe["epoch_kept"] and "probe_segment" not in history[-1] and "influence" not in probe
    trace = Trace.load(run)
    assert trace.steps == 5 and trace.first_step == 20 * len(history) - 5 and np.all(trace.lrs == probe["chosen"][0])


def test_a_run_killed_after_its_last_epoch_keeps_its_probe_record(tmp_path, monkeypatch):
    from influence.train import run as train_run

    finish = train_run._finish

    def killed(*args):
        raise RuntimeError("killed before the run's files were written")

    monkeypatch.setattr(train_run, "_finish", killed)
    with pytest.raises(RuntimeError):
        train(_toy(), tmp_path)
    monkeypatch.setattr(train_run, "_finish", finish)
    resumed = train(_toy(), tmp_path)  # from the last epoch's checkpoint: nothing left to train
    probe = resumed.read_json("summary.json")["trace_lr"]
    assert probe == resumed.read_json(TRACE_LR_RECORD) and probe["epoch_kept"]
    assert probe["traced_seconds"] == resumed.read_json("history.json")[-1]["seconds"]
    assert np.all(Trace.load(resumed).lrs == probe["chosen"][0])
    assert "influence" not in probe  # the walk was in the killed process's memory: an estimate runs the pass


def test_a_longer_trace_never_gets_a_larger_rate(tmp_path, monkeypatch):
    monkeypatch.setattr(tracelr, "_spot_check", lambda *args: None)  # the subject here is the pick alone
    cfg = _toy(trace_lr_probe_steps=10)
    ctx = RunContext.create(cfg, tmp_path)
    state = initial_train_state(ctx)
    probes = [tracelr.probe_traced_lr(ctx, state, 1, torch.Generator().manual_seed(cfg.seed), traced)
              for traced in (10, 100, 1000, 10_000)]
    picks = [p.chosen[0] for p in probes]
    assert picks == sorted(picks, reverse=True) and picks[-1] < picks[0], picks
    for p in probes:  # every rung above the pick fails, the pick passes (or is the last resort)
        assert not any(tracelr.passes(r) for r in p.rungs[:-1]) and tracelr.passes(p.rungs[-1]) == p.reliable
    for p in probes[1:]:  # a segment that did not grow past the bar is confirmed (a 10-step trace is its segment)
        assert all(("confirmed" in r) == (r["growth"] < GROWTH_DOUBTFUL) for r in p.rungs)
    for p in probes[1:]:  # the same segments measured alike: growth per rung does not depend on the trace's length
        for a, b in zip(probes[0].rungs, p.rungs):
            assert (a["growth"], a["rate"], a["walked"]) == (b["growth"], b["rate"], b["walked"])


def test_a_users_rate_is_kept_and_warned_about_when_far_above_the_probes(tmp_path, capsys):
    cfg = _toy(trace_lr="check")
    run = train(cfg, tmp_path)
    probe = run.read_json("summary.json")["trace_lr"]
    assert np.all(Trace.load(run).lrs == 1.0)  # kept
    # the pick's walk is of other steps than the trace's (0.1 against 1.0): no pass is taken from it
    assert "influence" not in probe and not run.exists("influence")
    assert probe["user_lr"] == [1.0, 1.0] and probe["chosen"][0] == pytest.approx(0.1)
    assert probe["warning"].startswith("the traced epochs' rate lr_D 1 is 10x the largest the probe found reliable")
    assert main(["--store", str(tmp_path), "estimate", "--run", run.run_id, "--metric", "all"]) == 0
    assert f"  warning: {probe['warning']}" in capsys.readouterr().out.splitlines()
    assert main(["--store", str(tmp_path), "estimate", "--run", run.run_id, "--metric", "all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["all"]["trace_lr_warning"] == probe["warning"]
    # the schedule's rate (the default of a train run): no probe, nothing to warn about
    plain = train(_toy(trace_lr="schedule"), tmp_path)
    assert "trace_lr" not in plain.read_json("summary.json") and not plain.exists(TRACE_LR_RECORD)


def test_a_users_stable_rate_whose_harmful_set_did_not_move_as_predicted_is_warned_about(tmp_path):
    # trained at 1.0 as in the first test, the traced epoch at the user's 1/sqrt(10): the rung refused on its replay
    run = train(_toy(lr_schedule=((3, 10**-0.5, 10**-0.5),), trace_lr="check"), tmp_path)
    probe = run.read_json("summary.json")["trace_lr"]
    users = probe["rungs"][0]
    assert users["growth"] < GROWTH_DOUBTFUL and not users["replayed"]["agrees"]
    assert probe["chosen"][0] == pytest.approx(0.1) and probe["reliable"]
    assert probe["warning"].startswith("the traced epochs' rate lr_D 0.316 is 3.16x the largest the probe found "
                                       "reliable (0.1): at 0.316 the most harmful 100 moved ALL by ")
    assert probe["warning"].endswith("so group predictions will be only indicative; train.trace_lr=auto would use "
                                     "the probe's rate")


def test_a_users_rate_with_nothing_reliable_below_it_is_warned_about(tmp_path, monkeypatch):
    monkeypatch.setattr(tracelr, "RUNGS", 1)  # the ladder is the user's rate alone, which the toy at 1.0 fails
    run = train(_toy(trace_lr="check"), tmp_path)
    probe = run.read_json("summary.json")["trace_lr"]
    assert not probe["reliable"] and probe["chosen"] == probe["user_lr"] == [1.0, 1.0]
    assert probe["warning"].startswith("the traced epochs' rate lr_D 1 is not reliable (|u| extrapolates to ")
    assert "no rate the probe tried down to 1 is" in probe["warning"]


def test_a_rate_a_short_segment_vouches_for_is_refused_on_the_epochs_growth(tmp_path, capsys):
    # at 0.5 / sqrt(10) the toy's first 3 traced steps extrapolate to a growth under the threshold, its 20-step
    # epoch grows past it (as folder32's 13 steps read 7.8 where its epoch grew 689-fold)
    cfg = _toy(lr_d=0.5, lr_g=0.5, trace_lr_probe_steps=3)
    run = train(cfg, tmp_path)
    probe = run.read_json("summary.json")["trace_lr"]
    failed, refused, chosen = probe["rungs"]
    # a segment grown under the bar leaves the verdict to the epoch's walk, whatever it extrapolates to
    assert failed["growth"] < GROWTH_DOUBTFUL <= failed["extrapolated"]
    assert failed["confirmed"]["extrapolated"] >= GROWTH_DOUBTFUL and failed["confirmed"]["stopped_early"]
    assert refused["extrapolated"] < GROWTH_DOUBTFUL <= refused["confirmed"]["extrapolated"]
    assert refused["verdict"] != "reliable" and refused["confirmed"]["steps"] == 20 == probe["traced_steps"]
    assert probe["chosen"] == [chosen["lr_d"], chosen["lr_g"]] == pytest.approx([0.05] * 2)
    assert "2 larger rates walked over the epoch and refused" in probe["reason"] and probe["reliable"]
    print_probe(probe)  # the CLI's table: the epoch's growth beside the segment's, the spot check's LDS
    rows = capsys.readouterr().out.splitlines()
    assert "over the epoch  harmful 5% actual/predicted  verdict" in rows[2]
    assert rows[3].split()[5] == f"{failed['confirmed']['extrapolated']:.3g}"
    assert rows[4].split()[5] == f"{refused['confirmed']['extrapolated']:.3g}"
    assert rows[5].split()[5] == f"{chosen['confirmed']['extrapolated']:.3g}" and rows[5].endswith("reliable")
    assert "spot check at the chosen rate" in rows[6] and "LDS, Spearman over random groups:" in rows[6]
    # the confirmed figure is the growth the estimate of the trace reports: the walk was over the same steps
    results = estimate(run, ["all", "dloss"], EstimateOptions())
    growth = max(r.meta["growth"] for r in results.values())
    assert chosen["confirmed"]["growth"] == chosen["confirmed"]["extrapolated"] == pytest.approx(growth, rel=1e-9)
    # without the confirmation the short segment picks the refused rate, and the estimate of that trace says so
    unconfirmed = train(_toy(lr_d=0.5, lr_g=0.5, trace_lr_probe_steps=3, trace_lr_confirm="off"), tmp_path)
    assert unconfirmed.run_id != run.run_id
    assert unconfirmed.read_json("summary.json")["trace_lr"]["chosen"] == [refused["lr_d"], refused["lr_g"]]
    results = estimate(unconfirmed, ["all", "dloss"], EstimateOptions())
    assert max(r.meta["growth"] for r in results.values()) >= GROWTH_DOUBTFUL
    # the switch only names runs that probe
    plain = _toy(trace_lr="schedule")
    assert plain.run_id == dataclasses.replace(plain, train=dataclasses.replace(plain.train,
                                                                                 trace_lr_confirm="off")).run_id


def test_a_confirmation_stored_as_checkpoints_measures_what_snapshots_do(tmp_path, monkeypatch):
    monkeypatch.setattr(tracelr, "_spot_check", lambda *args: None)
    probes = []
    for storage in ({"trace_mode": "snapshots"}, {"trace_mode": "checkpoints", "checkpoint_every": 6}):
        cfg = _toy(lr_d=0.5, lr_g=0.5, trace_lr_probe_steps=3, **storage)
        ctx = RunContext.create(cfg, tmp_path)
        probes.append(tracelr.probe_traced_lr(ctx, initial_train_state(ctx), 1,
                                              torch.Generator().manual_seed(cfg.seed), 20))
    snap, ckpt = ([r["confirmed"] for r in p.rungs] for p in probes)
    for a, b in zip(snap, ckpt, strict=True):
        assert (a["growth"], a["walked"], a["extrapolated"]) == (b["growth"], b["walked"], b["extrapolated"])


def test_a_rate_a_short_segment_over_reads_is_walked_over_the_epoch_and_kept(tmp_path, monkeypatch):
    # at 0.4 the toy's first 2 traced steps grow |u| 1.3-fold but extrapolate to 18, past the threshold, while its
    # 20-step epoch grows 5.5-fold (as dcgan32's 8-step screens over-read its epochs)
    monkeypatch.setattr(tracelr, "_spot_check", lambda *args: None)
    probes = {}
    for confirm in ("measured", "passed"):
        cfg = _toy(lr_d=0.4, lr_g=0.4, trace_lr_probe_steps=2, trace_lr_confirm=confirm)
        ctx = RunContext.create(cfg, tmp_path)
        probes[confirm] = tracelr.probe_traced_lr(ctx, initial_train_state(ctx), 1,
                                                  torch.Generator().manual_seed(cfg.seed), 20)
    kept, screened = probes["measured"].rungs[0], probes["passed"].rungs[0]
    assert kept["growth"] == screened["growth"] < GROWTH_DOUBTFUL <= kept["extrapolated"] == screened["extrapolated"]
    assert kept["confirmed"]["steps"] == 20 and kept["confirmed"]["extrapolated"] < GROWTH_DOUBTFUL
    assert probes["measured"].chosen == (0.4, 0.4) and probes["measured"].reliable
    assert "confirmed" not in screened and probes["passed"].chosen[0] == pytest.approx(0.4 * 10**-0.5)
    # the value of the bool this setting was names runs as before: a run probed then keeps its id
    cfg = _toy()
    for value, legacy in (("passed", True), ("off", False)):
        now = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, trace_lr_confirm=value))
        assert now.identity()["train"]["trace_lr_confirm"] is legacy
        stored = now.to_dict()
        stored["train"]["trace_lr_confirm"] = legacy
        assert type(now).from_dict(stored) == now
    assert cfg.identity()["train"]["trace_lr_confirm"] == "replayed"
