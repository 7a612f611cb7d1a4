"""The paper's experiments: accuracy numbers, leave-one-out replays, stored validations, the sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from influence.context import RunContext, load_run_config
from influence.errors import ConfigError
from influence.estimator import estimate
from influence.train import Trace, replay, train
from influence.validation import (
    accuracy_numbers,
    jaccard_top,
    leave_one_out,
    select_ids,
    stored_sweeps,
    stored_validations,
    summarize_sweep,
    sweep,
    validate,
)

from _helpers import LOWER_KERNELS, copy_run, toy_config


def test_jaccard_top_by_hand():
    est = np.array([5.0, -3, 0.1, 0.2, 9, -8, 0.0, 0.3])
    act = np.array([4.0, 0.2, 0.1, -3, 9, -8, 0.0, 0.3])
    # k=1: {most negative, most positive} = {5, 4} for both
    assert jaccard_top(est, act, 1) == 1.0
    # k=2: est {5, 1} | {0, 4}; act {5, 3} | {0, 4} -> |{0,4,5}| / |{0,1,3,4,5}| = 3/5
    assert jaccard_top(est, act, 2) == pytest.approx(3 / 5)


def test_accuracy_numbers_equal_scipy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(60)
    b = a + 0.3 * rng.standard_normal(60)
    tau, r, jac = accuracy_numbers(a, b)
    assert tau == pytest.approx(stats.kendalltau(a, b)[0])
    assert r == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-12)
    assert jac == jaccard_top(a, b, 3)
    assert accuracy_numbers(a, a)[0] == pytest.approx(1.0)
    assert accuracy_numbers(a, -a)[0] == pytest.approx(-1.0)


def test_select_ids():
    traced = np.zeros(100, dtype=bool)
    traced[10:60] = True
    assert select_ids(100, 5, "first", 0, traced).tolist() == [10, 11, 12, 13, 14]
    r1, r2 = select_ids(100, 8, "random", 1, traced), select_ids(100, 8, "random", 1, traced)
    assert np.array_equal(r1, r2) and np.all(traced[r1]) and np.all(np.diff(r1) > 0)
    assert not np.array_equal(r1, select_ids(100, 8, "random", 2, traced))
    with pytest.raises(ConfigError, match=r"n must lie in 5..50"):
        select_ids(100, 51, "first", 0, traced)
    with pytest.raises(ConfigError, match="n must lie"):
        select_ids(100, 4, "first", 0, traced)
    with pytest.raises(ConfigError, match="selection must be one of"):
        select_ids(100, 5, "best", 0, traced)


def test_leave_one_out_equals_replays_by_hand(toy_run, tmp_path, monkeypatch):
    run = copy_run(toy_run, tmp_path)
    ids = np.array([0, 77, 1500])
    actual, seconds, _ = leave_one_out(run, ["all", "dloss"], ids)
    assert actual.shape == (2, 3) and seconds > 0
    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, run.root)
    trace = Trace.load(run)
    valid = ctx.evaluator("valid")
    base = valid.evaluate(*trace.split(torch.from_numpy(np.array(trace.final))))
    for i, j in enumerate(ids):
        after = valid.evaluate(*replay(ctx, trace, [int(j)]))  # from the first traced step
        for k, m in enumerate(("all", "dloss")):
            assert actual[k, i] == pytest.approx(after[m] - base[m], rel=1e-9, abs=1e-15)
    # finished instances are kept on disk: asking again replays nothing
    import influence.validation.loo as v

    monkeypatch.setattr(v, "lane_tasks", lambda *a, **k: pytest.fail("replayed again"))
    again, seconds_again, _ = leave_one_out(run, ["all", "dloss"], ids)
    assert np.array_equal(again, actual)
    # ... and reports what the replays cost, not the ~0 s of reading them back
    assert seconds <= seconds_again < seconds + 5


def test_replays_in_worker_processes_equal_replays_here(toy_run, tmp_path):
    ids = np.arange(0, 2000, 125)  # 16 instances spread over the traced epoch
    here, _, _ = leave_one_out(copy_run(toy_run, tmp_path / "a"), ["all", "dloss"], ids, workers=1, lanes=1)
    reports = []
    run = copy_run(toy_run, tmp_path / "b")
    there, _, _ = leave_one_out(run, ["all", "dloss"], ids, progress=reports.append, workers=2, lanes=1)
    assert np.array_equal(here, there)  # same thread count in the workers: bit for bit
    done = [p.done for p in reports]  # the two workers' replays on one bar that never goes back
    assert done == sorted(done) and set(done) == set(range(17)) and reports[-1].total == 16


def test_lanes_share_tasks_so_that_every_local_worker_gets_some():
    """10 lanes a task, unless fewer (never below 2) give more workers MIN_TASKS_PER_WORKER tasks each."""
    from influence.execution import local_workers
    from influence.validation.replays import PER_TASK, shared_size

    assert shared_size(33, 1) == PER_TASK and shared_size(500, 2) == PER_TASK  # one worker; enough tasks already
    assert shared_size(33, 2) == 4 and local_workers(-(-33 // 4), 2) == 2  # 32 groups and lane 0: 9 tasks, 2 workers
    assert shared_size(33, 8) == 2  # 8 workers would want 1-lane tasks: 2 a task, 17 tasks, 4 workers
    assert shared_size(17, 2) == 2 and shared_size(12, 2) == PER_TASK  # 12 lanes: 6 tasks keep one worker anyway
    for lanes in range(1, 200):
        for capacity in (1, 2, 3, 8, 16):
            size = shared_size(lanes, capacity)
            assert 2 <= size <= PER_TASK
            if size < PER_TASK:  # shrunk only where that gives more workers
                assert local_workers(-(-lanes // size), capacity) > local_workers(-(-lanes // PER_TASK), capacity)


def test_a_checkpointed_trace_shares_its_lanes_among_the_local_workers(tmp_path, monkeypatch):
    """Leave-one-out of 16 images on a checkpointed trace: 2 tasks of 10 and 6 ran in one process while the other
    cores idled; now 8 tasks of 2 on two worker processes, with the same changes bit for bit."""
    from influence import execution
    from influence.config import apply_overrides

    cfg = apply_overrides(toy_config(), ["train.trace_mode=checkpoints", "train.checkpoint_every=25"])
    run = train(cfg, tmp_path / "store")
    ids = np.arange(0, 2000, 125)
    here, _, _ = leave_one_out(copy_run(run, tmp_path / "a"), ["all"], ids, workers=1, lanes=1)  # one at a time
    chosen, local_workers = [], execution.local_workers
    monkeypatch.setattr(execution, "local_workers",
                        lambda tasks, workers=None: chosen.append((tasks, workers)) or local_workers(tasks, workers))
    there, _, _ = leave_one_out(copy_run(run, tmp_path / "b"), ["all"], ids, workers=2, lanes=1)
    assert chosen == [(8, 2)]
    assert np.array_equal(here, there)


def test_replays_on_workers_with_another_processor_say_so_and_replay_lane_0(toy_run, tmp_path, monkeypatch):
    """Workers whose kernels are a lesser processor's (as a cluster's other machines may be): each replay records
    their processor's sentence, not this process's clean conditions, and replays lane 0 there (the recorded final
    state is this processor's), so its changes still equal those replayed here, to rounding."""
    from influence import conditions, execution

    lower = LOWER_KERNELS.get(torch.backends.cpu.get_cpu_capability())
    if lower is None:
        pytest.skip(f"no lesser kernels than {torch.backends.cpu.get_cpu_capability()} for the workers")
    ids = np.arange(0, 2000, 250)  # 8 instances spread over the traced epoch
    from_trace, run_tasks = [], execution.Executor.run  # whether each task's lane 0 was the recorded trajectory
    monkeypatch.setattr(execution.Executor, "run", lambda self, *a: (
        from_trace.append(result.baseline_from_trace) or (group, result) for group, result in run_tasks(self, *a)))
    here, _, said_here = leave_one_out(copy_run(toy_run, tmp_path / "a"), ["all"], ids, workers=1, lanes=1)
    assert set(from_trace) == {True}
    from_trace.clear()
    assert said_here == []  # trained in this process's conditions
    conditions.processor("cpu")  # this process's, read before the workers' variables are set
    for k, v in lower.items():
        monkeypatch.setenv(k, v)  # the worker processes start with them
    run = copy_run(toy_run, tmp_path / "b")
    there, _, said = leave_one_out(run, ["all"], ids, workers=2, lanes=1)
    (line,) = said
    assert f"ATEN_CPU_CAPABILITY={lower['ATEN_CPU_CAPABILITY']}" in line.split(", training ran on")[0]
    # lane 0 replayed there (on some processors, such as an AVX2 EPYC, these kernels give the same numbers)
    assert set(from_trace) == {False}
    np.testing.assert_allclose(there, here, rtol=1e-6, atol=1e-12)
    kept = run.read_json("validate/_partial/loo-replays.json")["replays"]
    assert all(replay["warnings"] == [line] for replay in kept.values())


def test_cancelling_parallel_replays_keeps_the_finished_ones(toy_run, tmp_path):
    from influence.errors import Cancelled
    from influence.progress import CancelToken

    run = copy_run(toy_run, tmp_path)
    ids = np.arange(0, 2000, 50)  # 40 instances
    token = CancelToken()

    partial = "validate/_partial/loo-replays.json"

    def cancel_after_a_few(p):
        # by the replays saved, not the bar: the bar also counts the running tasks' shares (`BatchProgress`)
        if run.exists(partial) and len(run.read_json(partial)["replays"]) >= 10:
            token.set()

    with pytest.raises(Cancelled):
        leave_one_out(run, ["all"], ids, progress=cancel_after_a_few, cancel=token, workers=2, lanes=1)
    kept = run.read_json(partial)["replays"]
    assert 10 <= len(kept) < len(ids)  # saved after every task
    # the next call computes the rest: the same as an uninterrupted run
    again, _, _ = leave_one_out(run, ["all"], ids, workers=1, lanes=1)
    by_hand, _, _ = leave_one_out(copy_run(toy_run, tmp_path / "fresh"), ["all"], ids, workers=1, lanes=1)
    assert np.array_equal(again, by_hand)


def test_a_later_leave_one_out_replays_only_what_no_earlier_one_did(toy_run, tmp_path, monkeypatch):
    """Replays are kept per instance with every metric: validating another metric, or more instances, replays
    only the new ones, with the changes a fresh computation gives; a file of the older format is replayed again."""
    import influence.validation.loo as v

    run = copy_run(toy_run, tmp_path / "a")
    ids = np.array([3, 40, 77, 1500, 1900])
    first, seconds, _ = leave_one_out(run, ["all"], ids[:3], lanes=1)
    replayed = []
    real = v.lane_tasks
    monkeypatch.setattr(v, "lane_tasks", lambda run_, ctx, trace, lanes_, *a: replayed.append(
        [int(lane.removed[0]) for lane in lanes_]) or real(run_, ctx, trace, lanes_, *a))
    both, _, _ = leave_one_out(run, ["dloss", "all"], ids, lanes=1)
    assert replayed == [[1500, 1900]]  # the first three were scored on every metric already
    assert np.array_equal(both[1, :3], first[0])
    fresh, _, _ = leave_one_out(copy_run(toy_run, tmp_path / "b"), ["dloss", "all"], ids, lanes=1)
    assert np.array_equal(both, fresh)
    replayed.clear()
    again, total, _ = leave_one_out(run, ["all"], ids[:3], lanes=1)
    assert replayed == [] and np.array_equal(again, first) and total == pytest.approx(seconds)  # what they cost
    old = copy_run(toy_run, tmp_path / "c")  # a partial file of the earlier format is not read
    old.write_json("validate/_partial/loo-replays.json", {"3": [0.25]})
    assert np.array_equal(leave_one_out(old, ["all"], ids[:1], lanes=1)[0], first[:, :1])


def test_replays_read_back_keep_saying_they_ran_under_other_conditions(toy_run, tmp_path):
    """Leave-one-out replays made at another thread count than training's keep that warning when a later
    validation, under training's conditions, reads them back; the ones it replays itself add none."""
    run = copy_run(toy_run, tmp_path)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads % 2 + 1)
        earlier = validate(run, ["all"], n=5, lanes=1)["all"].conditions["warnings"]
    finally:
        torch.set_num_threads(threads)
    (line,) = earlier
    assert f"at {threads % 2 + 1} torch threads, training ran at {threads}" in line
    later = validate(run, ["dloss"], n=5, lanes=1)["dloss"]  # the same 5 instances, read back
    assert later.conditions["warnings"] == [line] and later.conditions["now"]["threads"] == threads
    assert validate(copy_run(toy_run, tmp_path / "b"), ["all"], n=5, lanes=1)["all"].conditions["warnings"] == []


def test_validate_on_the_toy_run_stores_what_it_returns(toy_run, tmp_path):
    run = copy_run(toy_run, tmp_path)
    acc = validate(run, ["all", "dloss"], n=25, selection="random", seed=1)
    stored = {s["metric"]: s for s in stored_validations(run)}
    for m in ("all", "dloss"):
        a = acc[m]
        assert np.array_equal(a.estimated, estimate(run, [m])[m].scores[a.ids])
        tau, r, jac = accuracy_numbers(a.estimated, a.actual)
        assert (a.kendall_tau, a.pearson_r, a.jaccard_top10) == (tau, r, jac)
        # the toy's traced epoch runs at lr 1e-3: the estimate ranks the instances almost exactly
        assert a.kendall_tau > 0.9 and a.verdict == "reliable"
        s = stored[m]
        assert s["n"] == 25 and np.array_equal(s["ids"], a.ids)
        assert np.array_equal(s["estimated"], a.estimated) and np.array_equal(s["actual"], a.actual)
        assert s["kendall_tau"] == a.kendall_tau
    with pytest.raises(ConfigError, match="metric 'fid' is not defined for 2D data"):
        validate(run, ["fid"], n=5)


def test_summarize_sweep_against_scipy():
    per_run = pd.DataFrame({
        "method": ["a"] * 3 + ["b"] * 3,
        "count": [10] * 6,
        "change": [-1.0, -2.0, 0.5, 1.0, 1.0, 1.0],
    })
    table = summarize_sweep(per_run, "fid").set_index("method")
    assert table.loc["a", "mean_change_fid"] == pytest.approx(-2.5 / 3)
    assert table.loc["a", "std_change_fid"] == pytest.approx(np.std([-1, -2, 0.5], ddof=1))
    assert table.loc["a", "p_value"] == pytest.approx(stats.ttest_1samp([-1, -2, 0.5], 0).pvalue)
    assert table.loc["a", "improved_in"] == 2  # FID: negative change = improvement
    assert np.isnan(table.loc["b", "p_value"])  # no spread, no test
    assert table.loc["b", "improved_in"] == 0


@pytest.mark.slow
def test_sweep_on_two_toy_seeds(tmp_path):
    configs = [toy_config(seed=s) for s in (0, 1)]
    reports = []
    table = sweep(configs, tmp_path, ["all", "random"], [20, 200], metric="all", progress=reports.append)
    # every stage of every seed reports, labelled with the sweep's place; the sweep counts cleanses
    assert {"train", "influence", "replay", "sweep"} <= {p.stage for p in reports}
    assert all("seed " in p.info["sweep"] for p in reports if p.stage != "sweep")
    assert [p.done for p in reports if p.stage == "sweep"] == list(range(1, 9))
    assert len(table) == 4 and set(table["seeds"]) == {2}
    per_run = pd.read_csv(next((tmp_path / "_sweeps").glob("*/per_run.csv")))
    assert len(per_run) == 8
    [stored] = stored_sweeps(tmp_path)  # what the app shows: the spec, the rows and the same table
    assert stored["spec"]["seeds"] == [0, 1] and stored["spec"]["metric"] == "all" and stored["planned"] == 8
    pd.testing.assert_frame_equal(stored["table"], table)
    assert np.allclose(per_run["change"], per_run["after"] - per_run["before"])
    for (method, count), g in per_run.groupby(["method", "count"]):
        row = table[(table["method"] == method) & (table["count"] == count)].iloc[0]
        assert row["mean_change_all"] == pytest.approx(g["change"].mean())
    with pytest.raises(ConfigError, match="removal count 2000"):
        sweep(configs, tmp_path, ["random"], [2000], metric="all")


def test_validate_over_the_last_k_traced_epochs(tmp_path):
    from influence.estimator import EstimateOptions
    from influence.train import train

    run = train(toy_config(trace_epochs=2), tmp_path)  # 3 epochs of 20 steps, the last 2 traced
    trace = Trace.load(run)
    assert trace.steps == 40
    ctx = RunContext.create(load_run_config(run), run.root)
    valid = ctx.evaluator("valid")
    base = valid.evaluate(*trace.split(torch.from_numpy(np.array(trace.final))))["all"]
    by_k = {k: validate(run, ["all"], n=6, selection="random", seed=3, trace_epochs=k)["all"] for k in (1, 2)}
    for k, first in ((1, 20), (2, 0)):
        a = by_k[k]
        est = estimate(run, ["all"], EstimateOptions(last_steps=40 - first))["all"]
        assert np.array_equal(a.estimated, est.scores[a.ids]) and a.growth == est.meta["growth"]
        step_of = trace.step_of_instance(2000, first)
        for i, j in enumerate(a.ids):  # each replay starts at the instance's first step in the window
            after = valid.evaluate(*replay(ctx, trace, [int(j)], start=int(step_of[j])))["all"]
            assert a.actual[i] == pytest.approx(after - base, rel=1e-9, abs=1e-15)
        assert a.trace_epochs == k
    # every instance is seen in each epoch: the same instances, different spans of steps
    assert np.array_equal(by_k[1].ids, by_k[2].ids) and not np.allclose(by_k[1].estimated, by_k[2].estimated)
    stored = {s["key"]: s for s in stored_validations(run)}
    assert {k.split("-")[-1] for k in stored} == {"ep1", "ep2"}
    assert sorted(s["trace_epochs"] for s in stored.values()) == [1, 2]
    with pytest.raises(ConfigError, match="train.trace_epochs of at least 3"):
        validate(run, ["all"], n=6, trace_epochs=3)
    with pytest.raises(ConfigError, match="either trace_epochs or last_steps"):
        validate(run, ["all"], n=6, trace_epochs=1, options=EstimateOptions(last_steps=5))


def test_bad_validation_arguments_are_refused_before_the_estimate(toy_run, tmp_path, monkeypatch):
    """n or a group spec out of range is one error before any work: the estimate may be a whole pass."""
    import influence.validation.groups as groups
    import influence.validation.loo as loo

    def no_estimate(*a, **k):
        raise AssertionError("estimated before checking the arguments")

    monkeypatch.setattr(groups, "estimate", no_estimate)
    monkeypatch.setattr(loo, "estimate", no_estimate)
    run = copy_run(toy_run, tmp_path)
    trace = Trace.load(run)
    n_traced = int((trace.step_of_instance(load_run_config(run).data.n_train) >= 0).sum())
    assert trace.traced_count() == n_traced
    with pytest.raises(ConfigError, match=rf"n must lie in 5..{n_traced} "):
        validate(run, ["all"], n=n_traced + 1)
    with pytest.raises(ConfigError, match="n must lie"):
        validate(run, ["all"], n=2)
    with pytest.raises(ConfigError, match="groups must lie in 5..1000"):
        groups.validate_groups(run, ["all"], groups.GroupSpec(groups=0))
    with pytest.raises(ConfigError, match="fractions must lie strictly between 0 and 1, got 2"):
        groups.validate_groups(run, ["all"], groups.GroupSpec(groups=5, fractions=(2.0,)))
