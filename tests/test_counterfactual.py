"""Replay lanes: batched (torch.func.vmap) and sequential lanes against plain sequential replays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from influence.config import apply_overrides
from influence.context import RunContext
from influence.counterfactual import Lane, LanePlan, replay_lanes
from influence.counterfactual.lanes import first_steps
from influence.counterfactual.plan import choose_plan, reproduces_training
from influence.errors import ConfigError
from influence.train import Trace, replay_state, train

from _helpers import LOWER_KERNELS, toy_config

SEQUENTIAL, BATCHED = LanePlan("sequential", 1, ""), LanePlan("batched", 4, "")


@pytest.fixture(scope="module")
def adam_toy(tmp_path_factory):
    """Adam, alternating steps, an EMA generator and a checkpointed trace with a partial last segment."""
    cfg = apply_overrides(toy_config(), ["train.optimizer=adam", "train.betas=0.5,0.999", "train.scheme=alternating",
                                         "train.ema_decay=0.9", "train.trace_mode=checkpoints",
                                         "train.checkpoint_every=7"])
    root = tmp_path_factory.mktemp("adam_toy")
    run = train(cfg, root)
    return RunContext.create(cfg, root), Trace.load(run)


def _lanes(ctx, trace, seed=0):
    rng = np.random.default_rng(seed)
    traced = np.flatnonzero(trace.step_of_instance(ctx.dataset.n_train) >= 0)
    late = np.flatnonzero(trace.step_of_instance(ctx.dataset.n_train) >= trace.steps - 3)
    return ([Lane.of([j]) for j in rng.choice(traced, 5, replace=False)] + [Lane.of(late[:2])]
            + [Lane.of(rng.choice(traced, 60, replace=False)), Lane.of([]), Lane.of([1, 2], weight=0.5)])


@pytest.mark.parametrize("which", ["toy", "adam"])
def test_lanes_equal_sequential_replays(which, toy_run, adam_toy):
    """Every lane equals `replay_state` without its set: sequential lanes bit for bit, batched ones to float64
    rounding; a lane's change is measured against lane 0 of its own replay (several chunks: K=4 < lanes)."""
    if which == "toy":
        from influence.context import load_run_config

        ctx, trace = RunContext.create(load_run_config(toy_run), toy_run.root), Trace.load(toy_run)
    else:
        ctx, trace = adam_toy
    lanes = _lanes(ctx, trace)
    refs = [replay_state(ctx, trace, lane.removed, removed_weight=lane.weight).flat() for lane in lanes]
    final = torch.from_numpy(np.array(trace.final_state))
    flat = lambda s: s.flat().clone()  # noqa: E731
    for plan, from_trace in ((SEQUENTIAL, True), (SEQUENTIAL, False), (BATCHED, False)):
        out = replay_lanes(ctx, trace, lanes, flat, plan, baseline_from_trace=from_trace)
        assert out.baseline_from_trace == from_trace
        for lane, value, base, ref in zip(lanes, out.values, out.baselines, refs):
            change, expected = value - base, ref - final
            if plan.mode == "sequential":
                assert torch.equal(value, ref) and torch.equal(base, final)
            else:
                scale = float(expected.abs().max())
                assert float((value - ref).abs().max()) < 1e-12
                if scale:  # the change itself, to rounding of the state's size (~1e-16 relative)
                    assert float((change - expected).abs().max()) <= 1e-9 * scale + 1e-14
            if not lane.removed.size:
                assert torch.equal(change, torch.zeros_like(change))


def _record_walk(monkeypatch, trace) -> list[int]:
    """The steps of the recorded trajectory recomputed from now on (a `_step` without removal weights), from a
    fresh walk: what an earlier test on this module's trace walked is dropped."""
    import influence.counterfactual.lanes as lanes_mod

    trace.walked = None
    recomputed: list[int] = []
    real = lanes_mod._step
    monkeypatch.setattr(lanes_mod, "_step", lambda c, tr, t, st, w: (recomputed.append(t) if w is None else None,
                                                                      real(c, tr, t, st, w))[1])
    return recomputed


def test_lanes_off_the_trace_recompute_a_segment_once(adam_toy, monkeypatch):
    """Sequential lanes off the recorded trajectory walk it once in order of first removal: 8 lanes starting late in
    one checkpoint segment recompute the segment's steps up to the last start once (before: once a lane), and
    each lane still equals `replay_state` bit for bit."""
    ctx, trace = adam_toy
    t0 = int(trace.stored_steps[-2])  # a full segment of 7 steps
    seen = trace.step_of_instance(ctx.dataset.n_train)
    ids = [int(j) for t in range(t0 + 3, t0 + 7) for j in np.flatnonzero(seen == t)[:2]]
    lanes = [Lane.of([j]) for j in reversed(ids)]  # given out of order
    recomputed = _record_walk(monkeypatch, trace)
    out = replay_lanes(ctx, trace, lanes, lambda s: s.flat().clone(), SEQUENTIAL, baseline_from_trace=True)
    assert recomputed == list(range(t0, t0 + 6))
    monkeypatch.undo()
    for lane, value in zip(lanes[:: len(lanes) - 1], out.values[:: len(lanes) - 1]):
        assert torch.equal(value, replay_state(ctx, trace, lane.removed).flat())


def test_the_next_call_on_a_trace_goes_on_from_its_last_walk(adam_toy, monkeypatch):
    """A check's or a leave-one-out's tasks replay their lanes one call after another on one trace: a call goes on
    from the state the previous one walked to (`trace.walked`), not from the stored state again; a lane starting
    before that state walks from the stored state. Every lane still equals `replay_state` bit for bit."""
    ctx, trace = adam_toy
    t0 = int(trace.stored_steps[-2])  # a full segment of 7 steps
    seen = trace.step_of_instance(ctx.dataset.n_train)
    starts = [t for t in range(t0 + 1, t0 + 7) if (seen == t).any()]  # alternating: G half-steps see no instance
    a, b = starts[0], starts[-1]
    early, late = (int(np.flatnonzero(seen == t)[0]) for t in (a, b))
    recomputed = _record_walk(monkeypatch, trace)
    outs = [replay_lanes(ctx, trace, [Lane.of([j])], lambda s: s.flat().clone(), SEQUENTIAL, baseline_from_trace=True)
            for j in (early, late, early)]
    assert a < b and recomputed == [*range(t0, a), *range(a, b), *range(t0, a)]
    monkeypatch.undo()
    for j, out in zip((early, late, early), outs):
        assert torch.equal(out.values[0], replay_state(ctx, trace, [j]).flat())


def test_lane_zero_from_the_trace_is_measured_once_per_key(toy_run):
    """One-lane tasks (a check's, a leave-one-out's) each took lane 0's measure of the recorded final state again: an
    evaluation per lane besides the lane's. With a measure key the trace keeps it (`Trace.final_measures`), and the
    changes stay those of measuring it every time."""
    from influence.context import load_run_config

    ctx, trace = RunContext.create(load_run_config(toy_run), toy_run.root), Trace.load(toy_run)
    trace.final_measures.clear()
    calls = []

    def flat(s):
        calls.append(1)
        return s.flat().clone()

    lanes = _lanes(ctx, trace)[:4]
    every = [replay_lanes(ctx, trace, [lane], flat, SEQUENTIAL, baseline_from_trace=True) for lane in lanes]
    assert len(calls) == 2 * len(lanes)
    calls.clear()
    once = [replay_lanes(ctx, trace, [lane], flat, SEQUENTIAL, baseline_from_trace=True, measure_key="flat")
            for lane in lanes]
    assert len(calls) == len(lanes) + 1 and set(trace.final_measures) == {"flat"}
    for a, b in zip(every, once):
        assert torch.equal(a.values[0] - a.baseline, b.values[0] - b.baseline)
    assert dataclasses.replace(trace).final_measures == {}  # a copy of the trace keeps none
    trace.final_measures.clear()


def test_progress_counts_every_lane_step_and_evaluation(toy_run):
    """A bar over short lanes stalled at each lane's evaluation: each `measure` call now weighs measure_steps
    lane-steps. Counted apart (the measures and the steps replayed), the bar's last report is its total in
    every way of running lanes, lane 0 from the trace (measured, then known) included."""
    from influence.context import load_run_config
    from influence.counterfactual import first_steps, replayed_steps

    ctx, trace = RunContext.create(load_run_config(toy_run), toy_run.root), Trace.load(toy_run)
    lanes = _lanes(ctx, trace)
    firsts = first_steps(trace, lanes, ctx.dataset.n_train)
    for plan, from_trace, key in ((SEQUENTIAL, True, "flat"), (SEQUENTIAL, True, "flat"), (SEQUENTIAL, False, None),
                                  (BATCHED, False, None)):
        calls, reports = [], []
        measure = lambda s: calls.append(1) or s.flat().clone()  # noqa: E731
        replay_lanes(ctx, trace, lanes, measure, plan, progress=reports.append, baseline_from_trace=from_trace,
                     measure_key=key, measure_steps=7)
        assert [p.done for p in reports] == sorted(p.done for p in reports)
        assert reports[-1].done == reports[-1].total == replayed_steps(trace, firsts) + 7 * len(calls)
    assert len(trace.final_measures) == 1  # the second call read lane 0's measure: counted without it
    trace.final_measures.clear()


def test_batched_lanes_start_at_their_first_removal(toy_run):
    """A lane joins the batch at its first removal as a copy of lane 0: removing an instance seen only in the last
    step changes nothing before it (so only the last step's update differs)."""
    from influence.context import load_run_config

    ctx, trace = RunContext.create(load_run_config(toy_run), toy_run.root), Trace.load(toy_run)
    last = trace.batch(trace.steps - 1)
    seen = trace.step_of_instance(ctx.dataset.n_train)
    only_last = [int(j) for j in last if seen[j] == trace.steps - 1][:1]
    out = replay_lanes(ctx, trace, [Lane.of(only_last)], lambda s: s.flat().clone(), BATCHED)
    ref = replay_state(ctx, trace, only_last, start=trace.steps - 1).flat()
    assert float((out.values[0] - ref).abs().max()) < 1e-12


def test_lane_plan_rules(toy_run, tiny_run):
    from influence.context import load_run_config

    toy = RunContext.create(load_run_config(toy_run), toy_run.root), Trace.load(toy_run)
    tiny = RunContext.create(load_run_config(tiny_run), tiny_run.root), Trace.load(tiny_run)
    assert choose_plan(*toy, 20) .mode == "batched"  # a dense toy: batched on the CPU
    assert choose_plan(*toy, 20).lanes == 20
    assert choose_plan(*toy, 200).lanes == 64  # at most MAX_LANES per pass
    assert choose_plan(*tiny, 20).mode == "sequential"  # a conv net on the CPU: one after another
    assert choose_plan(*tiny, 20, lanes=3) == LanePlan("batched", 3, "asked for")
    assert choose_plan(*toy, 20, lanes=1).mode == "sequential"
    with pytest.raises(ConfigError, match="at least 1"):
        choose_plan(*toy, 20, lanes=0)


def test_recorded_conditions_decide_whether_lane_0_is_the_trace(toy_run):
    from influence.context import load_run_config

    ctx, trace = RunContext.create(load_run_config(toy_run), toy_run.root), Trace.load(toy_run)
    assert reproduces_training(ctx, trace)  # trained in this session, at this thread count
    assert not reproduces_training(ctx, dataclasses.replace(trace, conditions=None))  # not recorded: replayed
    other = {**trace.conditions, "threads": trace.conditions["threads"] + 1}
    assert not reproduces_training(ctx, dataclasses.replace(trace, conditions=other))
    lesser = f"{trace.conditions['processor']} ONEDNN_MAX_CPU_ISA=SSE41"  # (a fixed string matched one host's)
    for chip in ({**trace.conditions, "processor": lesser},  # other kernels
                 {k: v for k, v in trace.conditions.items() if k != "processor"}):  # a run from before the record
        assert not reproduces_training(ctx, dataclasses.replace(trace, conditions=chip))



def test_a_run_trained_on_another_processor_replays_lane_0_here(toy_run, tmp_path):
    """Kernels picked for other vector instructions round differently: the toy run's config trained again with the
    kernels of a lesser processor (a subprocess, the same thread count) has the same id and other weights, and it
    records that processor. Replays here then do not take its recorded final state for lane 0 (that would put the
    two processors' rounding difference into every change): lane 0 is replayed here from the recorded state where
    the lane branches off, as the lane is (both bit for bit `replay_state` from there)."""
    import os
    import subprocess
    import sys

    from influence import conditions, store
    from influence.context import load_run_config

    lower = LOWER_KERNELS.get(torch.backends.cpu.get_cpu_capability())
    if lower is None:
        pytest.skip(f"no lesser kernels than {torch.backends.cpu.get_cpu_capability()} to train with")
    env = {**os.environ, **lower, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    subprocess.run([sys.executable, "-m", "influence", "--store", str(tmp_path), "train", "--config",
                    str(toy_run.path("config.json"))], env=env, check=True, capture_output=True)
    other = store.open_run(tmp_path, toy_run.run_id)  # the same id: the processor is a condition, not the recipe
    assert not np.array_equal(other.read_npy("weights/final.npy"), toy_run.read_npy("weights/final.npy"))
    ctx, trace = RunContext.create(load_run_config(other), other.root), Trace.load(other)
    assert trace.conditions["threads"] == torch.get_num_threads()
    assert trace.conditions["processor"] != conditions.processor("cpu")
    assert f"ATEN_CPU_CAPABILITY={lower['ATEN_CPU_CAPABILITY']}" in trace.conditions["processor"]  # what chose them
    (line,) = conditions.compare(trace.conditions, ctx.device, ctx.dtype, "these replays run")["warnings"]
    assert f"training ran on {trace.conditions['processor']}" in line
    assert not reproduces_training(ctx, trace)
    flat = lambda s: s.flat().clone()  # noqa: E731
    i = int(trace.batch(0)[0])  # in the first traced batch: all traced steps replayed here
    out = replay_lanes(ctx, trace, [Lane.of([i])], flat, SEQUENTIAL,
                       baseline_from_trace=reproduces_training(ctx, trace))
    assert not out.baseline_from_trace
    assert first_steps(trace, [Lane.of([i])], ctx.dataset.n_train)[0] == 0
    assert torch.equal(out.baseline, replay_state(ctx, trace).flat())
    assert torch.equal(out.values[0], replay_state(ctx, trace, [i]).flat())
    assert not torch.equal(out.baseline, torch.from_numpy(np.array(trace.final_state)))
